#!/usr/bin/env python3
"""Tokenization is exact against independent references, on a corpus of several MB.

References (PyPI, never our code):
- Hugging Face `tokenizers`, set up as each model's original tokenizer from the GGUF's own
  vocabulary and merges: SmolLM2 = Digits(individual) + ByteLevel(regex); gpt-2 = ByteLevel;
  llama-bpe = Split(llama-3 regex) + ByteLevel, BPE with ignore_merges; qwen2 = Split(Qwen2's
  regex: llama-3's with single digits) + ByteLevel.
- `sentencepiece`: a BPE model with byte fallback trained here, turned into a GGUF fixture
  (tokenizer.ggml.model = llama) and compared with SentencePieceProcessor.encode/decode.

Corpus: tests/corpus/*.txt (prose with contractions, Chinese, Japanese, Korean and other
scripts, emoji, symbols, digit runs, whitespace runs, CRLF, source code), a generated
1.2 MB stress text (tests/corpus/gen_stress.py), this repository's own source files, and the
KJV text (4 MB). Also: detokenize(tokenize(x)) == x byte for byte, including invalid UTF-8.
"""
import subprocess
import sys

import gguf
import numpy as np
import sentencepiece as spm
from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

from fixtures import write_tokenizer_gguf
from lsoracle import CORPUS, KJV, MODEL, REPO, check, done, need_file, run, tmpdir

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = LLAMA3_RE.replace(r"\p{N}{1,3}", r"\p{N}")  # Qwen2's tokenizer.json


def corpus_files(work):
    files = sorted(CORPUS.glob("*.txt"))
    stress = work / "stress.txt"
    subprocess.run([sys.executable, str(CORPUS / "gen_stress.py"), str(stress)], check=True)
    files.append(stress)
    src = work / "sources.txt"  # the project's own code: C, Python, shell, CMake, Markdown
    with open(src, "wb") as out:
        for pattern in ("**/*.c", "**/*.h", "**/*.cu", "**/*.py", "**/*.md", "**/CMakeLists.txt", "tests/run"):
            for p in sorted(REPO.glob(pattern)):
                if "build" not in p.parts:
                    out.write(p.read_bytes())
    files.append(src)
    files.append(need_file(KJV, "the KJV text"))
    return files


def vocab_of(path):
    r = gguf.GGUFReader(str(path))
    f = r.fields
    return (f["tokenizer.ggml.tokens"].contents(), f["tokenizer.ggml.token_type"].contents(),
            f["tokenizer.ggml.merges"].contents())


def hf_tokenizer(tokens, types, merges, pre):
    split = [(m[:m.index(" ", 1)], m[m.index(" ", 1) + 1:]) for m in merges]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=split,
                     ignore_merges=(pre == "llama-bpe"))
    tk = Tokenizer(bpe)
    if pre == "smollm":
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    elif pre == "gpt-2":
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_RE if pre == "qwen2" else LLAMA3_RE), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t, ty in zip(tokens, types) if ty == 3])
    return tk


def our_ids(model, path, *flags):
    out = run(["tokenize", "--model", str(model), "--raw", *flags, str(path)]).stdout.split()
    return [int(x) for x in out]


def first_difference(a, b):
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def compare(name, ours, ref, decode):
    if ours == ref:
        return
    k = first_difference(ours, ref)
    ctx = decode(ref[max(0, k - 8):k + 8])
    check(False, f"{name}: {len(ours)} ids vs reference {len(ref)}; first difference at {k}: "
                 f"ours {ours[k:k + 6]} reference {ref[k:k + 6]} near {ctx!r}")


def check_bpe(pre, model_path, tokens, types, merges, files, special_modes):
    tk = hf_tokenizer(tokens, types, merges, pre)
    total = 0
    for path in files:
        text = path.read_bytes().decode("utf-8")
        for parse_special in special_modes:
            tk.encode_special_tokens = not parse_special
            ref = tk.encode(text, add_special_tokens=False).ids
            ours = our_ids(model_path, path, *(["--parse-special"] if parse_special else []))
            compare(f"{pre} {path.name} (parse_special={parse_special})", ours, ref, tk.decode)
            total += len(ref)
    print(f"  {pre}: {len(files)} files, {total} tokens identical to Hugging Face tokenizers")


