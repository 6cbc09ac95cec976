// Forward and backward of loco's functional ops against PyTorch 1.13 (test/oracle/ops.py).
// Both sides get identical inputs (through a safetensors file) and the same random upstream
// gradient; outputs, input gradients, weight gradients and updated running statistics must agree
// to 1e-4 relative error (with a 1e-6 absolute floor for values near zero; see helpers/assert.ts).
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  F,
  Generator,
  type Tensor,
  autograd,
  getNumThreads,
  keep,
  liveTensors,
  randint,
  randn,
  rand,
  scope,
  tensor,
} from "../src/torch";
import { oracleAvailable, oracleScript, runOracle } from "./helpers/oracle";
import { assertClose } from "./helpers/assert";

type Inputs = Record<string, Tensor>;

interface Case {
  name: string;
  op: string;
  params: Record<string, unknown>;
  /** Inputs to differentiate (made leaves with requiresGrad on both sides). */
  grad: string[];
  inputs: Inputs;
  /** loco's forward, on copies of the inputs. */
  run: (a: Inputs) => Tensor | Tensor[];
}

const gen = new Generator(20240601);
const normal = (...shape: number[]) => randn(shape, { generator: gen });
const uniform = (lo: number, hi: number, ...shape: number[]) =>
  rand(shape, { generator: gen })
    .mul(hi - lo)
    .add(lo);

const pair = (v: unknown) => v as number | [number, number];

