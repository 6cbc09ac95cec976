"""A small, independent safetensors reader/writer for the oracle tests (stdlib + torch only).

The `safetensors` package is not installed next to the system PyTorch, so this module implements
the format from its specification (https://github.com/huggingface/safetensors#format):

    8 bytes   little-endian u64 N
    N bytes   UTF-8 JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}
              (padded with spaces to a multiple of 8)
    rest      the data, offsets relative to its start

It deliberately does NOT mirror loco's writer: tensors are written in the order given (not sorted
by dtype), `__metadata__` comes last, and JSON is written with Python's separators. The loader must
accept any valid layout, so this checks loco's reader against a second writer.

Also provides `run(compute)`, the entry point of every oracle script:
    python3 script.py INPUT.safetensors OUTPUT.safetensors [args...]
"""
import json
import os
import struct
import sys

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}


def tensor_bytes(t):
    t = t.detach().contiguous().reshape(-1)
    if t.numel() == 0:
        return b""
    return t.numpy().tobytes()


def serialize(tensors, metadata=None):
    """tensors: dict name -> tensor (written in dict order)."""
    header = {}
    chunks = []
    offset = 0
    for name, t in tensors.items():
        data = tensor_bytes(t)
        header[name] = {
            "dtype": NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save(path, tensors, metadata=None):
    with open(path, "wb") as f:
        f.write(serialize(tensors, metadata))


def deserialize(buf):
    if len(buf) < 8:
        raise ValueError("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        raise ValueError("header length %d exceeds file" % n)
    header = json.loads(buf[8 : 8 + n].decode("utf-8"))
    data = memoryview(buf)[8 + n :]
    metadata = header.pop("__metadata__", None) or {}
    out = {}
    spans = []
    for name, info in header.items():
        dtype = DTYPES[info["dtype"]]
        shape = [int(d) for d in info["shape"]]
        begin, end = info["data_offsets"]
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - begin != numel * itemsize or end > len(data):
            raise ValueError("bad data_offsets for %s" % name)
        spans.append((begin, end))
        if numel == 0:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            out[name] = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(shape).clone()
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            raise ValueError("data section has holes or overlaps")
        covered = end
    if covered != len(data):
        raise ValueError("data section not fully covered")
    return out, metadata


def load(path):
    with open(path, "rb") as f:
        return deserialize(f.read())


def run(compute):
    """Reads argv[1], calls compute(inputs, metadata, args) -> dict of tensors, writes argv[2]."""
    threads = int(os.environ.get("LOCO_ORACLE_NUM_THREADS", "1"))
    torch.set_num_threads(max(1, threads))
    inputs, metadata = load(sys.argv[1])
    outputs = compute(inputs, metadata, sys.argv[3:])
    save(sys.argv[2], {k: v.detach() for k, v in outputs.items()})


if __name__ == "__main__":
    # Used by the interchange test: st.py write OUT writes a file with every dtype.
    mode = sys.argv[1]
    if mode == "write":
        g = torch.Generator().manual_seed(0)
        tensors = {
            "z.f32": torch.randn(2, 3, generator=g),
            "a.f64": torch.randn(5, generator=g, dtype=torch.float64),
            "m.f16": torch.randn(3, 1, generator=g).half(),
            "i64": torch.arange(-3, 4, dtype=torch.int64),
            "i32": torch.tensor([[1, -2], [3, 2**31 - 1]], dtype=torch.int32),
            "i16": torch.tensor([-32768, 32767], dtype=torch.int16),
            "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
            "u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
            "bool": torch.tensor([True, False, True]),
            "scalar": torch.tensor(2.5),
            "empty": torch.zeros(0, 4),
        }
        save(sys.argv[2], tensors, {"format": "pt", "written_by": "st.py"})
    else:
        raise SystemExit("usage: st.py write OUT")
