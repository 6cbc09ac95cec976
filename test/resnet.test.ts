// Tests of src/models/resnet.ts: torchvision-equal names and sizes, stage views, options, memory.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randn, zeros } from "../src/torch/creation";
import { scope } from "../src/torch/scope";
import { noGrad } from "../src/torch/autograd";
import { Generator } from "../src/torch/random";
import { liveTensors } from "../src/torch/memory";
import type { Tensor } from "../src/torch/tensor";
import { BatchNorm2d, Conv2d, Linear } from "../src/nn";
import { ResNet, resnet18, resnet34, resnet50, Bottleneck, BasicBlock } from "../src/models/resnet";

// ---- torchvision's reference lists (PyTorch 1.13 / torchvision 0.14 via the system Python) ----

const PYTHON = "/usr/bin/python3";
type Entry = [string, number[], string];

function torchvisionStateDicts(): Record<string, Entry[]> | null {
  const script =
    "import json, torchvision\n" +
    "print(json.dumps({d: [[k, list(v.shape), str(v.dtype).replace('torch.', '')] " +
    "for k, v in getattr(torchvision.models, 'resnet' + d)().state_dict().items()] for d in ['18', '50']}))";
  try {
    return JSON.parse(execFileSync(PYTHON, ["-c", script], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }));
  } catch {
    return null;
  }
}

const reference = torchvisionStateDicts();
const noTorchvision = reference === null ? `${PYTHON} cannot import torchvision` : false;

const entries = (m: ResNet): Entry[] => [...m.stateDict()].map(([k, t]) => [k, t.shape, t.dtype]);

function withModel<T>(m: ResNet, fn: (m: ResNet) => T): T {
  try {
    return fn(m);
  } finally {
    m.dispose();
  }
}

test("resnet18 state dict equals torchvision's: same keys, order, shapes and dtypes", { skip: noTorchvision }, () => {
  withModel(resnet18(), (m) => {
    const ours = entries(m);
    const theirs = reference!["18"];
    assert.equal(ours.length, theirs.length);
    assert.deepEqual(ours, theirs);
  });
});

test(
  "resnet50 state dict equals torchvision's (Bottleneck, stride on the 3x3 conv, downsample.0/.1)",
  { skip: noTorchvision },
  () => {
    withModel(resnet50(), (m) => {
      assert.deepEqual(entries(m), reference!["50"]);
      // v1.5: the stride of a downsampling Bottleneck sits on conv2 (3x3), not conv1
      const block = m.layer2.at(0) as Bottleneck;
      assert.deepEqual(block.conv1.stride, [1, 1]);
      assert.deepEqual(block.conv2.stride, [2, 2]);
      assert.deepEqual((block.downsample as unknown as { at(i: number): Conv2d }).at(0).stride, [2, 2]);
    });
  },
);

test("parameter counts equal torchvision's (1000 classes)", () => {
  withModel(resnet18(), (m) => assert.equal(m.numParameters(), 11689512));
  withModel(resnet34(), (m) => assert.equal(m.numParameters(), 21797672));
  withModel(resnet50(), (m) => assert.equal(m.numParameters(), 25557032));
});

