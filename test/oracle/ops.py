"""Oracle for test/ops.oracle.test.ts: forward and backward of functional ops in PyTorch.

Inputs are named "<case>.<arg>"; the metadata entry "cases" is a JSON list of
    {"name": case, "op": op, "params": {...}, "grad": [arg names to differentiate], "outputs": n}
For each case the script computes the op's output(s) "<case>.y" (or "<case>.y0", "<case>.y1", ...),
backpropagates the upstream gradients "<case>.g" (or "<case>.g0", ...), and writes
"<case>.grad.<arg>" for every differentiated argument plus any extra state (running statistics).
The "vjp" op uses torch.autograd.grad instead and also reports whether .grad was touched.
"""
import json

import torch
import torch.nn.functional as F

from st import run


def pair(v):
    return tuple(v) if isinstance(v, list) else v


def forward(op, a, p):
    if op == "conv2d":
        return F.conv2d(
            a["x"], a["w"], a.get("b"), stride=pair(p.get("stride", 1)), padding=pair(p.get("padding", 0)),
            dilation=pair(p.get("dilation", 1)), groups=p.get("groups", 1),
        )
    if op == "batch_norm":
        return F.batch_norm(
            a["x"], a["running_mean"], a["running_var"], a.get("weight"), a.get("bias"),
            training=p["training"], momentum=p.get("momentum", 0.1), eps=p.get("eps", 1e-5),
        )
    if op == "linear":
        return F.linear(a["x"], a["w"], a.get("b"))
    if op == "max_pool2d":
        return F.max_pool2d(
            a["x"], pair(p["kernel"]), stride=pair(p.get("stride", p["kernel"])), padding=pair(p.get("padding", 0)),
            dilation=pair(p.get("dilation", 1)), ceil_mode=p.get("ceil_mode", False),
        )
    if op == "avg_pool2d":
        return F.avg_pool2d(
            a["x"], pair(p["kernel"]), stride=pair(p.get("stride", p["kernel"])), padding=pair(p.get("padding", 0)),
            ceil_mode=p.get("ceil_mode", False), count_include_pad=p.get("count_include_pad", True),
        )
    if op == "adaptive_avg_pool2d":
        return F.adaptive_avg_pool2d(a["x"], pair(p["size"]))
    if op == "cross_entropy":
        return F.cross_entropy(
            a["x"], a["target"], weight=a.get("weight"), reduction=p.get("reduction", "mean"),
            ignore_index=p.get("ignore_index", -100), label_smoothing=p.get("label_smoothing", 0.0),
        )
    if op == "logsumexp":
        return torch.logsumexp(a["x"], dim=p["dim"], keepdim=p.get("keepdim", False))
    if op == "log_softmax":
        return F.log_softmax(a["x"], dim=p["dim"])
    if op == "normalize":
        return F.normalize(a["x"], p=p.get("p", 2.0), dim=p.get("dim", 1), eps=p.get("eps", 1e-12))
    if op == "grid_sample":
        return F.grid_sample(
            a["x"], a["grid"], mode=p["mode"], padding_mode=p["padding_mode"], align_corners=p["align_corners"],
        )
    if op == "amax":
        return torch.amax(a["x"], dim=p["dim"], keepdim=p["keepdim"])
    if op == "amin":
        return torch.amin(a["x"], dim=p["dim"], keepdim=p["keepdim"])
    if op == "fmod":
        return torch.fmod(a["x"], a["y"] if "y" in a else p["other"])
    if op == "scatter_add":
        return a["x"].scatter_add(p["dim"], a["index"], a["src"])
    if op == "index_copy":
        return a["x"].index_copy(p["dim"], a["index"], a["src"])
    if op == "vjp":
        y0 = torch.tanh(a["x"] @ a["w"])
        y1 = (a["x"] * a["x"]).sum(1)
        return [y0, y1]
    raise ValueError("unknown op " + op)


def compute(inputs, metadata, args):
    out = {}
    for case in json.loads(metadata["cases"]):
        name, op, params = case["name"], case["op"], case.get("params", {})
        prefix = name + "."
        a = {k[len(prefix):]: v.clone() for k, v in inputs.items() if k.startswith(prefix)}
        diff = case["grad"]
        for k in diff:
            a[k].requires_grad_(True)
        y = forward(op, a, params)
        ys = y if isinstance(y, list) else [y]
        gs = [a["g"]] if len(ys) == 1 else [a["g%d" % i] for i in range(len(ys))]
        if len(ys) == 1:
            out[prefix + "y"] = y
        else:
            for i, yi in enumerate(ys):
                out[prefix + "y%d" % i] = yi
        if op == "vjp":
            grads = torch.autograd.grad(ys, [a[k] for k in diff], gs)
            for k, g in zip(diff, grads):
                out[prefix + "grad." + k] = g
            out[prefix + "grad_untouched"] = torch.tensor(all(a[k].grad is None for k in diff))
            continue
        torch.autograd.backward(ys, gs)
        for k in diff:
            out[prefix + "grad." + k] = a[k].grad
        for k in ("running_mean", "running_var"):
            if k in a:
                out[prefix + k] = a[k]
    return out


if __name__ == "__main__":
    run(compute)
