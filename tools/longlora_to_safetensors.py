#!/usr/bin/env python3
"""Converts LongLoRA's PyTorch artifacts to the safetensors files longseq loads.

LongLoRA's LoRA+ releases (docs/howto-longlora.md) ship an adapter directory with
adapter_model.bin (the PEFT LoRA factors) and trainable_params.bin (the embedding and norms
trained alongside them, keys without the "base_model.model." prefix); its fully fine-tuned
models (e.g. Llama-2-7b-longlora-100k-ft) ship one fp32 pytorch_model.bin. All are PyTorch
zip pickles. This script reads them without PyTorch -- only the tensor records a state dict
holds are accepted, anything else in the pickle is refused -- memory-mapping the tensor data,
and writes next to each file:

    adapter_model.bin     -> adapter_model.safetensors
    trainable_params.bin  -> trainable_params.safetensors
    pytorch_model.bin     -> model.safetensors   (--dtype bf16 halves a 27 GB fp32 model)

Then:   longseq generate --model Llama-2-7b-hf --lora LongAlpaca-7B-LoRA ...
        longseq generate --model Llama-2-7b-longlora-100k-ft ...

usage:  tools/longlora_to_safetensors.py [--dtype keep|f16|bf16] DIR [FILE.bin ...]
Needs numpy (pip install numpy). Tested by tests/oracle/test_hf.py. Guide: docs/howto-longlora.md.
"""
from __future__ import annotations

import json
import pickle
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

# PyTorch storage classes -> (numpy dtype of the raw elements, safetensors dtype)
STORAGES = {"FloatStorage": (np.float32, "F32"), "HalfStorage": (np.float16, "F16"),
            "BFloat16Storage": (np.uint16, "BF16"), "DoubleStorage": (np.float64, "F64")}


class Tensor:
    def __init__(self, array, dtype):
        self.array, self.dtype = array, dtype


def rebuild_tensor(storage, offset, size, stride, *_):
    data, dtype = storage  # the array stays a lazy view of the memory-mapped storage
    size, stride = tuple(int(x) for x in size), tuple(int(x) for x in stride)
    if len(size) != len(stride) or any(x < 0 for x in size + stride) or offset < 0:
        raise ValueError(f"bad tensor record: size {size}, stride {stride}, offset {offset}")
    extent = 1 + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else 0
    if offset + extent > data.size:
        raise ValueError(f"a tensor of size {size} at offset {offset} extends past its storage of {data.size}")
    view = np.lib.stride_tricks.as_strided(data[offset:], shape=size,
                                           strides=tuple(s * data.itemsize for s in stride), writeable=False)
    return Tensor(view, dtype)


class Unpickler(pickle.Unpickler):
    def __init__(self, f, archive, prefix):
        super().__init__(f)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return rebuild_tensor
        if module == "torch" and name in STORAGES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a tensor state dict")

    def persistent_load(self, pid):
        kind, storage, key, _location, numel = pid
        if kind != "storage" or storage not in STORAGES:
            raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
        dtype, st = STORAGES[storage]
        data = member_array(self.archive, f"{self.prefix}/data/{key}", dtype)
        if data.size < numel:
            raise ValueError(f"storage {key} holds {data.size} elements, {numel} expected")
        return data, st


def member_array(z: zipfile.ZipFile, name: str, dtype) -> np.ndarray:
    """A stored (uncompressed) zip member as a read-only memory map; compressed ones are read."""
    info = z.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        return np.frombuffer(z.read(name), dtype=dtype)
    with open(z.filename, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if local[:4] != b"PK\x03\x04":
        raise ValueError(f"{name}: bad local header")
    start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
    n = info.file_size // np.dtype(dtype).itemsize
    return np.memmap(z.filename, dtype=dtype, mode="r", offset=start, shape=(n,)) if n else np.zeros(0, dtype)


def load(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError(f"{path} is not a PyTorch zip checkpoint (no single data.pkl)")
        prefix = pkl[0][: -len("/data.pkl")]
        with z.open(pkl[0]) as f:
            state = Unpickler(f, z, prefix).load()
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def cast(t: Tensor, to: str) -> Tensor:
    """F32 -> F16 or BF16 (round to nearest even), other types as they are."""
    if to == "keep" or t.dtype != "F32":
        return t
    if to == "f16":
        return Tensor(t.array.astype(np.float16), "F16")
    u = t.array.astype(np.float32).view(np.uint32).astype(np.uint64)
    return Tensor((((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF).astype(np.uint16), "BF16")


def save(path: Path, state: dict, to: str = "keep") -> None:
    """Writes tensor by tensor, so only one tensor is in memory at a time."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, t in state.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} is not a tensor")
        dt = t.dtype if to == "keep" or t.dtype != "F32" else {"f16": "F16", "bf16": "BF16"}[to]
        n = int(np.prod(t.array.shape)) * sizes[dt]
        header[name] = {"dtype": dt, "shape": list(t.array.shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for name, t in state.items():
            f.write(np.ascontiguousarray(cast(t, to).array).tobytes())


def target(src: Path) -> Path:
    return src.with_name("model.safetensors") if src.name == "pytorch_model.bin" else src.with_suffix(".safetensors")


def main(argv: list[str]) -> int:
    args, to = argv[1:], "keep"
    if len(args) >= 2 and args[0] == "--dtype":
        to, args = args[1], args[2:]
    if not args or to not in ("keep", "f16", "bf16"):
        print(__doc__, file=sys.stderr)
        return 2
    d = Path(args[0])
    names = ("adapter_model.bin", "trainable_params.bin", "pytorch_model.bin")
    files = [Path(a) for a in args[1:]] or [d / n for n in names if (d / n).exists()]
    if not files:
        print(f"{d}: none of {', '.join(names)}", file=sys.stderr)
        return 1
    for src in files:
        dst = target(src)
        try:
            state = load(src)
            save(dst, state, to)
        except (ValueError, pickle.UnpicklingError, zipfile.BadZipFile, KeyError) as e:
            print(f"{src}: {e}", file=sys.stderr)
            return 1
        print(f"{src} -> {dst} ({len(state)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
