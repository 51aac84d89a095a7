#!/usr/bin/env python3
"""Chat prompts equal what the models' own Jinja templates render (jinja2 from PyPI is the
oracle): SmolLM2's ChatML template from the default model, with and without a system message
(its default system message included), and the Hugging Face Llama-2 chat template on a
fixture vocabulary, and the public Qwen2.5 (ChatML with a default system message in an else
branch), Llama-3, Mistral, Mixtral, Gemma, Gemma 3, Phi-3 and Phi-3.5
templates (tests/oracle/data/chat_templates.json, copied from the models' tokenizer_config.json)
on fixture vocabularies holding their special tokens: each detected as its kind, and rendered
with and without a system message (or refused where the template raises). `longseq tokenize --chat` ids must equal the ids of the rendered text,
and detokenizing them must give the rendered text back. On a model without a chat template,
each command's message names an option that command has: --chat-template for generate and
tokenize, --chat-template and --task generate for summarize.
"""
import json
import os
from pathlib import Path

import gguf
import jinja2

from fixtures import tiny_vocab, write_tiny_llama, write_tokenizer_gguf
from lsoracle import MODEL, check, done, need_file, run, tmpdir

LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")


# ChatML as SmolLM2's template writes it, without its default system message
CHATML_PLAIN = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def render(template, messages, **kw):
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders chat templates
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(RuntimeError(m))
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, **kw)


def ours(model, text_file, *flags):
    ids = run(["tokenize", "--model", str(model), "--chat", *flags, str(text_file)]).stdout
    return ids.split(), run(["detokenize", "--model", str(model), "--special"], input=ids).stdout.decode()


def expect_ids(model, text):
    f = tmpdir() / "rendered.txt"
    f.write_text(text)
    return run(["tokenize", "--model", str(model), "--raw", "--parse-special", str(f)]).stdout.split()


def main():
    model = need_file(MODEL, "the default model")
    template = gguf.GGUFReader(str(model)).fields["tokenizer.chat_template"].contents()
    work = tmpdir()
    question = work / "q.txt"
    question.write_text("What is the capital of France? Answer in one word.")
    for system in (None, "You are terse."):
        msgs = ([{"role": "system", "content": system}] if system else []) + \
               [{"role": "user", "content": question.read_text()}]
        want = render(template, msgs)
        ids, text = ours(model, question, *(["--system", system] if system else []))
        check(text == want, f"ChatML (system={system!r}):\n{text!r}\nvs jinja2\n{want!r}")
        check(ids == expect_ids(model, want), f"ChatML ids (system={system!r})")
    check("named SmolLM, trained by Hugging Face" in render(template, [{"role": "user", "content": "x"}]),
          "the template inserts its default system message")

    tokens, types, merges = tiny_vocab()
    tokens = tokens + ["<s>", "</s>"]
    types = types + [3, 3]
    fixture = work / "llama2.gguf"
    write_tokenizer_gguf(str(fixture), tokens, types, pre="smollm", merges=merges,
                         bos=len(tokens) - 2, eos=len(tokens) - 1, add_bos=False,
                         chat_template=LLAMA2_TEMPLATE)
    for system in (None, "Answer briefly.\n"):
        msgs = ([{"role": "system", "content": system}] if system else []) + \
               [{"role": "user", "content": "  Tell me a story.  "}]
        want = render(LLAMA2_TEMPLATE, msgs, bos_token="<s>", eos_token="</s>")
        q = work / "story.txt"
        q.write_text("  Tell me a story.  ")
        ids, text = ours(fixture, q, *(["--system", system] if system else []))
        check(text == want, f"Llama-2 (system={system!r}):\n{text!r}\nvs jinja2\n{want!r}")
    public_templates(work)
    no_template(work)
    done("test_chat")


# The special tokens each kind's template writes (added to the fixture vocabulary as control tokens).
SPECIALS = {"chatml": [], "llama3": ["<|start_header_id|>", "<|end_header_id|>"], "mistral": [],
            "gemma": ["<start_of_turn>", "<end_of_turn>"],
            "phi3": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]}


