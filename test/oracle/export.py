"""Oracle for test/export.oracle.test.ts: loads `loco export`'s file into torchvision's ResNet.

argv: WEIGHTS ARCH. Input: "x" (normalised images). Builds torchvision.models.ARCH(), loads the
file with load_state_dict(strict=False), fails unless the only missing keys are fc.weight and
fc.bias and nothing is unexpected, replaces fc by Identity, and writes the eval-mode features of
x as "features" and the number of loaded tensors as "loaded".
"""
import sys

import torch
import torchvision

from st import load, run


def compute(inputs, metadata, args):
    weights, arch = args[0], args[1]
    tensors, meta = load(weights)
    model = getattr(torchvision.models, arch)()
    result = model.load_state_dict(tensors, strict=False)
    if sorted(result.missing_keys) != ["fc.bias", "fc.weight"] or result.unexpected_keys:
        sys.exit(f"missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    model.fc = torch.nn.Identity()
    model.eval()
    with torch.no_grad():
        features = model(inputs["x"])
    return {"features": features, "loaded": torch.tensor(len(tensors))}


run(compute)
