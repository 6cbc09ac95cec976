"""Reads a loco-written safetensors file with st.py (an independent reader), checks its byte layout
and echoes the tensors back, plus "__layout__": the JSON layout report as a uint8 tensor."""
import json
import struct
import sys

import torch

from st import run


def compute(inputs, metadata, args):
    raw = open(sys.argv[1], "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    text = raw[8 : 8 + n].decode("utf-8")
    header = json.loads(text)
    report = {
        "file_len": len(raw),
        "header_len": n,
        "data_start_aligned": (8 + n) % 8 == 0,
        "padding": text[len(text.rstrip(" ")) :].count(" "),
        "json_len": len(text.rstrip(" ").encode("utf-8")),
        "keys": list(header.keys()),
        "entries": {k: v for k, v in header.items() if k != "__metadata__"},
        "metadata": metadata,
    }
    out = dict(inputs)
    out["__layout__"] = torch.frombuffer(bytearray(json.dumps(report).encode("utf-8")), dtype=torch.uint8)
    return out


if __name__ == "__main__":
    run(compute)
