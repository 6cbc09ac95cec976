"""Oracle for test/batchnorm-relu.oracle.test.ts: relu(batch_norm(x) + residual) in PyTorch.

The separate operators, as torchvision's blocks run them: F.batch_norm (training mode: batch
statistics, running statistics updated in place), the residual added, F.relu; then backward with
the upstream gradient g.

Inputs are named "<case>.<arg>": x, g, optional r (residual), w, b (affine), rm, rv (running
statistics). The metadata entry "cases" is a JSON list of {"name", "layout": "contiguous" |
"channels_last", "training", "momentum", "eps"}. Outputs: "<case>.y", "<case>.grad.x",
"<case>.grad.r", "<case>.grad.w", "<case>.grad.b" (for the inputs given) and "<case>.rm",
"<case>.rv" (the running statistics after the step).
"""
import json

import torch
import torch.nn.functional as F

from st import run


def compute(inputs, metadata, _args):
    out = {}
    for case in json.loads(metadata["cases"]):
        name = case["name"]
        a = {k[len(name) + 1 :]: v for k, v in inputs.items() if k.startswith(name + ".")}
        fmt = torch.channels_last if case["layout"] == "channels_last" else torch.contiguous_format
        leaves = {}
        for k in ("x", "r", "w", "b"):
            if k in a:
                t = a[k].contiguous(memory_format=fmt) if a[k].dim() == 4 else a[k].clone()
                leaves[k] = t.clone(memory_format=torch.preserve_format).requires_grad_(True)
        rm = a["rm"].clone() if "rm" in a else None
        rv = a["rv"].clone() if "rv" in a else None
        z = F.batch_norm(
            leaves["x"], rm, rv, leaves.get("w"), leaves.get("b"), case["training"], case["momentum"], case["eps"]
        )
        if "r" in leaves:
            z = z + leaves["r"]
        y = F.relu(z)
        y.backward(a["g"].contiguous(memory_format=fmt) if y.dim() == 4 else a["g"])
        out[name + ".y"] = y.detach().contiguous()
        for k, t in leaves.items():
            out[f"{name}.grad.{k}"] = t.grad.contiguous()
        if rm is not None:
            out[name + ".rm"] = rm
            out[name + ".rv"] = rv
    return out


run(compute)
