"""Oracle for test/feedback.oracle.test.ts: feedback alignment (Lillicrap et al. 2016) in PyTorch.

A torch.autograd.Function of the same definition, written independently of loco's: the forward
pass is the plain F.conv2d / F.linear; the backward pass computes the input gradient with the
fixed feedback tensor B in the weight's place (torch.nn.grad.conv2d_input, i.e. a transposed
convolution, or grad_output @ B), and the exact weight and bias gradients.

Inputs are named "<case>.<arg>" (x, w, optional b, B, g = upstream gradient); the metadata entry
"cases" is a JSON list of {"name", "op": "conv2d" | "linear", "params": {stride, padding,
dilation, groups}}. Outputs: "<case>.y", "<case>.grad.x", "<case>.grad.w", "<case>.grad.b".
"""
import json

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from st import run


class FeedbackConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, feedback, stride, padding, dilation, groups):
        ctx.save_for_backward(x, feedback)
        ctx.conf = (w.shape, b is not None, stride, padding, dilation, groups)
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, g):
        x, feedback = ctx.saved_tensors
        w_shape, has_bias, stride, padding, dilation, groups = ctx.conf
        gx = conv2d_input(x.shape, feedback, g, stride, padding, dilation, groups)
        gw = conv2d_weight(x, w_shape, g, stride, padding, dilation, groups)
        gb = g.sum((0, 2, 3)) if has_bias else None
        return gx, gw, gb, None, None, None, None, None


class FeedbackLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, feedback):
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = b is not None
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, g):
        x, feedback = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        gx = g @ feedback
        gw = g2.t() @ x.reshape(-1, x.shape[-1])
        gb = g2.sum(0) if ctx.has_bias else None
        return gx, gw, gb, None


def pair(v):
    return tuple(v) if isinstance(v, list) else (v, v)


def compute(inputs, metadata, _args):
    out = {}
    for case in json.loads(metadata["cases"]):
        name, p = case["name"], case["params"]
        a = {k[len(name) + 1 :]: v for k, v in inputs.items() if k.startswith(name + ".")}
        x = a["x"].clone().requires_grad_(True)
        w = a["w"].clone().requires_grad_(True)
        b = a["b"].clone().requires_grad_(True) if "b" in a else None
        if case["op"] == "conv2d":
            y = FeedbackConv2d.apply(
                x, w, b, a["B"], pair(p.get("stride", 1)), pair(p.get("padding", 0)),
                pair(p.get("dilation", 1)), p.get("groups", 1),
            )
        else:
            y = FeedbackLinear.apply(x, w, b, a["B"])
        y.backward(a["g"])
        out[name + ".y"] = y
        out[name + ".grad.x"] = x.grad
        out[name + ".grad.w"] = w.grad
        if b is not None:
            out[name + ".grad.b"] = b.grad
    return out


run(compute)