test("torchvision's init: convs kaiming_normal_(fan_out, relu), BN 1/0, fc default; zeroInitResidual", () => {
  withModel(resnet18({ generator: new Generator(3) }), (m) => {
    scope(() => {
      const w = (m.layer4.at(1) as BasicBlock).conv2.weight; // 512·512·9 values, fan_out = 512·9
      const expected = Math.sqrt(2 / (512 * 9));
      assert.ok(Math.abs(w.std().item() - expected) < 0.01 * expected, `std ${w.std().item()} vs ${expected}`);
      assert.ok(Math.abs(w.mean().item()) < 0.01 * expected);
      const stem = m.conv1.weight; // fan_out = 64·49
      assert.ok(Math.abs(stem.std().item() - Math.sqrt(2 / (64 * 49))) < 0.05 * Math.sqrt(2 / (64 * 49)));
      for (const mod of m.modules()) {
        if (mod instanceof BatchNorm2d) {
          assert.equal(mod.weight!.min().item(), 1);
          assert.equal(mod.bias!.abs().max().item(), 0);
        }
      }
      const fc = m.fc!.weight; // Linear default: U(±1/sqrt(512))
      assert.ok(fc.abs().max().item() <= 1 / Math.sqrt(512));
      assert.ok(fc.abs().max().item() > 0.99 / Math.sqrt(512));
    });
  });
  withModel(resnet18({ zeroInitResidual: true, numClasses: 0, width: 8 }), (m) => {
    for (const [name, t] of m.stateDict()) {
      if (/^layer\d\.\d\.bn2\.weight$/.test(name)) assert.equal(t.abs().max().item(), 0, name);
      if (/^layer\d\.\d\.bn1\.weight$/.test(name)) assert.equal(t.min().item(), 1, name);
    }
  });
  withModel(resnet50({ zeroInitResidual: true, numClasses: 0, width: 4 }), (m) => {
    const last = (m.layer3.at(2) as Bottleneck).bn3.weight!;
    const mid = (m.layer3.at(2) as Bottleneck).bn2.weight!;
    assert.equal(last.abs().max().item(), 0);
    assert.equal(mid.min().item(), 1);
  });
  // same generator seed, same weights
  const a = resnet18({ width: 8, numClasses: 4, generator: new Generator(5) });
  const b = resnet18({ width: 8, numClasses: 4, generator: new Generator(5) });
  try {
    for (const [k, t] of a.stateDict()) assert.ok(t.equal(b.stateDict().get(k)!), k);
  } finally {
    a.dispose();
    b.dispose();
  }
});

test("CIFAR stem: stage output shapes for 32x32 input (BasicBlock and Bottleneck)", () => {
  const x = randn([2, 3, 32, 32]);
  try {
    withModel(resnet18({ stem: "cifar", numClasses: 10 }), (m) => {
      assert.deepEqual(m.conv1.weight.shape, [64, 3, 3, 3]);
      assert.deepEqual(m.stageChannels(), [64, 128, 256, 512]);
      scope(() => {
        assert.deepEqual(
          m.forwardStages(x).map((h) => h.shape),
          [
            [2, 64, 32, 32],
            [2, 128, 16, 16],
            [2, 256, 8, 8],
            [2, 512, 4, 4],
          ],
        );
        assert.deepEqual(m.forwardFeatures(x).shape, [2, 512]);
        assert.deepEqual(m.forward(x).shape, [2, 10]);
      });
    });
    withModel(resnet50({ stem: "cifar", numClasses: 0, width: 8 }), (m) => {
      assert.deepEqual(m.stageChannels(), [32, 64, 128, 256]);
      assert.equal(m.featureDim, 256);
      scope(() => {
        assert.deepEqual(
          m.forwardStages(x).map((h) => h.shape),
          [
            [2, 32, 32, 32],
            [2, 64, 16, 16],
            [2, 128, 8, 8],
            [2, 256, 4, 4],
          ],
        );
      });
    });
    // ImageNet stem: /4 after the stem, /32 at the end
    withModel(resnet18({ width: 8, numClasses: 0 }), (m) => {
      scope(() => {
        const hs = m.forwardStages(randn([1, 3, 64, 64]));
        assert.deepEqual(
          hs.map((h) => h.shape),
          [
            [1, 8, 16, 16],
            [1, 16, 8, 8],
            [1, 32, 4, 4],
            [1, 64, 2, 2],
          ],
        );
      });
    });
  } finally {
    x.dispose();
  }
});

test("stages() composed give forwardFeatures' values; stages are views under the model's names", () => {
  withModel(resnet18({ stem: "cifar", width: 8, numClasses: 3, generator: new Generator(1) }), (m) => {
    const stages = m.stages();
    assert.equal(stages.length, 4);
    assert.equal(m.stages()[2], stages[2], "the same stage modules on every call");
    assert.deepEqual(
      stages.map((s) => s.outChannels),
      m.stageChannels(),
    );
    const full = m.stateDict();
    const union: string[] = [];
    for (const s of stages) {
      for (const [k, t] of s.stateDict()) {
        assert.equal(t, full.get(k), `stage key ${k} is the model's own tensor`);
        union.push(k);
      }
    }
    assert.deepEqual(
      union,
      [...full.keys()].filter((k) => !k.startsWith("fc.")),
      "stages partition the encoder",
    );
    assert.deepEqual([...stages[0].stateDict().keys()].slice(0, 3), ["conv1.weight", "bn1.weight", "bn1.bias"]);
    assert.ok([...stages[1].stateDict().keys()].every((k) => k.startsWith("layer2.")));

    // module structure of the model is not changed by the views
    assert.deepEqual(
      m.namedChildren().map(([k]) => k),
      ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"],
    );

    m.eval();
    scope(() => {
      const x = randn([2, 3, 16, 16], { generator: new Generator(2) });
      let h = x;
      for (const s of stages) h = s.forward(h);
      const composed = m.pool(h);
      const direct = m.forwardFeatures(x);
      assert.ok(composed.equal(direct), "same values");
      assert.ok(m.forward(x).allclose(m.fc!.forward(direct)));
    });
    // train mode on a stage reaches the shared modules
    stages[3].train();
    assert.equal((m.layer4.at(0) as BasicBlock).bn1.training, true);
    assert.equal(m.layer3.training, false);
  });
});

