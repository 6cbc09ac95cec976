#!/usr/bin/python3
"""PyTorch side of `npm run bench:engine`: the same measurements as bench/engine.ts.

Run with Debian's interpreter (/usr/bin/python3, which has python3-torch). Prints one JSON object.
bench/engine.ts runs it twice per measurement: as installed (glibc malloc) and with the tuned
allocator (LD_PRELOAD=libjemalloc.so.2, MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1, as
PyTorch's CPU performance guide recommends); "allocator" in the output says which one ran.

  tiny op   `c = a + b` on two float32 [2, 2] tensors (the previous result is freed by refcount,
            as loco frees it with release()); microseconds per op, best of --repeats loops.
  step      one SimCLR-style training step of --model: resnet18 = CIFAR ResNet-18 (3x3 stride-1
            stem, no max-pool, width 64, fc removed) + head Linear(512,512)-BN1d-ReLU-
            Linear(512,128) on --image-size 32; resnet50 = torchvision's ResNet-50 (v1.5, fc
            removed) + head Linear(2048,2048)-BN1d-ReLU-Linear(2048,128) on --image-size 224.
            NT-Xent (tau 0.5) over the two views of --batch-size images (2B rows), backward, SGD
            (momentum 0.9, weight decay 1e-6) step. Inputs are random. Each memory format listed in
            --formats is measured (warm-up steps, then the median of --steps timed steps).
            --profile prints torch.profiler's op table of one step to stderr.
  --serve   a persistent worker for `npm run bench:engine -- --paired N`: one step per "step" line
            on stdin, its times as one JSON line on stdout (see serve()).
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- models: torchvision's ResNets (fc removed), one class for both -----------------------------


def shortcut(cin, cout, stride):
    """torchvision's downsample: a 1x1 conv + BN where the shape changes, else None (identity)."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(cin, planes, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as torchvision does
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(cin, cout, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as torchvision does
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision.models.resnet with fc = Identity. stem "cifar": conv1 = 3x3 stride 1 and no
    max-pool (CIFAR ResNet-18); "imagenet": 7x7 stride 2 and a 3x3 stride-2 max-pool (ResNet-50)."""

    def __init__(self, block, blocks, stem, width=64):
        super().__init__()
        cifar = stem == "cifar"
        self.conv1 = nn.Conv2d(3, width, 3 if cifar else 7, 1 if cifar else 2, 1 if cifar else 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = None if cifar else nn.MaxPool2d(3, 2, 1)
        layers, cin = [], width
        for i, count in enumerate(blocks):
            planes = width * 2**i
            stage = []
            for j in range(count):
                stage.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1))
                cin = planes * block.expansion
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


# name: (encoder constructor, its feature width, the head's hidden width)
MODELS = {
    "resnet18": (lambda: ResNet(BasicBlock, [2, 2, 2, 2], "cifar"), 512, 512),
    "resnet50": (lambda: ResNet(Bottleneck, [3, 4, 6, 3], "imagenet"), 2048, 2048),
}


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


def build_step(model_name, image_size, batch, memory_format, temperature, seed, clock, markers):
    """The model, its input and optimizer; returns (step, timed_step). step() runs one training step
    and returns the loss and the end times of forward, backward and optimizer; timed_step() runs one
    and returns its times (ms), minor page faults, loss and monotonic start/end (seconds)."""
    torch.manual_seed(seed)
    make_encoder, features, hidden = MODELS[model_name]
    encoder = make_encoder()
    head = nn.Sequential(
        nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 128)
    )
    model = nn.Sequential(encoder, head).train()
    # 2B views of RGB images: rows i and i+B are the two views of image i.
    views = torch.randn(2 * batch, 3, image_size, image_size)
    if memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        views = views.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-6)

    def mark():
        """A phase boundary for bench/opcount.cpp: one linspace, an operator the step never runs."""
        if markers:
            torch.linspace(0, 1, 2)

    def step():
        mark()
        opt.zero_grad(set_to_none=True)
        loss = nt_xent(model(views), temperature)
        mark()
        t1 = clock()
        loss.backward()
        mark()
        t2 = clock()
        opt.step()
        mark()
        return loss, t1, t2, clock()

    def timed_step():
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.monotonic()
        t0 = clock()
        loss, t1, t2, t3 = step()
        end = time.monotonic()
        return {
            "ms": (t3 - t0) * 1e3,
            "phasesMs": {"forward": (t1 - t0) * 1e3, "backward": (t2 - t1) * 1e3, "optimizer": (t3 - t2) * 1e3},
            "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0,
            "loss": float(loss),
            "startS": start,
            "endS": end,
        }

    return step, timed_step


def step_ms(model_name, image_size, batch, steps, warmup, memory_format, temperature, seed, profile, clock, markers):
    step, timed_step = build_step(model_name, image_size, batch, memory_format, temperature, seed, clock, markers)
    runs = [timed_step() for _ in range(warmup + steps)][warmup:]
    loss = runs[-1]["loss"]
    if not math.isfinite(loss):
        raise RuntimeError("loss is not finite")
    if profile:
        with torch.profiler.profile() as prof:
            step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
        sys.stderr.write(f"torch.profiler, one {model_name} step, {memory_format}:\n{table}\n")
    times = [r["ms"] for r in runs]
    return {
        "medianMs": statistics.median(times),
        "minMs": min(times),
        "timesMs": times,
        "phasesMs": {k: statistics.median(r["phasesMs"][k] for r in runs) for k in ("forward", "backward", "optimizer")},
        "faultsPerStep": statistics.median(r["faults"] for r in runs),
        "loss": loss,
    }


def serve(args, image_size, clock, info):
    """--serve (bench/engine_paired.ts): build the step of --model at the one format of --formats,
    run --warmup steps, print a "ready" line, then run one step per "step" line read from stdin and
    print its times as one JSON line, until stdin closes. Between steps the process blocks on the
    read, so it computes only when asked to."""
    fmt = args.formats.split(",")[0].strip()
    _, timed_step = build_step(
        args.model, image_size, args.batch_size, fmt, args.temperature, args.seed, clock, args.phase_markers
    )
    for _ in range(args.warmup):
        timed_step()
    print(json.dumps({**info, "ready": True, "pid": os.getpid(), "format": fmt}), flush=True)
    for line in iter(sys.stdin.readline, ""):
        if line.strip() != "step":
            raise RuntimeError(f"--serve: unexpected request {line.strip()!r} (expected 'step')")
        print(json.dumps({**timed_step(), "pid": os.getpid()}), flush=True)


def allocator():
    """"jemalloc" when libjemalloc is loaded (LD_PRELOAD), else "glibc"."""
    try:
        with open("/proc/self/maps") as f:
            return "jemalloc" if "libjemalloc" in f.read() else "glibc"
    except OSError:
        return "unknown"


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
    p.add_argument("--model", choices=sorted(MODELS), default="resnet18", help="encoder of the step")
    p.add_argument("--image-size", type=int, default=0, help="pixels (0: 32 for resnet18, 224 for resnet50)")
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
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="time steps by the wall clock or by the process's CPU time (all threads; steadier on a loaded machine)",
    )
    p.add_argument("--profile", action="store_true", help="print torch.profiler's op table of one step to stderr")
    p.add_argument("--serve", action="store_true", help="step on request, for npm run bench:engine -- --paired")
    p.add_argument(
        "--phase-markers",
        action="store_true",
        help="mark each step's phases with a linspace for bench/opcount.cpp (npm run bench:engine-ops)",
    )
    args = p.parse_args()
    threads = args.threads if args.threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    image_size = args.image_size or (32 if args.model == "resnet18" else 224)

    out = {
        "library": "pytorch",
        "version": torch.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "libtorch": libtorch_path(),
        "allocator": allocator(),
        "model": args.model,
        "imageSize": image_size,
        "batchSize": args.batch_size,
        "views": 2 * args.batch_size,
    }
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.serve:
        serve(args, image_size, clock, out)
        return
    if not args.skip_tiny:
        out["tinyOpUs"] = tiny_op_us(args.tiny_iters, args.repeats)
    if not args.skip_step:
        formats = {}
        for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
            formats[fmt] = step_ms(
                args.model,
                image_size,
                args.batch_size,
                args.steps,
                args.warmup,
                fmt,
                args.temperature,
                args.seed,
                args.profile,
                clock,
                args.phase_markers,
            )
        best = min(formats, key=lambda f: formats[f]["medianMs"])
        out["step"] = {"formats": formats, "bestFormat": best, "ms": formats[best]["medianMs"]}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
