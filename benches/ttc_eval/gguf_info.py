"""What the report says about a model file, read from the file itself: sha256, size, the
GGUF metadata `general.name` / `general.architecture`, the embedded chat template and the
parameter count (the sum of the element counts of every tensor in the file).

A minimal GGUF (v2/v3) header reader, written from the format's description:

    magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count x  (string key, u32 value_type, value)
    tensor_count x (string name, u32 n_dims, n_dims x u64 dim, u32 ggml_type, u64 offset)

strings are a u64 byte length + UTF-8 bytes; arrays are (u32 item_type, u64 count, items).
Only the header is read (tensor data is skipped), so a 1 GB file takes about a second.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import BinaryIO

# GGUF metadata value types -> struct format of a scalar (8 = string, 9 = array).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _string(f: BinaryIO) -> str:
    n = _read(f, "<Q")
    return f.read(n).decode("utf-8", errors="replace")


def _value(f: BinaryIO, vtype: int, keep: bool):
    """One metadata value; arrays are skipped (None) unless `keep`."""
    if vtype in _SCALARS:
        return _read(f, _SCALARS[vtype])
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        itype, count = _read(f, "<I"), _read(f, "<Q")
        if itype in _SCALARS and not keep:
            f.seek(struct.calcsize(_SCALARS[itype]) * count, 1)
            return None
        items = [_value(f, itype, keep) for _ in range(count)]
        return items if keep else None
    raise ValueError(f"unknown GGUF value type {vtype}")


def read_header(path: str | Path) -> dict:
    """{"version", "metadata" (scalars and strings; arrays omitted), "tensors"
    ([(name, dims)])}."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        version = _read(f, "<I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_kv = _read(f, "<Q"), _read(f, "<Q")
        metadata = {}
        for _ in range(n_kv):
            key = _string(f)
            value = _value(f, _read(f, "<I"), keep=False)
            if value is not None:
                metadata[key] = value
        tensors = []
        for _ in range(n_tensors):
            name = _string(f)
            dims = [_read(f, "<Q") for _ in range(_read(f, "<I"))]
            _read(f, "<I")  # ggml type
            _read(f, "<Q")  # data offset
            tensors.append((name, dims))
    return {"version": version, "metadata": metadata, "tensors": tensors}


def parameter_count(tensors: list[tuple[str, list[int]]]) -> int:
    """Elements over every tensor (tied embeddings are stored once, so counted once)."""
    total = 0
    for _, dims in tensors:
        n = 1
        for d in dims:
            n *= d
        total += n
    return total


def tied_parameter_count(tensors: list[tuple[str, list[int]]]) -> int:
    """As `parameter_count`, but an `output.weight` with the shape of `token_embd.weight`
    is not counted: a checkpoint with tied embeddings (Qwen2.5 0.5B / 1.5B) that a converter
    stored twice. This is the count the model cards give (494M, 1.54B)."""
    shapes = dict(tensors)
    total = parameter_count(tensors)
    out, emb = shapes.get("output.weight"), shapes.get("token_embd.weight")
    if out is not None and out == emb:
        total -= parameter_count([("output.weight", out)])
    return total


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_info(path: str | Path, with_sha: bool = True) -> dict:
    """The report's description of one model file."""
    path = Path(path)
    header = read_header(path)
    md = header["metadata"]
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_of(path) if with_sha else None,
        "name": md.get("general.name"),
        "architecture": md.get("general.architecture"),
        "parameters": parameter_count(header["tensors"]),
        "parameters_tied": tied_parameter_count(header["tensors"]),
        "chat_template": md.get("tokenizer.chat_template"),
    }


if __name__ == "__main__":
    import json
    import sys

    for arg in sys.argv[1:]:
        info = model_info(arg)
        info.pop("chat_template")
        print(json.dumps(info))