test("width, inChannels=1 and numClasses 0/null options", () => {
  withModel(resnet18({ width: 16, inChannels: 1, numClasses: 5 }), (m) => {
    assert.deepEqual(m.conv1.weight.shape, [16, 1, 7, 7]);
    assert.deepEqual(m.fc!.weight.shape, [5, 128]);
    assert.deepEqual((m.layer3.at(0) as BasicBlock).conv1.weight.shape, [64, 32, 3, 3]);
    scope(() => assert.deepEqual(m.forward(randn([2, 1, 32, 32])).shape, [2, 5]));
  });
  for (const numClasses of [0, null]) {
    withModel(resnet18({ width: 8, stem: "cifar", numClasses }), (m) => {
      assert.equal(m.fc, null);
      assert.ok([...m.stateDict().keys()].every((k) => !k.startsWith("fc.")));
      scope(() => {
        const x = randn([2, 3, 8, 8]);
        const y = m.forward(x);
        assert.deepEqual(y.shape, [2, 64]);
        assert.ok(y.equal(m.forwardFeatures(x)));
      });
    });
  }
});

test("unsupported options are rejected at once with a clear message", () => {
  assert.throws(() => new ResNet({ depth: 20 as 18 }), /depth must be one of 18, 34, 50, 101, 152, got 20/);
  assert.throws(() => resnet18({ stem: "tiny" as "cifar" }), /stem must be 'imagenet' or 'cifar', got 'tiny'/);
  assert.throws(() => resnet18({ width: 0 }), /width must be a positive integer, got 0/);
  assert.throws(() => resnet18({ width: 1.5 }), /width must be a positive integer/);
  assert.throws(() => resnet18({ inChannels: -1 }), /inChannels must be a positive integer/);
  assert.throws(() => resnet18({ numClasses: -3 }), /numClasses must be a non-negative integer or null/);
  assert.throws(() => resnet18({ dtype: "int64" }), /dtype must be 'float32' or 'float64'/);
  assert.throws(() => resnet18({ numclasses: 10 } as unknown as object), /unknown option 'numclasses'/);
  assert.throws(() => resnet18({ channelsLast: "yes" as unknown as boolean }), /channelsLast must be a boolean/);
});

test("state dicts load both ways between models, and outputs then agree", () => {
  const a = resnet18({ stem: "cifar", width: 8, numClasses: 4, generator: new Generator(10) });
  const b = resnet18({ stem: "cifar", width: 8, numClasses: 4, generator: new Generator(11) });
  try {
    scope(() => {
      const x = randn([2, 3, 16, 16]);
      a.forward(x); // train mode: running stats and num_batches_tracked move
      assert.equal(a.stateDict().get("layer1.0.bn1.num_batches_tracked")!.item(), 1);
      b.loadStateDict(a.stateDict());
      assert.equal(b.stateDict().get("layer1.0.bn1.num_batches_tracked")!.item(), 1);
      a.eval();
      b.eval();
      assert.ok(a.forward(x).equal(b.forward(x)));
      // a head-less model loads the encoder part non-strictly
      const enc = resnet18({ stem: "cifar", width: 8, numClasses: 0 });
      const res = enc.loadStateDict(a.stateDict(), { strict: false });
      assert.deepEqual(res.unexpectedKeys, ["fc.weight", "fc.bias"]);
      assert.deepEqual(res.missingKeys, []);
      enc.eval();
      assert.ok(enc.forward(x).equal(a.forwardFeatures(x)));
      assert.throws(() => enc.loadStateDict(a.stateDict()), /unexpected keys: 'fc\.weight', 'fc\.bias'/);
      enc.dispose();
    });
  } finally {
    a.dispose();
    b.dispose();
  }
});

