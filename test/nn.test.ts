// Tests of src/nn: Module bookkeeping (names, state dicts, modes, ownership) and layer semantics,
// checked against PyTorch's rules (expected values derived by hand from torch.nn's source).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Tensor } from "../src/torch/tensor";
import { randn, tensor, zeros, ones, full } from "../src/torch/creation";
import { scope } from "../src/torch/scope";
import { noGrad } from "../src/torch/autograd";
import { Generator } from "../src/torch/random";
import { liveTensors } from "../src/torch/memory";
import * as nn from "../src/nn";

const { init } = nn;

/** Sequential(Conv2d(3,8,3), BatchNorm2d(8), ReLU(), Flatten(), Linear(8*6*6, 10)) for 8×8 inputs. */
function smallNet(generator?: Generator): nn.Sequential {
  return new nn.Sequential(
    new nn.Conv2d(3, 8, 3, { generator }),
    new nn.BatchNorm2d(8),
    new nn.ReLU(),
    new nn.Flatten(),
    new nn.Linear(8 * 6 * 6, 10, { generator }),
  );
}

const shapesOf = (m: Map<string, Tensor>): [string, number[], string][] =>
  [...m].map(([k, t]) => [k, t.shape, t.dtype]);

function withModule<M extends nn.Module, T>(m: M, fn: (m: M) => T): T {
  try {
    return fn(m);
  } finally {
    m.dispose();
  }
}

// ---- names and state dicts ----

test("state-dict keys, shapes and dtypes of a small net equal PyTorch's", () => {
  withModule(smallNet(), (net) => {
    // From PyTorch 1.13: nn.Sequential(nn.Conv2d(3,8,3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
    // nn.Linear(288,10)).state_dict(), in order.
    assert.deepEqual(shapesOf(net.stateDict()), [
      ["0.weight", [8, 3, 3, 3], "float32"],
      ["0.bias", [8], "float32"],
      ["1.weight", [8], "float32"],
      ["1.bias", [8], "float32"],
      ["1.running_mean", [8], "float32"],
      ["1.running_var", [8], "float32"],
      ["1.num_batches_tracked", [], "int64"],
      ["4.weight", [10, 288], "float32"],
      ["4.bias", [10], "float32"],
    ]);
    assert.deepEqual(
      net.namedParameters().map(([k]) => k),
      ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"],
    );
    assert.deepEqual(
      net.namedBuffers().map(([k]) => k),
      ["1.running_mean", "1.running_var", "1.num_batches_tracked"],
    );
    assert.deepEqual(
      net.namedModules().map(([k]) => k),
      ["", "0", "1", "2", "3", "4"],
    );
    assert.equal(net.children().length, 5);
    assert.equal(net.numParameters(), 8 * 27 + 8 + 8 + 8 + 2880 + 10);
    for (const p of net.parameters()) assert.equal(p.requiresGrad, true);
    for (const b of net.buffers()) assert.equal(b.requiresGrad, false);
  });
});

test("optional parameters and buffers are left out of the state dict; named Sequential keys", () => {
  const net = nn.Sequential.named([
    ["conv", new nn.Conv2d(3, 4, 3, { bias: false })],
    ["bn", new nn.BatchNorm2d(4, { affine: false })],
    ["bn_nostats", new nn.BatchNorm2d(4, { trackRunningStats: false })],
    ["head", new nn.Sequential(new nn.Linear(4, 2, { bias: false }))],
  ]);
  withModule(net, () => {
    assert.deepEqual(
      [...net.stateDict().keys()],
      [
        "conv.weight",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
        "bn_nostats.weight",
        "bn_nostats.bias",
        "head.0.weight",
      ],
    );
    assert.equal(net.getParameter("conv.bias"), null);
    assert.deepEqual(net.getParameter("head.0.weight")?.shape, [2, 4]);
    assert.throws(() => net.getParameter("head.0.nope"), /no parameter 'head.0.nope'/);
    assert.throws(() => net.getSubmodule("head.7"), /no submodule '7'/);
  });
});