def public_templates(work):
    data = json.loads((Path(__file__).parent / "data" / "chat_templates.json").read_text())
    question = work / "pub.txt"
    question.write_text("  Summarize the text above.\n")
    for t in data["templates"]:
        tokens, types, merges = tiny_vocab()
        extra = [x for x in [t["bos_token"], t["eos_token"], *SPECIALS[t["kind"]]] if x not in tokens]
        tokens, types = tokens + extra, types + [3] * len(extra)
        model = work / (t["name"] + ".gguf")
        write_tokenizer_gguf(str(model), tokens, types, pre="smollm", merges=merges,
                             bos=tokens.index(t["bos_token"]), eos=tokens.index(t["eos_token"]), add_bos=False,
                             chat_template=t["chat_template"])
        info = json.loads(run(["inspect", "--json", str(model)]).stdout)
        check(info["chat_template"] == t["kind"], f"{t['name']}: detected as {info['chat_template']}, not {t['kind']}")
        for system in (None, "You are terse.", ""):
            msgs = ([{"role": "system", "content": system}] if system is not None else []) + \
                   [{"role": "user", "content": question.read_text()}]
            flags = ["--system", system] if system is not None else []
            try:
                want = render(t["chat_template"], msgs, bos_token=t["bos_token"], eos_token=t["eos_token"])
            except (RuntimeError, jinja2.TemplateError) as e:
                p = run(["tokenize", "--model", str(model), "--chat", *flags, str(question)], check=False)
                check(p.returncode == 1 and "system message" in p.stderr.decode(),
                      f"{t['name']} refuses a system message as its template does ({e}): {p.stderr.decode()!r}")
                continue
            ids, text = ours(model, question, *flags)
            check(text == want, f"{t['name']} (system={system!r}):\n{text!r}\nvs jinja2\n{want!r}")
            check(ids == expect_ids(model, want), f"{t['name']} ids (system={system!r})")
        print(f"  {t['name']}: {t['kind']}, as jinja2 renders it")
    # by name, on a model whose own template is another kind
    model = work / "Meta-Llama-3-8B-Instruct.gguf"
    gem = next(t for t in data["templates"] if t["name"] == "gemma-3-270m-it")
    want = render(gem["chat_template"], [{"role": "user", "content": question.read_text()}], bos_token="<|begin_of_text|>",
                  eos_token="<|eot_id|>")
    _, text = ours(model, question, "--chat-template", "gemma")
    check(text == want, f"--chat-template gemma on a Llama-3 model: {text!r} vs {want!r}")


def no_template(work):
    model = work / "no-template.gguf"
    write_tiny_llama(str(model))
    doc = work / "doc.txt"
    doc.write_text("the quick brown fox")
    for cmd in (["generate", "--chat", "--prompt", "hi", "-n", "1"], ["tokenize", "--chat", str(doc)]):
        p = run([cmd[0], "--model", str(model), *cmd[1:]], check=False)
        err = p.stderr.decode()
        check(p.returncode == 1 and "has no tokenizer.chat_template; choose one with --chat-template "
              "chatml|llama2|llama3|mistral|gemma|phi3" in err,
              f"{cmd[0]} --chat without a template: {err!r}")
    p = run(["summarize", "--model", str(model), "--launcher", "/nonexistent/mpirun", str(doc)], check=False)
    err = p.stderr.decode()
    print(f"  summarize without a chat template: {err.strip()!r}")
    check(p.returncode == 1 and "--task generate" in err and "--chat-template chatml|" in err,
          f"summarize without a template names --chat-template and --task generate: {err!r}")
    check("settings" not in err, f"summarize names its options, not protocol fields: {err!r}")
    p = run(["summarize", "--model", str(model), "--chat-template", "vicuna", "--launcher", "/nonexistent/mpirun",
             str(doc)], check=False)
    check(p.returncode == 1 and 'unknown chat template "vicuna"' in p.stderr.decode(),
          f"summarize --chat-template vicuna: {p.stderr.decode()!r}")
    # with a template named, the same model summarizes: its prompt is the ChatML rendering
    out = work / "summary.jsonl"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    run(["summarize", "--model", str(model), "--chat-template", "chatml", "--max-tokens", "2", "--out", str(out),
         str(doc)], env=env)
    rec = json.loads(out.read_text().splitlines()[0])
    want = render(CHATML_PLAIN, [{"role": "user", "content": doc.read_text() +
                                  "\n\nSummarize the text above in a few sentences."}])
    n = len(expect_ids(model, want))
    check(rec["status"] == "done" and rec["tokens"] == n and rec["generated"] == 2,
          f"summarize --chat-template chatml: {rec} (the ChatML prompt has {n} tokens)")
    print(f"  summarize --chat-template chatml on a model without a template: {n} prompt tokens, as jinja2 renders it")


if __name__ == "__main__":
    main()