def missing_bytes(tokens):
    """Bytes whose byte-level character is not in the vocabulary."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        chars[b] = chr(b) if b in keep else chr(0x100 + n)
        n += b not in keep
    vocab = set(tokens)
    return {b for b in range(256) if chars[b] not in vocab}


def check_round_trip(model_path, files, work, tokens):
    missing = missing_bytes(tokens)
    ok_bytes = np.array([b for b in range(256) if b not in missing], dtype=np.uint8)
    blobs = [p.read_bytes() for p in files[:4]]
    rng = np.random.default_rng(5)
    blobs.append(rng.choice(ok_bytes, size=20000).tobytes())  # invalid UTF-8
    blobs.append(b"\xe0\xfe\xc3\x28 \xe2\x82 <|im_end|>\x00\x01 tail\xf0\x9f\x98".replace(
        b"\xfe", b"" if 0xfe in missing else b"\xfe"))
    for i, blob in enumerate(blobs + [p.read_bytes() for p in files[4:]]):
        src = work / f"rt{i}.bin"
        src.write_bytes(blob)
        ids = run(["tokenize", "--model", str(model_path), "--raw", "--parse-special", str(src)]).stdout
        back = run(["detokenize", "--model", str(model_path), "--special"], input=ids).stdout
        check(back == blob, f"round trip {i}: {len(back)} bytes back for {len(blob)}")
    print(f"  round trip: {len(blobs) + len(files) - 4} texts (two of them invalid UTF-8) come back byte for byte")
    if missing:  # bytes the vocabulary cannot represent are dropped, with a warning
        b = min(missing)
        src = work / "missing.bin"
        src.write_bytes(b"a" + bytes([b]) * 3 + b"z")
        p = run(["tokenize", "--model", str(model_path), "--raw", str(src)])
        back = run(["detokenize", "--model", str(model_path)], input=p.stdout).stdout
        check(back == b"az", f"unrepresentable byte 0x{b:02x}: got {back!r}")
        check(b"3 byte(s) have no token" in p.stderr and f"0x{b:02x}".encode() in p.stderr,
              f"no warning for dropped bytes: {p.stderr!r}")


def check_spm(files, work):
    """SentencePiece BPE with byte fallback, trained here, against the sentencepiece library."""
    train = work / "spm_train.txt"
    train.write_bytes(b"".join(p.read_bytes()[:300_000] for p in files))
    prefix = str(work / "spm")
    spm.SentencePieceTrainer.train(input=str(train), model_prefix=prefix, vocab_size=8000,
                                   model_type="bpe", byte_fallback=True, character_coverage=0.995,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   add_dummy_prefix=True, split_digits=True, num_threads=2,
                                   minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    n = sp.get_piece_size()
    tokens = [sp.id_to_piece(i) for i in range(n)]
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
             else 5 if sp.is_unused(i) else 1 for i in range(n)]
    scores = [sp.get_score(i) for i in range(n)]
    path = work / "spm.gguf"
    write_tokenizer_gguf(str(path), tokens, types, model="llama", scores=scores, bos=sp.bos_id(),
                         eos=sp.eos_id(), unk=sp.unk_id(), add_bos=True, add_space_prefix=True)
    total = 0
    for p in files:
        text = p.read_bytes().decode("utf-8")
        if "\u2581" in text:
            continue  # SentencePiece cannot tell a literal U+2581 from an escaped space
        ref = sp.encode(text)
        ours = our_ids(path, p)
        compare(f"spm {p.name}", ours, ref, lambda ids: sp.decode(ids))
        back = run(["detokenize", "--model", str(path)], input=" ".join(map(str, ours)).encode()).stdout
        check(back.decode("utf-8") == sp.decode(ref), f"spm {p.name}: detokenize differs from sentencepiece's decode")
        total += len(ref)
    with_bos = our_ids(path, files[0])  # --raw above; the model's add_bos applies without it
    default = [int(x) for x in run(["tokenize", "--model", str(path), str(files[0])]).stdout.split()]
    check(default == [sp.bos_id()] + with_bos, "SentencePiece model adds BOS by default")
    print(f"  spm: {len(files)} files, {total} tokens identical to sentencepiece (vocabulary {n})")


def main():
    model = need_file(MODEL, "the default model")
    work = tmpdir()
    files = corpus_files(work)
    size = sum(p.stat().st_size for p in files)
    check(size >= 1_000_000, f"corpus is only {size} bytes")
    print(f"corpus: {len(files)} files, {size} bytes")
    tokens, types, merges = vocab_of(model)
    check_bpe("smollm", model, tokens, types, merges, files, (True, False))
    for pre in ("gpt-2", "llama-bpe", "qwen2"):
        path = work / f"{pre}.gguf"
        write_tokenizer_gguf(str(path), tokens, types, pre=pre, merges=merges, bos=1, eos=2, unk=0,
                             add_bos=False)
        check_bpe(pre, path, tokens, types, merges, files, (True,))
    check_round_trip(model, files, work, tokens)
    check_spm(files, work)
    done("test_tokenizer")


if __name__ == "__main__":
    main()