test("registration rejects duplicate and dotted names, non-float and non-leaf parameters", () => {
  const m = new nn.Module();
  withModule(m, () => {
    m.registerParameter("w", zeros([2]));
    assert.throws(() => m.registerBuffer("w", zeros([2])), /'w' is already registered/);
    assert.throws(() => m.registerModule("a.b", new nn.Identity()), /must not contain '\.'/);
    assert.throws(() => m.registerParameter("i", zeros([2], { dtype: "int64" })), /floating dtype/);
    const leaf = ones([2], { requiresGrad: true });
    const nonLeaf = leaf.mul(2);
    assert.throws(() => m.registerParameter("n", nonLeaf), /leaf/);
    leaf.dispose();
    nonLeaf.dispose();
    assert.throws(() => m.forward(zeros([1])), /has no forward\(\): a Module subclass must override it/);
  });
});

test("loadStateDict copies values in place (round trip, Map or object) and keeps tensor identity", () => {
  const a = smallNet(new Generator(1));
  const b = smallNet(new Generator(2));
  try {
    const bWeight = b.getParameter("0.weight")!;
    assert.equal(bWeight.equal(a.getParameter("0.weight")!), false);
    noGrad(() => a.getBuffer("1.running_mean")!.fill_(0.5));
    const result = b.loadStateDict(a.stateDict());
    assert.deepEqual(result, { missingKeys: [], unexpectedKeys: [] });
    for (const [key, t] of a.stateDict()) assert.ok(b.stateDict().get(key)!.equal(t), `value of ${key}`);
    assert.equal(b.getParameter("0.weight"), bWeight, "the parameter tensor object is kept");
    assert.equal(bWeight.requiresGrad, true);
    assert.equal(bWeight.isAliasOf(a.getParameter("0.weight")!), false, "values are copied, not shared");

    // a plain object works too
    const c = smallNet(new Generator(3));
    c.loadStateDict(Object.fromEntries(b.stateDict()));
    assert.ok(c.getParameter("4.weight")!.equal(a.getParameter("4.weight")!));
    c.dispose();
  } finally {
    a.dispose();
    b.dispose();
  }
});

test("loadStateDict errors name the key with expected and actual shape/dtype, and load nothing", () => {
  const net = smallNet(new Generator(4));
  const other = smallNet(new Generator(5));
  const wrong = zeros([8, 3, 5, 5]);
  const wrongDtype = zeros([10], { dtype: "float64" });
  try {
    const before = net.getParameter("4.weight")!.clone();
    const sd = new Map(other.stateDict());
    sd.set("0.weight", wrong);
    assert.throws(
      () => net.loadStateDict(sd),
      (e: Error) => {
        assert.ok(e instanceof nn.StateDictError);
        assert.match(e.message, /'0\.weight': shape mismatch, expected \[8, 3, 3, 3\] \(float32\), got \[8, 3, 5, 5\]/);
        return true;
      },
    );
    assert.ok(net.getParameter("4.weight")!.equal(before), "nothing copied when a key fails");
    // shape errors are raised even when not strict, as in PyTorch
    assert.throws(() => net.loadStateDict(sd, { strict: false }), /'0\.weight': shape mismatch/);

    const sd2 = new Map(other.stateDict());
    sd2.set("4.bias", wrongDtype);
    assert.throws(() => net.loadStateDict(sd2), /'4\.bias': dtype mismatch, expected float32, got float64/);

    const missing = new Map(other.stateDict());
    missing.delete("1.running_var");
    assert.throws(
      () => net.loadStateDict(missing),
      (e: Error) => {
        assert.ok(e instanceof nn.StateDictError);
        assert.match(e.message, /missing keys: '1\.running_var'/);
        assert.deepEqual(e.missingKeys, ["1.running_var"]);
        return true;
      },
    );
    assert.ok(net.getParameter("4.weight")!.equal(before));

    const extra = new Map(other.stateDict());
    extra.set("5.weight", wrong);
    assert.throws(() => net.loadStateDict(extra), /unexpected keys: '5\.weight'/);

    // non-strict: loads what matches and reports the rest
    const res = net.loadStateDict(new Map([...missing, ["5.weight", wrong]]), { strict: false });
    assert.deepEqual(res, { missingKeys: ["1.running_var"], unexpectedKeys: ["5.weight"] });
    assert.ok(net.getParameter("4.weight")!.equal(other.getParameter("4.weight")!));

    // a state dict without num_batches_tracked loads, as PyTorch accepts it
    const noCount = new Map(other.stateDict());
    noCount.delete("1.num_batches_tracked");
    assert.deepEqual(net.loadStateDict(noCount), { missingKeys: [], unexpectedKeys: [] });
    before.dispose();
  } finally {
    net.dispose();
    other.dispose();
    wrong.dispose();
    wrongDtype.dispose();
  }
});