function makeCases(): Case[] {
  const cases: Case[] = [];
  const add = (c: Omit<Case, "inputs"> & { inputs: Inputs }) => cases.push(c);

  // conv2d: stride, padding, groups, bias; and a case with asymmetric stride/padding, dilation, no bias.
  add({
    name: "conv_grouped",
    op: "conv2d",
    params: { stride: 2, padding: 1, groups: 2 },
    grad: ["x", "w", "b"],
    inputs: { x: normal(2, 4, 7, 7), w: normal(6, 2, 3, 3), b: normal(6) },
    run: (a) => F.conv2d(a.x, a.w, a.b, { stride: 2, padding: 1, groups: 2 }),
  });
  add({
    name: "conv_nobias",
    op: "conv2d",
    params: { stride: [1, 2], padding: [2, 1], dilation: 2 },
    grad: ["x", "w"],
    inputs: { x: normal(2, 3, 8, 9), w: normal(5, 3, 3, 2) },
    run: (a) => F.conv2d(a.x, a.w, null, { stride: [1, 2], padding: [2, 1], dilation: 2 }),
  });
  // batch_norm, train mode (running stats updated) and eval mode.
  for (const training of [true, false]) {
    add({
      name: training ? "bn_train" : "bn_eval",
      op: "batch_norm",
      params: { training, momentum: 0.1, eps: 1e-5 },
      grad: ["x", "weight", "bias"],
      inputs: {
        x: normal(4, 3, 5, 5).mul(2).add(0.5),
        weight: uniform(0.5, 1.5, 3),
        bias: normal(3),
        running_mean: normal(3),
        running_var: uniform(0.5, 2, 3),
      },
      run: (a) =>
        F.batchNorm(a.x, a.running_mean, a.running_var, {
          weight: a.weight,
          bias: a.bias,
          training,
          momentum: 0.1,
          eps: 1e-5,
        }),
    });
  }
  add({
    name: "linear2d",
    op: "linear",
    params: {},
    grad: ["x", "w", "b"],
    inputs: { x: normal(5, 7), w: normal(4, 7), b: normal(4) },
    run: (a) => F.linear(a.x, a.w, a.b),
  });
  add({
    name: "linear3d",
    op: "linear",
    params: {},
    grad: ["x", "w"],
    inputs: { x: normal(2, 3, 7), w: normal(4, 7) },
    run: (a) => F.linear(a.x, a.w),
  });
  add({
    name: "maxpool",
    op: "max_pool2d",
    params: { kernel: 3, stride: 2, padding: 1 },
    grad: ["x"],
    inputs: { x: normal(2, 3, 9, 9) },
    run: (a) => F.maxPool2d(a.x, 3, { stride: 2, padding: 1 }),
  });
  add({
    name: "maxpool_ceil",
    op: "max_pool2d",
    params: { kernel: [2, 3], stride: [2, 1], ceil_mode: true },
    grad: ["x"],
    inputs: { x: normal(1, 2, 7, 6) },
    run: (a) => F.maxPool2d(a.x, [2, 3], { stride: [2, 1], ceilMode: true }),
  });
  add({
    name: "avgpool",
    op: "avg_pool2d",
    params: { kernel: 3, stride: 2, padding: 1 },
    grad: ["x"],
    inputs: { x: normal(2, 3, 9, 9) },
    run: (a) => F.avgPool2d(a.x, 3, { stride: 2, padding: 1 }),
  });
  add({
    name: "avgpool_nopad",
    op: "avg_pool2d",
    params: { kernel: 2, stride: 2, padding: 1, ceil_mode: true, count_include_pad: false },
    grad: ["x"],
    inputs: { x: normal(2, 2, 7, 8) },
    run: (a) => F.avgPool2d(a.x, 2, { stride: 2, padding: 1, ceilMode: true, countIncludePad: false }),
  });
  for (const [name, size] of [
    ["adaptive_odd", [3, 4]],
    ["adaptive_global", 1],
  ] as const) {
    add({
      name,
      op: "adaptive_avg_pool2d",
      params: { size },
      grad: ["x"],
      inputs: { x: normal(2, 3, 7, 9) },
      run: (a) => F.adaptiveAvgPool2d(a.x, pair(size)),
    });
  }
  add({
    name: "ce_mean",
    op: "cross_entropy",
    params: {},
    grad: ["x"],
    inputs: { x: normal(6, 5).mul(3), target: randint(0, 5, [6], { generator: gen }) },
    run: (a) => F.crossEntropy(a.x, a.target),
  });
  add({
    name: "ce_smooth",
    op: "cross_entropy",
    params: { label_smoothing: 0.1 },
    grad: ["x"],
    inputs: { x: normal(8, 10).mul(2), target: randint(0, 10, [8], { generator: gen }) },
    run: (a) => F.crossEntropy(a.x, a.target, { labelSmoothing: 0.1 }),
  });
  add({
    name: "ce_weighted_ignore_sum",
    op: "cross_entropy",
    params: { reduction: "sum", ignore_index: 2, label_smoothing: 0.2 },
    grad: ["x"],
    inputs: {
      x: normal(7, 4),
      target: tensor([0, 2, 1, 3, 2, 1, 0], { dtype: "int64" }),
      weight: uniform(0.5, 2, 4),
    },
    run: (a) =>
      F.crossEntropy(a.x, a.target, { weight: a.weight, reduction: "sum", ignoreIndex: 2, labelSmoothing: 0.2 }),
  });
  add({
    name: "ce_spatial",
    op: "cross_entropy",
    params: { label_smoothing: 0.05 },
    grad: ["x"],
    inputs: { x: normal(2, 3, 4, 4), target: randint(0, 3, [2, 4, 4], { generator: gen }) },
    run: (a) => F.crossEntropy(a.x, a.target, { labelSmoothing: 0.05 }),
  });
  add({
    name: "lse",
    op: "logsumexp",
    params: { dim: 1 },
    grad: ["x"],
    inputs: { x: normal(4, 6).mul(5) },
    run: (a) => a.x.logsumexp(1),
  });
  add({
    name: "lse_multi",
    op: "logsumexp",
    params: { dim: [0, 2], keepdim: true },
    grad: ["x"],
    inputs: { x: normal(3, 4, 5) },
    run: (a) => a.x.logsumexp([0, 2], true),
  });
  for (const dim of [1, 0]) {
    add({
      name: `logsoftmax_d${dim}`,
      op: "log_softmax",
      params: { dim },
      grad: ["x"],
      inputs: { x: normal(4, 6).mul(3) },
      run: (a) => F.logSoftmax(a.x, dim),
    });
  }
  add({
    name: "normalize_l2",
    op: "normalize",
    params: { p: 2, dim: 1 },
    grad: ["x"],
    // The last row is all zeros: the norm is clamped to eps there.
    inputs: { x: F.pad(normal(5, 8), [0, 0, 0, 1]) },
    run: (a) => F.normalize(a.x, { p: 2, dim: 1 }),
  });
  add({
    name: "normalize_l1_d0",
    op: "normalize",
    params: { p: 1, dim: 0 },
    grad: ["x"],
    inputs: { x: normal(6, 3) },
    run: (a) => F.normalize(a.x, { p: 1, dim: 0 }),
  });
  // Grid sampling (the random-resized-crop of src/data/augment.ts), differentiable in input and grid;
  // the grid reaches past [-1, 1] so the padding modes matter.
  const gridCases: [string, F.GridSampleOptions, string[]][] = [
    ["grid_bilinear_zeros", { mode: "bilinear", paddingMode: "zeros", alignCorners: false }, ["x", "grid"]],
    ["grid_bilinear_border_corners", { mode: "bilinear", paddingMode: "border", alignCorners: true }, ["x", "grid"]],
    ["grid_nearest_reflection", { mode: "nearest", paddingMode: "reflection", alignCorners: false }, ["x"]],
  ];
  for (const [name, o, grad] of gridCases) {
    add({
      name,
      op: "grid_sample",
      params: { mode: o.mode, padding_mode: o.paddingMode, align_corners: o.alignCorners },
      grad,
      inputs: { x: normal(2, 3, 5, 6), grid: uniform(-1.2, 1.2, 2, 4, 3, 2) },
      run: (a) => F.gridSample(a.x, a.grid, o),
    });
  }
  // amax / amin: rounded values have ties, where the gradient is shared evenly.
  add({
    name: "amax_ties",
    op: "amax",
    params: { dim: [1], keepdim: false },
    grad: ["x"],
    inputs: { x: normal(4, 6).mul(2).round() },
    run: (a) => a.x.amax(1),
  });
  add({
    name: "amin_multi",
    op: "amin",
    params: { dim: [0, 2], keepdim: true },
    grad: ["x"],
    inputs: { x: normal(3, 4, 5) },
    run: (a) => a.x.amin([0, 2], true),
  });
  add({
    name: "fmod_scalar",
    op: "fmod",
    params: { other: 1.3 },
    grad: ["x"],
    inputs: { x: normal(4, 5).mul(3) },
    run: (a) => a.x.fmod(1.3),
  });
  add({
    name: "fmod_tensor",
    op: "fmod",
    params: {},
    grad: ["x"],
    inputs: { x: normal(4, 5).mul(3), y: uniform(0.5, 2, 4, 5) },
    run: (a) => a.x.fmod(a.y),
  });
  add({
    name: "scatter_add",
    op: "scatter_add",
    params: { dim: 0 },
    grad: ["x", "src"],
    inputs: { x: normal(3, 5), index: randint(0, 3, [4, 5], { generator: gen }), src: normal(4, 5) },
    run: (a) => a.x.scatterAdd(0, a.index, a.src),
  });
  add({
    name: "index_copy",
    op: "index_copy",
    params: { dim: 0 },
    grad: ["x", "src"],
    inputs: { x: normal(5, 3), index: tensor([3, 0], { dtype: "int64" }), src: normal(2, 3) },
    run: (a) => a.x.indexCopy(0, a.index, a.src),
  });
  // A vector-Jacobian product with two outputs, via autograd.grad (nothing may accumulate in .grad).
  add({
    name: "vjp",
    op: "vjp",
    params: {},
    grad: ["x", "w"],
    inputs: { x: normal(4, 3), w: normal(3, 5) },
    run: (a) => [a.x.matmul(a.w).tanh(), a.x.mul(a.x).sum(1)],
  });
  return cases;
}