test("channels-last: weights NHWC and activations channels-last up to layer4, which stays NCHW; same values", () => {
  const a = resnet18({ stem: "cifar", width: 8, numClasses: 4, generator: new Generator(12) }).eval();
  const b = resnet18({ stem: "cifar", width: 8, numClasses: 4, channelsLast: true }).eval();
  try {
    b.loadStateDict(a.stateDict());
    assert.equal(b.channelsLast, true);
    assert.ok(b.conv1.weight.isContiguous("channelsLast"), "loading keeps the layout");
    assert.ok((b.layer2.at(0) as BasicBlock).conv1.weight.isContiguous("channelsLast"));
    const layer4 = b.layer4.at(0) as BasicBlock;
    assert.ok(layer4.conv1.weight.isContiguous() && !layer4.conv1.weight.isContiguous("channelsLast"));
    scope(() => {
      const x = randn([2, 3, 16, 16]);
      const hs = b.forwardStages(x);
      for (const h of hs.slice(0, 3)) assert.ok(h.isContiguous("channelsLast"), "stages 1-3 stay channels-last");
      assert.ok(hs[3].isContiguous() && !hs[3].isContiguous("channelsLast"), "layer4 runs NCHW");
      // Block by block (local learning's cuts), the same layouts and values.
      let h = x;
      for (const block of b.blocks()) h = block.forward(h);
      assert.ok(h.isContiguous() && h.allclose(hs[3], 1e-5, 1e-6));
      const ref = a.forwardStages(x);
      for (let i = 0; i < 4; i++) assert.ok(hs[i].allclose(ref[i], 1e-4, 1e-5), `stage ${i + 1}`);
      assert.ok(b.forward(x).allclose(a.forward(x), 1e-4, 1e-5));
      const y = b.forward(x.contiguous("channelsLast"));
      assert.deepEqual(y.shape, [2, 4]);
    });
    b.useChannelsLast(false);
    assert.ok(b.conv1.weight.isContiguous());
    scope(() => assert.ok(b.forwardStages(randn([2, 3, 16, 16]))[1].isContiguous()));
  } finally {
    a.dispose();
    b.dispose();
  }
});

test("a scope around forward+backward leaves the live tensor count unchanged; every parameter gets a grad", () => {
  withModel(resnet18({ stem: "cifar", width: 8, numClasses: 10 }), (m) => {
    const x = randn([2, 3, 16, 16]);
    const start = liveTensors();
    scope(() => {
      const loss = m.forward(x).pow(2).mean();
      loss.backward();
    });
    assert.equal(liveTensors(), start, "no activation or graph handle survives the scope");
    scope(() => {
      for (const [name, p] of m.namedParameters()) assert.notEqual(p.grad, null, name);
    });
    assert.equal(liveTensors(), start);
    // the same through the stage views, with per-stage detached inputs (as the gradient router does)
    m.zeroGrad();
    scope(() => {
      let h: Tensor = x;
      for (const s of m.stages()) {
        const input = h.detach().requiresGrad_(true);
        h = s.forward(input);
        h.mean().backward();
      }
    });
    assert.equal(liveTensors(), start);
    scope(() => assert.notEqual(m.conv1.weight.grad, null));
    x.dispose();
  });
});

test("float64 models run in float64 (for numerical comparisons)", () => {
  withModel(resnet18({ stem: "cifar", width: 4, numClasses: 2, dtype: "float64" }), (m) => {
    assert.ok(
      [...m.stateDict()].every(([k, t]) => t.dtype === (k.endsWith("num_batches_tracked") ? "int64" : "float64")),
    );
    scope(() => assert.equal(m.forward(zeros([2, 3, 8, 8], { dtype: "float64" })).dtype, "float64"));
    assert.ok(m.fc instanceof Linear);
    noGrad(() => m.fc!.weight.zero_());
    scope(() => assert.deepEqual(m.eval().forward(randn([1, 3, 8, 8], { dtype: "float64" })).shape, [1, 2]));
  });
});