test("setParameter replaces a value by dotted name; the module owns the new tensor", () => {
  const net = smallNet();
  withModule(net, () => {
    const old = net.getParameter("4.bias")!;
    const fresh = scope(() => {
      const t = full([10], 0.25);
      net.setParameter("4.bias", t);
      return null; // t is not returned, yet must survive: the module kept it
    });
    assert.equal(fresh, null);
    const now = net.getParameter("4.bias")!;
    assert.equal(now.isDisposed, false);
    assert.equal(now.requiresGrad, true);
    assert.deepEqual(now.toArray(), new Array(10).fill(0.25));
    assert.equal(old.isDisposed, true, "the old value is freed");
    assert.equal((net.at(4) as nn.Linear).bias, now, "typed getters see the new value");
    assert.throws(() => net.setParameter("4.nope", zeros([1])), /no parameter '4\.nope'/);
  });
});

// ---- BatchNorm semantics ----

test("BatchNorm2d train mode: batch statistics, running stats updated, num_batches_tracked incremented", () => {
  const bn = new nn.BatchNorm2d(3);
  const x = randn([4, 3, 5, 5], { generator: new Generator(7) });
  try {
    scope(() => {
      const y = bn.forward(x);
      const mean = x.mean([0, 2, 3]);
      const varUnbiased = x.var([0, 2, 3], { correction: 1 });
      const varBiased = x.var([0, 2, 3], { correction: 0 });
      assert.ok(bn.runningMean!.allclose(mean.mul(0.1), 1e-5, 1e-6), "running_mean = 0.9·0 + 0.1·batch mean");
      assert.ok(
        bn.runningVar!.allclose(varUnbiased.mul(0.1).add(0.9), 1e-5, 1e-6),
        "running_var = 0.9·1 + 0.1·unbiased var",
      );
      assert.equal(bn.numBatchesTracked!.item(), 1);
      assert.equal(bn.numBatchesTracked!.dtype, "int64");
      const expected = x.sub(mean.view(1, 3, 1, 1)).div(varBiased.add(1e-5).sqrt().view(1, 3, 1, 1));
      assert.ok(y.allclose(expected, 1e-4, 1e-5), "normalised with the batch's biased variance");
      bn.forward(x);
      assert.equal(bn.numBatchesTracked!.item(), 2);
      assert.ok(bn.runningMean!.allclose(mean.mul(0.1 * 0.9 + 0.1), 1e-5, 1e-6));
    });
  } finally {
    bn.dispose();
    x.dispose();
  }
});