interface Result {
  y: Tensor[];
  grads: Record<string, Tensor>;
  state: Record<string, Tensor>;
  untouched?: boolean;
}

// Upstream gradients, made once per case and shared with the oracle.
function upstream(c: Case): Tensor[] {
  const ys = scope(() => {
    const copies = Object.fromEntries(Object.entries(c.inputs).map(([k, v]) => [k, v.clone()]));
    const y = c.run(copies);
    return (Array.isArray(y) ? y : [y]).map((t) => t.shape);
  });
  return ys.map((shape) => normal(...shape));
}

function runLoco(c: Case, gs: Tensor[]): Result {
  const a: Inputs = {};
  for (const [k, v] of Object.entries(c.inputs)) {
    a[k] = v.clone();
    if (c.grad.includes(k)) a[k].requiresGrad_(true);
  }
  const out = c.run(a);
  const ys = Array.isArray(out) ? out : [out];
  const grads: Record<string, Tensor> = {};
  let untouched: boolean | undefined;
  if (c.op === "vjp") {
    const g = autograd.grad(
      ys,
      c.grad.map((k) => a[k]),
      gs,
    );
    c.grad.forEach((k, i) => (grads[k] = g[i]!));
    untouched = c.grad.every((k) => a[k].grad === null);
  } else {
    autograd.backward(ys, gs);
    for (const k of c.grad) {
      const g = a[k].grad;
      assert.ok(g !== null, `${c.name}: no gradient reached '${k}'`);
      grads[k] = g;
    }
  }
  const state: Record<string, Tensor> = {};
  for (const k of ["running_mean", "running_var"]) if (k in a) state[k] = a[k];
  return { y: ys.map((y) => y.detach()), grads, state, untouched };
}

