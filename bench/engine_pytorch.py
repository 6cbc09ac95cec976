#!/usr/bin/python3
"""PyTorch side of `npm run bench:engine`: the same two measurements as bench/engine.ts.

Run with Debian's interpreter (/usr/bin/python3, which has python3-torch). Prints one JSON object.

  tiny op   `c = a + b` on two float32 [2, 2] tensors (the previous result is freed by refcount,
            as loco frees it with release()); microseconds per op, best of --repeats loops.
  step      one SimCLR-style training step: CIFAR ResNet-18 (3x3 stride-1 stem, no max-pool,
            width 64, fc removed) + projection head Linear(512,512)-BN1d-ReLU-Linear(512,128),
            NT-Xent (tau 0.5) over the two views of --batch-size 32x32 images (2B rows), backward,
            SGD (momentum 0.9) step. Inputs are random. Each memory format listed in --formats is
            measured (warm-up steps, then the median of --steps timed steps); the caller takes
            the best.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- model: torchvision's BasicBlock ResNet-18, CIFAR stem --------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet18(nn.Module):
    """torchvision.models.resnet18 with conv1 = 3x3 stride 1, maxpool = Identity, fc = Identity."""

    def __init__(self, width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        layers, cin = [], width
        for i, blocks in enumerate([2, 2, 2, 2]):
            cout = width * 2**i
            stage = []
            for j in range(blocks):
                stage.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def nt_xent(z, temperature):
    """The same formulation as src/learning/ntxent.ts."""
    rows = z.shape[0]
    n = rows // 2
    unit = F.normalize(z, dim=1)
    logits = unit @ unit.t() / temperature
    logits = logits.masked_fill(torch.eye(rows, dtype=torch.bool), float("-inf"))
    positives = (torch.arange(rows) + n) % rows
    return F.cross_entropy(logits, positives)


# ---- measurements -------------------------------------------------------------------------------


def tiny_op_us(iters, repeats):
    a = torch.rand(2, 2)
    b = torch.rand(2, 2)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            c = a + b  # noqa: F841 (the previous c is freed here)
        best = min(best, (time.perf_counter() - t0) / iters * 1e6)
    return best


def step_ms(batch, steps, warmup, memory_format, temperature, seed):
    torch.manual_seed(seed)
    encoder = CifarResNet18()
    head = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, 128))
    model = nn.Sequential(encoder, head).train()
    # 2B views of 32x32 RGB: rows i and i+B are the two views of image i.
    views = torch.randn(2 * batch, 3, 32, 32)
    if memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        views = views.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-6)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = nt_xent(model(views), temperature)
        loss.backward()
        opt.step()
        return loss

    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = step()
        dt = (time.perf_counter() - t0) * 1e3
        if i >= warmup:
            times.append(dt)
    if not torch.isfinite(loss):
        raise RuntimeError("loss is not finite")
    return {"medianMs": statistics.median(times), "minMs": min(times), "timesMs": times, "loss": float(loss)}


def libtorch_path():
    """The libtorch_cpu this process loaded (to show that loco and PyTorch run the same library)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libtorch_cpu.so" in line:
                    return os.path.realpath(line.split()[-1])
    except OSError:
        pass
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the machine's cores)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (2x views)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per memory format")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--formats", default="channels_last,contiguous", help="memory formats to try")
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--tiny-iters", type=int, default=100000, help="ops per tiny-op loop")
    p.add_argument("--repeats", type=int, default=5, help="tiny-op loops (best taken)")
    p.add_argument("--skip-tiny", action="store_true")
    p.add_argument("--skip-step", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    threads = args.threads if args.threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(threads)

    out = {
        "library": "pytorch",
        "version": torch.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "libtorch": libtorch_path(),
        "batchSize": args.batch_size,
        "views": 2 * args.batch_size,
    }
    if not args.skip_tiny:
        out["tinyOpUs"] = tiny_op_us(args.tiny_iters, args.repeats)
    if not args.skip_step:
        formats = {}
        for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
            formats[fmt] = step_ms(args.batch_size, args.steps, args.warmup, fmt, args.temperature, args.seed)
        best = min(formats, key=lambda f: formats[f]["medianMs"])
        out["step"] = {"formats": formats, "bestFormat": best, "ms": formats[best]["medianMs"]}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