test("BatchNorm2d eval mode uses the running statistics and leaves them alone", () => {
  const bn = new nn.BatchNorm2d(2, { eps: 1e-3 });
  const x = randn([3, 2, 4, 4], { generator: new Generator(8) });
  try {
    scope(() => {
      noGrad(() => {
        bn.runningMean!.copy_(tensor([0.5, -1]));
        bn.runningVar!.copy_(tensor([4, 0.25]));
        bn.weight!.copy_(tensor([2, 3]));
        bn.bias!.copy_(tensor([0.1, 0.2]));
      });
      bn.eval();
      const y = bn.forward(x);
      const rm = tensor([0.5, -1]).view(1, 2, 1, 1);
      const sd = tensor([4, 0.25]).add(1e-3).sqrt().view(1, 2, 1, 1);
      const expected = x
        .sub(rm)
        .div(sd)
        .mul(tensor([2, 3]).view(1, 2, 1, 1))
        .add(tensor([0.1, 0.2]).view(1, 2, 1, 1));
      assert.ok(y.allclose(expected, 1e-5, 1e-5));
      assert.deepEqual(bn.runningMean!.toArray(), [0.5, -1]);
      assert.equal(bn.numBatchesTracked!.item(), 0, "eval does not count batches");
    });
  } finally {
    bn.dispose();
    x.dispose();
  }
});

test("BatchNorm momentum null is a cumulative average; no running stats means batch stats in eval", () => {
  const bn = new nn.BatchNorm1d(2, { momentum: null });
  const noStats = new nn.BatchNorm1d(2, { trackRunningStats: false });
  try {
    scope(() => {
      const a = tensor([
        [1, 10],
        [3, 30],
      ]);
      const b = tensor([
        [5, 0],
        [7, 20],
      ]);
      bn.forward(a);
      bn.forward(b);
      // means of the batch means: (2+6)/2, (20+10)/2
      assert.ok(bn.runningMean!.allclose(tensor([4, 15]), 1e-6, 1e-6));
      noStats.eval();
      const y = noStats.forward(a);
      assert.ok(
        y.allclose(
          tensor([
            [-1, -1],
            [1, 1],
          ]),
          1e-3,
          1e-3,
        ),
        "normalised with the batch's own statistics",
      );
      assert.throws(() => bn.forward(tensor([[1, 2]])), /more than 1 value per channel when training/);
      assert.equal(bn.numBatchesTracked!.item(), 2, "a rejected batch is not counted");
      assert.throws(() => new nn.BatchNorm2d(2).forward(tensor([[1, 2]])), /expected 4D input \(got 2D input\)/);
    });
  } finally {
    bn.dispose();
    noStats.dispose();
  }
});

// ---- initialisation ----

test("Linear and Conv2d default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias", () => {
  const lin = new nn.Linear(256, 256, { generator: new Generator(11) });
  const conv = new nn.Conv2d(16, 64, 3, { generator: new Generator(12) });
  try {
    scope(() => {
      const w = lin.weight;
      const bound = 1 / 16;
      assert.ok(w.min().item() >= -bound && w.max().item() <= bound);
      assert.ok(w.max().item() > 0.99 * bound && w.min().item() < -0.99 * bound, "the whole interval is used");
      const std = w.std().item();
      assert.ok(Math.abs(std - bound / Math.sqrt(3)) < 0.01 * (bound / Math.sqrt(3)), `std ${std}`);
      assert.ok(Math.abs(w.mean().item()) < 0.002);
      const b = lin.bias!;
      assert.ok(b.abs().max().item() <= bound && b.std().item() > 0.02);

      const cb = 1 / Math.sqrt(16 * 9);
      assert.ok(conv.weight.abs().max().item() <= cb);
      assert.ok(Math.abs(conv.weight.std().item() - cb / Math.sqrt(3)) < 0.03 * (cb / Math.sqrt(3)));
      assert.ok(conv.bias!.abs().max().item() <= cb);
    });
  } finally {
    lin.dispose();
    conv.dispose();
  }
});

