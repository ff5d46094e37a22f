"""The head of a .gguf file, parsed: metadata, array lengths and the tensor table, no weights read.

Parsed here because the `gguf` package's GGUFReader builds a numpy view per vocabulary string
(~5 s for SmolLM2). Torch-free; used by modelfiles.describe_model and plan.py.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from .errors import ModelError
from .safeload import check_weight_file

# general.file_type -> its name (llama.cpp's LLAMA_FTYPE)
GGUF_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
                   11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
                   17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
                   23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
                   29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0"}

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_header(path: str | Path) -> tuple[dict, dict, list[tuple[str, tuple[int, ...], int]]]:
    """(metadata, array lengths, tensors) from a .gguf file's head, without reading the weights.

    metadata: key -> value (long arrays, such as the vocabulary, are left out: see array lengths);
    tensors: (name, shape, ggml type). Raises ModelError if the file is not a readable GGUF.
    """
    path = Path(path)
    bad = f"model.source: {path}: not a valid GGUF file"
    check_weight_file(path, ModelError, "model.source", min_size=0)   # the GGUF checks below say "too short"
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < 24:
                raise ModelError(f"{bad} (only {os.fstat(f.fileno()).st_size} bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse_gguf(buf, bad)
    except OSError as e:
        raise ModelError(f"model.source: {path}: cannot read ({e.strerror})") from None


def _parse_gguf(buf, bad: str):
    if buf[:4] != b"GGUF":
        raise ModelError(f"{bad} (it does not start with the GGUF marker)")
    order = "<"
    version = struct.unpack_from("<I", buf, 4)[0]
    if version > 0xFFFF:  # a big-endian file
        order, version = ">", struct.unpack_from(">I", buf, 4)[0]
    if version not in (2, 3):
        raise ModelError(f"{bad} (GGUF version {version}; expected 2 or 3)")
    u32, u64 = struct.Struct(order + "I").unpack_from, struct.Struct(order + "Q").unpack_from
    size = len(buf)

    def string(off):
        n = u64(buf, off)[0]
        if off + 8 + n > size:
            raise ModelError(f"{bad} (truncated: a string runs past the end of the file)")
        return bytes(buf[off + 8: off + 8 + n]).decode("utf-8", "replace"), off + 8 + n

    def value(kind, off, key):
        if kind in _GGUF_SCALARS:
            fmt = struct.Struct(order + _GGUF_SCALARS[kind])
            return fmt.unpack_from(buf, off)[0], off + fmt.size
        if kind == _GGUF_STRING:
            return string(off)
        if kind != _GGUF_ARRAY:
            raise ModelError(f"{bad} (unknown value type {kind} for key '{key}')")
        item, count = u32(buf, off)[0], u64(buf, off + 4)[0]
        off += 12
        if count <= 64:
            items = []
            for _ in range(count):
                v, off = value(item, off, key)
                items.append(v)
            lengths[key] = count  # after any inner arrays: the outer length wins
            return items, off
        lengths[key] = count
        if item in _GGUF_SCALARS:  # long numeric arrays (token types, scores): skip them
            off += count * struct.calcsize(_GGUF_SCALARS[item])
        elif item == _GGUF_STRING:  # the vocabulary and merges: walk the lengths only
            for _ in range(count):
                off += 8 + u64(buf, off)[0]
        else:
            for _ in range(count):
                _, off = value(item, off, key)
        if off > size:
            raise ModelError(f"{bad} (truncated inside '{key}')")
        return None, off

    lengths: dict[str, int] = {}
    try:
        n_tensors, n_kv = u64(buf, 8)[0], u64(buf, 16)[0]
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise ModelError(f"{bad} (implausible header: {n_tensors} tensors, {n_kv} keys)")
        off, meta = 24, {}
        for _ in range(n_kv):
            key, off = string(off)
            kind = u32(buf, off)[0]
            v, off = value(kind, off + 4, key)
            if v is not None:
                meta[key] = v
        tensors = []
        for _ in range(n_tensors):
            name, off = string(off)
            dims = u32(buf, off)[0]
            if dims > 8:
                raise ModelError(f"{bad} (tensor '{name}' has {dims} dimensions)")
            shape = struct.unpack_from(order + "Q" * dims, buf, off + 4)
            kind = u32(buf, off + 4 + 8 * dims)[0]
            off += 4 + 8 * dims + 4 + 8
            tensors.append((name, tuple(int(d) for d in shape), int(kind)))
    except struct.error:
        raise ModelError(f"{bad} (truncated header)") from None
    return meta, lengths, tensors
