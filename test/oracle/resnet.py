"""Oracle for test/resnet.oracle.test.ts: torchvision's ResNet, forward and backward in train mode.

argv: ARCH (resnet18 | resnet50). Inputs: "x" (images) and "g" (upstream gradient of the logits).
Builds the model with random init (seed 0), and writes its initial state dict as "init.<key>", the
logits "y", every parameter gradient as "grad.<name>", the BN running statistics after the step as
"after.<key>", and the eval-mode logits of the same images after the step as "y_eval"; then the
same step of the same model in float64 (the reference for float32's own rounding error): "y64" and
"grad64.<name>".
"""
import torch
import torchvision

from st import run


def compute(inputs, metadata, args):
    arch = args[0]
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)()
    out = {f"init.{k}": v.clone() for k, v in model.state_dict().items()}
    model.train()
    y = model(inputs["x"])
    y.backward(inputs["g"])
    out["y"] = y
    for name, p in model.named_parameters():
        out[f"grad.{name}"] = p.grad
    for k, v in model.state_dict().items():
        if "running" in k or "num_batches" in k:
            out[f"after.{k}"] = v
    model.eval()
    with torch.no_grad():
        out["y_eval"] = model(inputs["x"])
    exact = getattr(torchvision.models, arch)().double()
    exact.load_state_dict({k[len("init.") :]: v for k, v in out.items() if k.startswith("init.")})
    exact.train()
    y64 = exact(inputs["x"].double())
    y64.backward(inputs["g"].double())
    out["y64"] = y64
    for name, p in exact.named_parameters():
        out[f"grad64.{name}"] = p.grad
    return out


run(compute)