test("init functions: kaiming normal/uniform, xavier, constants; a Generator makes init reproducible", () => {
  scope(() => {
    const w = zeros([128, 64, 3, 3]);
    init.kaimingNormal_(w, { mode: "fan_out", nonlinearity: "relu", generator: new Generator(1) });
    const expectedStd = Math.sqrt(2 / (128 * 9));
    assert.ok(Math.abs(w.std().item() - expectedStd) < 0.01 * expectedStd);
    init.kaimingNormal_(w, { mode: "fan_in", nonlinearity: "relu" });
    assert.ok(Math.abs(w.std().item() - Math.sqrt(2 / (64 * 9))) < 0.01 * Math.sqrt(2 / (64 * 9)));
    init.kaimingUniform_(w, { nonlinearity: "relu" });
    const kb = Math.sqrt(2) * Math.sqrt(3 / (64 * 9));
    assert.ok(w.abs().max().item() <= kb && w.abs().max().item() > 0.99 * kb);
    const x = zeros([300, 200]);
    init.xavierUniform_(x, 2);
    const xb = 2 * Math.sqrt(6 / 500);
    assert.ok(x.abs().max().item() <= xb && x.abs().max().item() > 0.99 * xb);
    init.constant_(x, 3);
    assert.equal(x.min().item(), 3);
    init.ones_(x);
    assert.equal(x.sum().item(), 60000);
    init.zeros_(x);
    assert.equal(x.abs().sum().item(), 0);
    assert.throws(() => init.kaimingNormal_(zeros([5])), /at least 2 dimensions/);
    assert.ok(Math.abs(init.calculateGain("leaky_relu", Math.sqrt(5)) - Math.sqrt(1 / 3)) < 1e-12);

    // works on parameters that require grad (no graph is recorded)
    const p = zeros([4, 4], { requiresGrad: true });
    init.normal_(p, 0, 1);
    assert.equal(p.isLeaf, true);

    const l1 = new nn.Linear(8, 8, { generator: new Generator(42) });
    const l2 = new nn.Linear(8, 8, { generator: new Generator(42) });
    const l3 = new nn.Linear(8, 8, { generator: new Generator(43) });
    assert.ok(l1.weight.equal(l2.weight) && l1.bias!.equal(l2.bias!));
    assert.equal(l1.weight.equal(l3.weight), false);
    for (const l of [l1, l2, l3]) l.dispose();
  });
});

test("BatchNorm init: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0", () => {
  const bn = new nn.BatchNorm2d(4);
  withModule(bn, () => {
    assert.deepEqual(bn.weight!.toArray(), [1, 1, 1, 1]);
    assert.deepEqual(bn.bias!.toArray(), [0, 0, 0, 0]);
    assert.deepEqual(bn.runningMean!.toArray(), [0, 0, 0, 0]);
    assert.deepEqual(bn.runningVar!.toArray(), [1, 1, 1, 1]);
    assert.deepEqual(bn.numBatchesTracked!.shape, []);
    assert.equal(bn.numBatchesTracked!.item(), 0);
  });
});

// ---- modes, traversal, ownership ----

test("train()/eval() recurse; apply() visits children first; Dropout follows the mode", () => {
  const inner = new nn.Sequential(new nn.Dropout(0.5), new nn.BatchNorm1d(4));
  const net = new nn.Sequential(new nn.Linear(4, 4), inner);
  withModule(net, () => {
    assert.ok(net.modules().every((m) => m.training));
    net.eval();
    assert.ok(net.modules().every((m) => !m.training));
    net.train();
    assert.ok(net.modules().every((m) => m.training));
    net.train(false);
    assert.equal(inner.at(0).training, false);

    const order: string[] = [];
    net.apply((m) => order.push(m.constructor.name));
    assert.deepEqual(order, ["Linear", "Dropout", "BatchNorm1d", "Sequential", "Sequential"]);

    scope(() => {
      const x = ones([64, 64]);
      const drop = inner.at(0);
      assert.ok(drop.forward(x).equal(x), "eval: identity");
      drop.train();
      const y = drop.forward(x);
      const zerosFrac = y.eq(0).float().mean().item();
      assert.ok(zerosFrac > 0.4 && zerosFrac < 0.6, `fraction zeroed ${zerosFrac}`);
      assert.equal(y.max().item(), 2, "kept values scaled by 1/(1-p)");
    });
  });
});