const skip = !oracleAvailable() && "PyTorch (/usr/bin/python3 -c 'import torch') is not available";

describe("functional ops vs PyTorch 1.13 (forward and backward)", { skip }, () => {
  let cases: Case[] = [];
  const loco = new Map<string, Result>();
  let oracle: Record<string, Tensor> = {};
  let startLive = 0;

  before(() => {
    startLive = liveTensors();
    scope(() => {
      cases = makeCases();
      const inputs: Record<string, Tensor> = {};
      for (const c of cases) {
        const gs = upstream(c);
        for (const [k, v] of Object.entries(c.inputs)) inputs[`${c.name}.${k}`] = v;
        if (gs.length === 1) inputs[`${c.name}.g`] = gs[0];
        else gs.forEach((g, i) => (inputs[`${c.name}.g${i}`] = g));
        const r = runLoco(c, gs);
        for (const t of [...r.y, ...Object.values(r.grads), ...Object.values(r.state)]) keep(t);
        loco.set(c.name, r);
      }
      const meta = cases.map((c) => ({ name: c.name, op: c.op, params: c.params, grad: c.grad }));
      oracle = runOracle(oracleScript("ops.py"), inputs, [], { metadata: { cases: JSON.stringify(meta) } });
      for (const t of Object.values(oracle)) keep(t);
    });
  });

  after(() => {
    for (const r of loco.values())
      for (const t of [...r.y, ...Object.values(r.grads), ...Object.values(r.state)]) t.dispose();
    for (const t of Object.values(oracle)) t.dispose();
    assert.equal(liveTensors(), startLive, "the oracle test leaked tensors");
  });

  // One test per case, registered up front (the case list is static).
  const names = [
    "conv_grouped",
    "conv_nobias",
    "bn_train",
    "bn_eval",
    "linear2d",
    "linear3d",
    "maxpool",
    "maxpool_ceil",
    "avgpool",
    "avgpool_nopad",
    "adaptive_odd",
    "adaptive_global",
    "ce_mean",
    "ce_smooth",
    "ce_weighted_ignore_sum",
    "ce_spatial",
    "lse",
    "lse_multi",
    "logsoftmax_d1",
    "logsoftmax_d0",
    "normalize_l2",
    "normalize_l1_d0",
    "grid_bilinear_zeros",
    "grid_bilinear_border_corners",
    "grid_nearest_reflection",
    "amax_ties",
    "amin_multi",
    "fmod_scalar",
    "fmod_tensor",
    "scatter_add",
    "index_copy",
    "vjp",
  ];
  for (const name of names) {
    test(name, () => {
      const c = cases.find((x) => x.name === name);
      assert.ok(c, `case ${name} is not defined`);
      const r = loco.get(name)!;
      const opts = { rtol: 1e-4, atol: 1e-6 };
      if (r.y.length === 1) assertClose(r.y[0], oracle[`${name}.y`], { ...opts, name: `${name} forward` });
      else r.y.forEach((y, i) => assertClose(y, oracle[`${name}.y${i}`], { ...opts, name: `${name} forward[${i}]` }));
      for (const k of c.grad)
        assertClose(r.grads[k], oracle[`${name}.grad.${k}`], { ...opts, name: `${name} d/d${k}` });
      for (const [k, t] of Object.entries(r.state))
        assertClose(t, oracle[`${name}.${k}`], { ...opts, name: `${name} ${k}` });
      if (c.op === "vjp") {
        assert.equal(r.untouched, true, "autograd.grad must not accumulate into .grad");
        assert.equal(oracle[`${name}.grad_untouched`].item(), 1);
      }
    });
  }

  test("the case list and the test list agree", () => {
    assert.deepEqual(cases.map((c) => c.name).sort(), [...names].sort());
  });
});

