#!/usr/bin/env python3
"""`longseq inspect --json` agrees with gguf-py's reader (the oracle) on the default model and
on tiny fixtures of every quantization type: every tensor with its name, type, shape, bytes and
offset; every metadata key with its value (arrays: type, count, and values when short); the
hyperparameters and RoPE settings. The human-readable form lists every tensor too.
"""
import json

import gguf
import numpy as np

from fixtures import write_tiny_llama
from lsoracle import MODEL, check, done, need_file, run, tmpdir

VTYPE = {gguf.GGUFValueType.UINT8: "u8", gguf.GGUFValueType.INT8: "i8", gguf.GGUFValueType.UINT16: "u16",
         gguf.GGUFValueType.INT16: "i16", gguf.GGUFValueType.UINT32: "u32", gguf.GGUFValueType.INT32: "i32",
         gguf.GGUFValueType.FLOAT32: "f32", gguf.GGUFValueType.BOOL: "bool", gguf.GGUFValueType.STRING: "string",
         gguf.GGUFValueType.UINT64: "u64", gguf.GGUFValueType.INT64: "i64", gguf.GGUFValueType.FLOAT64: "f64"}


def same_value(ours, ref):
    if isinstance(ref, float):
        return abs(ours - ref) <= 1e-6 * max(1.0, abs(ref))
    if isinstance(ref, list):
        return len(ours) == len(ref) and all(same_value(a, b) for a, b in zip(ours, ref))
    return ours == ref


def compare(path, expect_types=None):
    j = json.loads(run(["inspect", "--json", str(path)]).stdout)
    r = gguf.GGUFReader(str(path))
    check(j["n_tensors"] == len(r.tensors) == len(j["tensors"]), f"{path.name}: tensor count")
    for ours, ref in zip(j["tensors"], r.tensors):
        check(ours["name"] == ref.name, f"{path.name}: tensor order {ours['name']} vs {ref.name}")
        check(ours["type"] == ref.tensor_type.name, f"{ref.name}: type {ours['type']} vs {ref.tensor_type.name}")
        check(ours["shape"] == [int(x) for x in ref.shape], f"{ref.name}: shape {ours['shape']} vs {list(ref.shape)}")
        check(ours["bytes"] == int(ref.n_bytes), f"{ref.name}: bytes")
        check(ours["offset"] + r.data_offset == int(ref.data_offset), f"{ref.name}: offset")
    check(j["total_bytes"] == sum(int(t.n_bytes) for t in r.tensors), "total bytes")
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        ours = j["metadata"].get(key)
        check(ours is not None, f"{path.name}: key {key} missing from inspect --json")
        val = field.contents()
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            check(ours["type"] == VTYPE[field.types[-1]] and ours["count"] == len(val), f"{key}: array header")
            if len(val) <= 64:
                check(same_value(ours["values"], val), f"{key}: array values")
        else:
            check(same_value(ours, val), f"{key}: {ours!r} vs {val!r}")
    if expect_types:
        got = {t["type"] for t in j["tensors"]}
        check(expect_types <= got, f"{path.name}: types {got} lack {expect_types}")
    return j


def main():
    model = need_file(MODEL, "the default model")
    j = compare(model)
    types = {}
    for t in j["tensors"]:
        types[t["type"]] = types.get(t["type"], 0) + 1
    check(types == {"Q4_1": 210, "F32": 61, "Q8_0": 1}, f"default model types {types}")
    check(j["architecture"] == "llama" and j["context_length"] == 8192, "architecture, context")
    h = j["hparams"]
    check((h["n_embd"], h["n_layer"], h["n_head"], h["n_head_kv"], h["head_dim"], h["n_ff"], h["n_vocab"]) ==
          (576, 30, 9, 3, 64, 1536, 49152) and h["tied_output"], f"hparams {h}")
    check(j["rope"]["scaling"] == "none" and j["rope"]["freq_base"] == 100000.0, f"rope {j['rope']}")
    check(j["tokenizer"]["pre"] == "smollm" and j["chat_template"] == "chatml", "tokenizer, template")
    human = run(["inspect", str(model)]).stdout.decode()
    check(all(f"  {t['name']} " in human for t in j["tensors"]), "human output lists every tensor")
    work = tmpdir()
    for q in ("F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"):
        p = work / f"tiny-{q}.gguf"
        write_tiny_llama(str(p), embd=256, heads=4, kv_heads=2, ff=512, qtype=q, tied=False)
        compare(p, {q})
    p = work / "yarn.gguf"
    write_tiny_llama(str(p), rope_scaling="yarn", rope_factor=4.0, rope_orig_ctx=64)
    r = compare(p)["rope"]
    check(r["scaling"] == "yarn" and r["factor"] == 4.0 and r["original_context"] == 64, f"yarn {r}")
    done("test_inspect")


if __name__ == "__main__":
    main()