test("parameters of a module built inside scope() survive it; forward in a scope frees its activations", () => {
  const net = scope(() => {
    const n = smallNet();
    n.eval().requiresGrad_(false); // frozen, as a lower stage in a sequential schedule
    randn([2, 2]); // an ordinary temporary, freed here
    return n; // a Module is not a tensor container: its tensors survive because they were kept
  });
  withModule(net, () => {
    for (const t of net.stateDict().values()) assert.equal(t.isDisposed, false);
    net.train().requiresGrad_(true);
    const x = randn([2, 3, 8, 8]);
    const start = liveTensors();
    const out = scope(() => net.forward(x).sum().item());
    assert.ok(Number.isFinite(out));
    assert.equal(liveTensors(), start, "activations freed");
    x.dispose();
  });
});

test("zeroGrad sets every gradient to null; requiresGrad_(false) freezes", () => {
  const net = smallNet();
  withModule(net, () => {
    scope(() => {
      net
        .forward(randn([2, 3, 8, 8]))
        .sum()
        .backward();
      for (const p of net.parameters()) assert.notEqual(p.grad, null);
      net.zeroGrad();
      for (const p of net.parameters()) assert.equal(p.grad, null);
      net.requiresGrad_(false);
      assert.equal(net.numParameters({ trainableOnly: true }), 0);
      assert.ok(net.numParameters() > 0);
      assert.equal(net.forward(randn([2, 3, 8, 8])).requiresGrad, false);
    });
  });
});

test("dispose() frees every parameter and buffer; use afterwards throws", () => {
  const start = liveTensors();
  const net = smallNet();
  assert.equal(liveTensors() - start, 9, "6 parameters + 3 buffers");
  net.dispose();
  assert.equal(liveTensors(), start);
  assert.throws(() => scope(() => net.forward(zeros([1, 3, 8, 8]))), /used after dispose/);
  net.dispose(); // idempotent
});

test("to(dtype) converts floating parameters and buffers, leaving num_batches_tracked int64", () => {
  const net = smallNet();
  withModule(net, () => {
    const before = net.getParameter("0.weight")!.double();
    const start = liveTensors();
    net.to("float64");
    assert.equal(liveTensors(), start, "old tensors are freed");
    const sd = net.stateDict();
    assert.equal(sd.get("0.weight")!.dtype, "float64");
    assert.equal(sd.get("1.running_var")!.dtype, "float64");
    assert.equal(sd.get("1.num_batches_tracked")!.dtype, "int64");
    assert.equal(sd.get("0.weight")!.requiresGrad, true);
    assert.ok(sd.get("0.weight")!.equal(before));
    before.dispose();
    scope(() => assert.equal(net.forward(randn([1, 3, 8, 8], { dtype: "float64" })).dtype, "float64"));
  });
});

test("toMemoryFormat('channelsLast') stores conv weights NHWC; outputs stay equal", () => {
  const a = smallNet(new Generator(9)).eval();
  const b = smallNet(new Generator(10)).eval();
  try {
    b.loadStateDict(a.stateDict());
    b.toMemoryFormat("channelsLast");
    const w = b.getParameter("0.weight")!;
    assert.ok(w.isContiguous("channelsLast") && !w.isContiguous());
    assert.equal(w.requiresGrad, true);
    scope(() => {
      const x = randn([2, 3, 8, 8]);
      const conv = (b.at(0) as nn.Conv2d).forward(x.contiguous("channelsLast"));
      assert.ok(conv.isContiguous("channelsLast"), "conv output is channels-last");
      assert.ok(a.forward(x).allclose(b.forward(x.contiguous("channelsLast")), 1e-5, 1e-5));
    });
  } finally {
    a.dispose();
    b.dispose();
  }
});