describe("autograd semantics", () => {
  test("a second backward without retainGraph throws a clear error; with it, gradients accumulate", () => {
    scope(() => {
      const x = tensor([0.5, -1, 2]).requiresGrad_();
      const y = x.exp().sum();
      y.backward(undefined, { retainGraph: true });
      const first = x.grad!.toArray();
      y.backward(); // allowed: the graph was retained; frees it now
      const second = x.grad!.toArray();
      second.forEach((v, i) =>
        assert.ok(Math.abs(v - 2 * first[i]) < 1e-6, "gradients accumulate across backward calls"),
      );
      assert.throws(
        () => y.backward(),
        (e: Error) => {
          assert.ok(e instanceof Error);
          assert.match(e.message, /^backward: /);
          assert.match(e.message, /backward through the graph a second time/);
          assert.match(e.message, /retain_graph/);
          return true;
        },
      );
      // autograd.grad obeys the same rule.
      const z = x.exp().sum();
      autograd.grad([z], [x], [], { retainGraph: true });
      autograd.grad([z], [x]);
      assert.throws(() => autograd.grad([z], [x]), /autograd\.grad: .*second time/);
    });
  });

  test("autograd.grad with allowUnused returns null for unused inputs, and never touches .grad", () => {
    scope(() => {
      const x = tensor([1, 2, 3]).requiresGrad_();
      const unused = tensor([4]).requiresGrad_();
      const y = x.mul(x).sum();
      assert.throws(() => autograd.grad([y], [x, unused], [], { retainGraph: true }), /autograd\.grad: /);
      const [gx, gu] = autograd.grad([y], [x, unused], [], { allowUnused: true });
      assert.deepEqual(gx!.toArray(), [2, 4, 6]);
      assert.equal(gu, null);
      assert.equal(x.grad, null);
      assert.equal(unused.grad, null);
    });
  });
});

describe("test harness", () => {
  test("assertClose: relative error with an absolute floor, NaN/Inf handling, informative failures", () => {
    scope(() => {
      const e = tensor([1, 100, 0, -2e-7]);
      assertClose(tensor([1.00005, 100.009, 5e-7, 0]), e, { name: "ok" }); // rel 5e-5, 9e-5; abs 5e-7, 2e-7
      assert.throws(
        () => assertClose(tensor([1, 100.02, 0, 0]), e, { name: "logits" }),
        (err: Error) => {
          assert.match(err.message, /^logits: not close \(rtol 0\.0001, atol 0\.000001\)/);
          assert.match(err.message, /max abs err 2\.0\d*e-2, max rel err 2\.0\d*e-4/);
          assert.match(err.message, /worst at flat index 1: actual 100\.0\d+, expected 100/);
          return true;
        },
      );
      assertClose(tensor([NaN, Infinity]), tensor([NaN, Infinity]));
      assert.throws(() => assertClose(tensor([NaN]), tensor([1])), /not close/);
      assert.throws(() => assertClose(tensor([Infinity]), tensor([-Infinity])), /not close/);
      assert.throws(
        () => assertClose(tensor([1, 2]), tensor([[1, 2]]), { name: "s" }),
        /s: shape \[2\] != expected \[1,2\]/,
      );
      assertClose(tensor([1], { dtype: "float64" }), tensor([1]), { name: "dtypes may differ" });
    });
  });

  test("runOracle surfaces Python's stderr when the script fails", { skip }, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "loco-oracle-fail-"));
    try {
      const script = path.join(dir, "fail.py");
      fs.writeFileSync(script, 'import sys\nsys.stderr.write("custom failure detail\\n")\nsys.exit(3)\n');
      scope(() => {
        assert.throws(
          () => runOracle(script, { x: tensor([1]) }, ["--flag"]),
          /oracle fail\.py --flag failed \(exit 3\):\ncustom failure detail/,
        );
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("runOracle runs PyTorch with loco's thread count", { skip }, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "loco-oracle-threads-"));
    try {
      const script = path.join(dir, "threads.py");
      fs.writeFileSync(
        script,
        [
          "import sys",
          `sys.path.insert(0, ${JSON.stringify(path.dirname(oracleScript("st.py")))})`,
          "import torch",
          "from st import run",
          "run(lambda inputs, meta, args: {'threads': torch.tensor([torch.get_num_threads()]), 'x2': inputs['x'] * 2})",
        ].join("\n"),
      );
      scope(() => {
        const out = runOracle(script, { x: tensor([1.5]) });
        assert.equal(out.threads.item(), getNumThreads());
        assert.deepEqual(out.x2.toArray(), [3]);
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