test("layers compute what PyTorch computes on small known inputs", () => {
  scope(() => {
    const x = tensor([
      [
        [
          [1, 2, 3, 4],
          [5, 6, 7, 8],
          [9, 10, 11, 12],
          [13, 14, 15, 16],
        ],
      ],
    ]);
    assert.deepEqual(new nn.MaxPool2d(2).forward(x).tolist(), [
      [
        [
          [6, 8],
          [14, 16],
        ],
      ],
    ]);
    assert.deepEqual(new nn.AvgPool2d(2).forward(x).tolist(), [
      [
        [
          [3.5, 5.5],
          [11.5, 13.5],
        ],
      ],
    ]);
    assert.deepEqual(new nn.AdaptiveAvgPool2d(1).forward(x).tolist(), [[[[8.5]]]]);
    assert.deepEqual(new nn.MaxPool2d(3, { stride: 2, padding: 1 }).forward(x).shape, [1, 1, 2, 2]);
    assert.deepEqual(new nn.Flatten().forward(x).shape, [1, 16]);
    assert.equal(new nn.Identity().forward(x), x);
    const neg = tensor([-1, 2]);
    assert.deepEqual(new nn.ReLU().forward(neg).toArray(), [0, 2]);
    assert.deepEqual(neg.toArray(), [-1, 2], "not in place by default");
    new nn.ReLU(true).forward(neg);
    assert.deepEqual(neg.toArray(), [0, 2], "inplace");

    const conv = new nn.Conv2d(1, 1, 2, { stride: 2, bias: false });
    noGrad(() => conv.weight.fill_(1));
    assert.deepEqual(conv.forward(x).tolist(), [
      [
        [
          [14, 22],
          [46, 54],
        ],
      ],
    ]);
    const same = new nn.Conv2d(1, 2, 3, { padding: "same" });
    assert.deepEqual(same.forward(x).shape, [1, 2, 4, 4]);
    const grouped = new nn.Conv2d(4, 8, 3, { groups: 2, padding: 1 });
    assert.deepEqual(grouped.weight.shape, [8, 2, 3, 3]);
    assert.throws(() => new nn.Conv2d(3, 8, 3, { groups: 2 }), /inChannels \(3\) must be divisible by groups \(2\)/);
    assert.throws(() => conv.forward(zeros([1, 3, 4, 4])), /expected input with 1 channels/);

    const lin = new nn.Linear(2, 1);
    noGrad(() => {
      lin.weight.copy_(tensor([[2, -1]]));
      lin.bias!.fill_(0.5);
    });
    assert.deepEqual(lin.forward(tensor([[1, 3]])).tolist(), [[-0.5]]);
    assert.throws(() => lin.forward(zeros([1, 3])), /last dimension 2/);
    for (const m of [conv, same, grouped, lin]) m.dispose();
  });
});

test("withStashedWeights: a graph survives an in-place update of the weights and gives the gradient at the old ones", () => {
  const generator = new Generator(3);
  const net = smallNet(generator);
  try {
    scope(() => {
      const x = randn([4, 3, 8, 8], { generator });
      const gradsAt = (stash: boolean, update: boolean): number[][] => {
        for (const p of net.parameters()) p.grad = null;
        const y = stash ? nn.withStashedWeights(() => net.forward(x)) : net.forward(x);
        // An optimizer step between the forward and the backward (in place, as SGD's).
        if (update) noGrad(() => net.parameters().forEach((p) => p.add_(ones(p.shape), 0.5)));
        try {
          y.square().sum().backward();
        } finally {
          if (update) noGrad(() => net.parameters().forEach((p) => p.add_(ones(p.shape), -0.5)));
        }
        return net.parameters().map((p) => p.grad!.toArray());
      };
      const reference = gradsAt(false, false);
      // Without stashing, libtorch refuses the graph whose saved weights were modified.
      assert.throws(() => gradsAt(false, true), /modified by an inplace operation/);
      const stashed = gradsAt(true, true);
      stashed.forEach((g, i) =>
        g.forEach((v, j) => assert.ok(Math.abs(v - reference[i][j]) <= 1e-5 * Math.max(1, Math.abs(reference[i][j])))),
      );
    });
  } finally {
    net.dispose();
  }
});
