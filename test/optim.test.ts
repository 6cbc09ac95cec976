// Optimizers and schedules: SGD / Adam / AdamW against PyTorch (test/optim_oracle.py on
// /usr/bin/python3), LARS against a scalar re-implementation of SimCLR's rule and a hand-computed
// case, schedules, state-dict round trips, validation errors, and native-memory stability.
import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as path from "node:path";
import { fromTypedArray, randn, zeros } from "../src/torch/creation";
import { noGrad } from "../src/torch/autograd";
import { manualSeed } from "../src/torch/random";
import { scope } from "../src/torch/scope";
import { liveTensors, memoryStats } from "../src/torch/memory";
import type { Tensor } from "../src/torch/tensor";
import {
  Adam,
  AdamW,
  ConstantLR,
  LARS,
  LinearWarmupCosine,
  LRScheduler,
  type OptimizerStateDict,
  SGD,
  excludeBiasAndNorm,
  scaledLearningRate,
} from "../src/optim";

const ORACLE = path.join(__dirname, "..", "..", "test", "optim_oracle.py");
const PYTHON = "/usr/bin/python3";

// ---- deterministic data ----

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

function randomValues(next: () => number, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() * 2 - 1) * scale;
  return out;
}

/** Initial parameters and a gradient sequence; grads[s][i] null means "parameter i has no grad at step s". */
interface Problem {
  shapes: number[][];
  init: Float32Array[];
  grads: (Float32Array | null)[][];
}

function makeProblem(seed: number, shapes: number[][], steps: number, nullGrads: [number, number][] = []): Problem {
  const next = rng(seed);
  const init = shapes.map((s) => randomValues(next, numel(s)));
  const grads: (Float32Array | null)[][] = [];
  for (let s = 0; s < steps; s++) {
    // Shrinking then growing magnitudes, so amsgrad's running maximum matters.
    const scale = s < steps / 2 ? 1 / (1 + s) : 0.5 * s;
    grads.push(
      shapes.map((sh, i) =>
        nullGrads.some(([ss, pi]) => ss === s && pi === i) ? null : randomValues(next, numel(sh), scale),
      ),
    );
  }
  return { shapes, init, grads };
}

function makeParams(p: Problem): Tensor[] {
  return p.init.map((d, i) => fromTypedArray(Float32Array.from(d), p.shapes[i]).requiresGrad_(true));
}

function setGrads(params: Tensor[], grads: (Float32Array | null)[], shapes: number[][]): void {
  params.forEach((p, i) => {
    const g = grads[i];
    if (g === null) {
      p.grad = null;
    } else {
      const t = fromTypedArray(g, shapes[i]);
      p.grad = t;
      t.dispose();
    }
  });
}

const snapshot = (params: Tensor[]): Float32Array[] => params.map((p) => p.data() as Float32Array);

type GroupSpec = { params: number[] } & Record<string, unknown>;
type AnyOptimizer = SGD | Adam | AdamW | LARS;

/** Runs steps [from, to) of a problem on params with opt, returning the parameters after each step. */
function runSteps(opt: { step(): void }, params: Tensor[], p: Problem, from: number, to: number): Float32Array[][] {
  const out: Float32Array[][] = [];
  for (let s = from; s < to; s++) {
    setGrads(params, p.grads[s], p.shapes);
    opt.step();
    out.push(snapshot(params));
  }
  return out;
}

function groupsFor(params: Tensor[], specs: GroupSpec[]): ({ params: Tensor[] } & Record<string, unknown>)[] {
  return specs.map((g) => ({ ...g, params: g.params.map((i) => params[i]) }));
}

function disposeAll(ts: Tensor[]): void {
  for (const t of ts) t.dispose();
}

// ---- PyTorch oracle ----

const snake = (s: string): string => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const toPython = (o: Record<string, unknown>): Record<string, unknown> =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [snake(k), v]));

interface OracleCase {
  name: string;
  optimizer: "SGD" | "Adam" | "AdamW";
  defaults: Record<string, unknown>;
  groups: GroupSpec[];
  problem: Problem;
}

const SHAPES = [[3, 4], [4], [2, 3, 2]];
const ALL = [{ params: [0, 1, 2] }];

const oracleCases: OracleCase[] = [
  { name: "SGD plain", optimizer: "SGD", defaults: { lr: 0.1 }, groups: ALL, problem: makeProblem(1, SHAPES, 6) },
  {
    name: "SGD momentum + dampening",
    optimizer: "SGD",
    defaults: { lr: 0.05, momentum: 0.9, dampening: 0.1 },
    groups: ALL,
    problem: makeProblem(2, SHAPES, 6),
  },
  {
    name: "SGD nesterov + weight decay",
    optimizer: "SGD",
    defaults: { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0.01 },
    groups: ALL,
    problem: makeProblem(3, SHAPES, 6),
  },
  {
    name: "SGD weight decay, maximize",
    optimizer: "SGD",
    defaults: { lr: 0.1, weightDecay: 0.05, maximize: true },
    groups: ALL,
    problem: makeProblem(4, SHAPES, 6),
  },
  {
    name: "SGD two groups with overrides and missing grads",
    optimizer: "SGD",
    defaults: { lr: 0.1, momentum: 0.9 },
    groups: [{ params: [0, 2] }, { params: [1], lr: 0.01, momentum: 0.5, weightDecay: 0.1 }],
    problem: makeProblem(5, SHAPES, 6, [
      [0, 1],
      [3, 0],
      [4, 2],
    ]),
  },
  { name: "Adam", optimizer: "Adam", defaults: { lr: 0.01 }, groups: ALL, problem: makeProblem(6, SHAPES, 6) },
  {
    name: "Adam weight decay + amsgrad",
    optimizer: "Adam",
    defaults: { lr: 0.01, weightDecay: 0.1, amsgrad: true },
    groups: ALL,
    problem: makeProblem(7, SHAPES, 8),
  },
  {
    name: "Adam betas/eps, maximize, missing grads",
    optimizer: "Adam",
    defaults: { lr: 0.02, betas: [0.8, 0.95], eps: 1e-6, maximize: true },
    groups: ALL,
    problem: makeProblem(8, SHAPES, 6, [[2, 1]]),
  },
  {
    name: "AdamW",
    optimizer: "AdamW",
    defaults: { lr: 0.01, weightDecay: 0.1 },
    groups: ALL,
    problem: makeProblem(9, SHAPES, 6),
  },
  {
    name: "AdamW amsgrad, two groups",
    optimizer: "AdamW",
    defaults: { lr: 0.01, betas: [0.85, 0.99], amsgrad: true },
    groups: [{ params: [0] }, { params: [1, 2], lr: 0.003, weightDecay: 0 }],
    problem: makeProblem(10, SHAPES, 8),
  },
];

function makeOptimizer(
  kind: OracleCase["optimizer"],
  groups: ({ params: Tensor[] } & Record<string, unknown>)[],
  defaults: Record<string, unknown>,
) {
  // The specs are validated at run time by the optimizers themselves.
  switch (kind) {
    case "SGD":
      return new SGD(groups as never, defaults as never);
    case "Adam":
      return new Adam(groups as never, defaults as never);
    case "AdamW":
      return new AdamW(groups as never, defaults as never);
  }
}

function torchAvailable(): boolean {
  try {
    execFileSync(PYTHON, ["-c", "import torch"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

describe(
  "SGD, Adam, AdamW match torch.optim (PyTorch 1.13)",
  { skip: torchAvailable() ? false : `${PYTHON} has no torch` },
  () => {
    let oracle: { torch: string; results: { params: number[][][] }[] };
    before(() => {
      const request = {
        cases: oracleCases.map((c) => ({
          optimizer: c.optimizer,
          defaults: toPython(c.defaults),
          groups: c.groups.map(toPython),
          params: c.problem.init.map((d, i) => ({ shape: c.problem.shapes[i], data: Array.from(d) })),
          grads: c.problem.grads.map((step) => step.map((g) => (g === null ? null : Array.from(g)))),
        })),
      };
      const out = execFileSync(PYTHON, [ORACLE], { input: JSON.stringify(request), maxBuffer: 64 << 20 });
      oracle = JSON.parse(out.toString());
    });

    oracleCases.forEach((c, ci) => {
      test(c.name, (t) => {
        const params = makeParams(c.problem);
        const opt = makeOptimizer(c.optimizer, groupsFor(params, c.groups), c.defaults);
        const ours = runSteps(opt, params, c.problem, 0, c.problem.grads.length);
        const theirs = oracle.results[ci].params;
        let maxRel = 0;
        let identical = 0;
        let total = 0;
        ours.forEach((stepParams, s) =>
          stepParams.forEach((values, i) =>
            values.forEach((a, k) => {
              const b = theirs[s][i][k];
              const rel = Math.abs(a - b) / Math.max(Math.abs(b), 1e-3);
              maxRel = Math.max(maxRel, rel);
              total++;
              if (a === b) identical++;
              assert.ok(rel <= 1e-5, `${c.name}: step ${s + 1}, param ${i}[${k}]: loco ${a}, torch ${b}`);
            }),
          ),
        );
        t.diagnostic(
          `torch ${oracle.torch}: max relative difference ${maxRel.toExponential(2)}, ${identical}/${total} values bit-identical`,
        );
        opt.dispose();
        disposeAll(params);
      });
    });
  },
);

// ---- LARS ----

interface NaiveLarsGroup {
  lr: number;
  momentum: number;
  weightDecay: number;
  eta: number;
  nesterov: boolean;
  classicMomentum: boolean;
  excludeFromLars: boolean;
}

const norm = (v: ArrayLike<number>): number => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));

/** SimCLR's LARSOptimizer.apply_gradients for one parameter, in float64 scalars. */
function naiveLarsStep(w: number[], grad: ArrayLike<number>, v: number[], h: NaiveLarsGroup): void {
  const n = w.length;
  const g = Array.from(grad, (x, i) => (!h.excludeFromLars && h.weightDecay !== 0 ? x + h.weightDecay * w[i] : x));
  const trust = (u: number[]): number => {
    if (h.excludeFromLars) return 1;
    const wn = norm(w);
    const un = norm(u);
    return wn > 0 && un > 0 ? (h.eta * wn) / un : 1;
  };
  if (h.classicMomentum) {
    const scaledLr = h.lr * trust(g);
    for (let i = 0; i < n; i++) v[i] = h.momentum * v[i] + scaledLr * g[i];
    for (let i = 0; i < n; i++) w[i] -= h.nesterov ? h.momentum * v[i] + scaledLr * g[i] : v[i];
  } else {
    for (let i = 0; i < n; i++) v[i] = h.momentum * v[i] + g[i];
    const u = v.map((vi, i) => (h.nesterov ? h.momentum * vi + g[i] : vi));
    const scaledLr = h.lr * trust(u);
    for (let i = 0; i < n; i++) w[i] -= scaledLr * u[i];
  }
}

/**
 * Normwise relative comparison: |a − b| ≤ rtol·max(|b|, max_j |b_j|), so an element that a float32
 * run cancels to near zero is judged against the scale of its tensor, not its own tiny value.
 */
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let scale = 1e-3;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const b = expected[i];
    assert.ok(Math.abs(a - b) <= rtol * Math.max(Math.abs(b), scale), `${what}[${i}]: got ${a}, expected ${b}`);
  }
}

describe("LARS (SimCLR semantics)", () => {
  test("hand-computed case: trust ratio, weight decay inside the norm, excluded 1-D parameter", () => {
    const w = fromTypedArray(new Float32Array([3, 4]), [1, 2]).requiresGrad_(true); // ‖w‖ = 5
    const b = fromTypedArray(new Float32Array([1, -2]), [2]).requiresGrad_(true);
    const [regular, excluded] = excludeBiasAndNorm([
      ["fc.weight", w],
      ["fc.bias", b],
    ]);
    const opt = new LARS([regular, excluded], { lr: 1, momentum: 0.9, weightDecay: 0.1, eta: 0.001 });
    const gw = fromTypedArray(new Float32Array([0.6, 0.8]), [1, 2]);
    const gb = fromTypedArray(new Float32Array([0.5, 0.5]), [2]);
    for (let s = 0; s < 2; s++) {
      w.grad = gw;
      b.grad = gb;
      opt.step();
    }
    // Step 1: g' = g + 0.1·w = (0.9, 1.2), ‖g'‖ = 1.5, trust = 0.001·5/1.5 = 1/300,
    //   v = g'/300 = (0.003, 0.004), w = (2.997, 3.996).
    // Step 2: ‖w‖ = 4.995, g' = (0.8997, 1.1996), ‖g'‖ = 1.4995, trust·g' = 0.004995·(0.6, 0.8)
    //   = (0.002997, 0.003996); v = 0.9·(0.003, 0.004) + that = (0.005697, 0.007596);
    //   w = (2.991303, 3.988404).
    assertClose(w.data() as Float32Array, [2.991303, 3.988404], 1e-6, "w");
    assertClose(
      (opt.stateOf(w)?.momentum_buffer as Tensor).data() as Float32Array,
      [0.005697, 0.007596],
      1e-5,
      "w momentum",
    );
    // Excluded bias: plain momentum SGD without decay: v = 0.5, then 0.95; b = (1, -2) - 0.5 - 0.95.
    assertClose(b.data() as Float32Array, [-0.45, -3.45], 1e-6, "b");
    assertClose((opt.stateOf(b)?.momentum_buffer as Tensor).data() as Float32Array, [0.95, 0.95], 1e-6, "b momentum");
    opt.dispose();
    disposeAll([w, b, gw, gb]);
  });

  const variants: { name: string; h: Partial<NaiveLarsGroup> }[] = [
    { name: "classic momentum", h: {} },
    { name: "classic momentum, nesterov", h: { nesterov: true } },
    { name: "popular momentum", h: { classicMomentum: false } },
    { name: "popular momentum, nesterov", h: { classicMomentum: false, nesterov: true } },
  ];
  for (const variant of variants) {
    test(`matches a scalar re-implementation: ${variant.name}`, () => {
      const shapes = [[4, 3], [4], [4], [2, 2, 3], [3]];
      const names = ["conv.weight", "conv.bias", "bn.weight", "fc.weight", "zero.weight"];
      const problem = makeProblem(42, shapes, 7, [[2, 3]]);
      problem.init[4].fill(0); // ‖w‖ = 0: trust ratio 1
      problem.shapes[4] = [1, 3]; // 2-D, so it is not excluded
      const params = makeParams(problem);
      // A large η so the trust ratio moves the weights far (an error in it cannot hide in rounding).
      const base = { lr: 0.5, momentum: 0.9, weightDecay: 0.1, eta: 0.5, ...variant.h };
      const groups = excludeBiasAndNorm(names.map((n, i) => [n, params[i]] as [string, Tensor]));
      assert.deepEqual(
        groups[1].params.map((p) => params.indexOf(p)),
        [1, 2],
      );
      const opt = new LARS(groups, base);
      const full: NaiveLarsGroup = { nesterov: false, classicMomentum: true, excludeFromLars: false, ...base };
      const ws = problem.init.map((d) => Array.from(d));
      const vs = problem.init.map((d) => new Array<number>(d.length).fill(0));
      for (let s = 0; s < problem.grads.length; s++) {
        setGrads(params, problem.grads[s], problem.shapes);
        opt.step();
        problem.grads[s].forEach((g, i) => {
          if (g === null) return;
          const excluded = i === 1 || i === 2;
          naiveLarsStep(ws[i], g, vs[i], excluded ? { ...full, weightDecay: 0, excludeFromLars: true } : full);
        });
        params.forEach((p, i) => assertClose(p.data() as Float32Array, ws[i], 1e-5, `step ${s + 1} ${names[i]}`));
      }
      opt.dispose();
      disposeAll(params);
    });
  }

  test("excludeBiasAndNorm: groups, custom predicate, non-LARS use", () => {
    const w = zeros([2, 3]);
    const bias = zeros([2]);
    const bnw = zeros([2]);
    const named: [string, Tensor][] = [
      ["layer.weight", w],
      ["layer.bias", bias],
      ["bn.weight", bnw],
    ];
    const [reg, exc] = excludeBiasAndNorm(named);
    assert.deepEqual(reg, { params: [w] });
    assert.deepEqual(exc, { params: [bias, bnw], weightDecay: 0, excludeFromLars: true });
    const [, exc2] = excludeBiasAndNorm(named, { lars: false });
    assert.deepEqual(exc2, { params: [bias, bnw], weightDecay: 0 });
    const [reg3, exc3] = excludeBiasAndNorm(named, { exclude: (n) => n.startsWith("bn.") });
    assert.deepEqual([reg3.params, exc3.params], [[w, bias], [bnw]]);
    // Usable with SGD when built with lars: false; an unknown flag is an error there.
    const sgd = new SGD(excludeBiasAndNorm(named, { lars: false }), { lr: 0.1, weightDecay: 1e-4 });
    assert.deepEqual(
      sgd.paramGroups.map((g) => g.weightDecay),
      [1e-4, 0],
    );
    assert.throws(
      () => new SGD(excludeBiasAndNorm(named) as never, { lr: 0.1 }),
      /unknown hyperparameter 'excludeFromLars'/,
    );
    disposeAll([w, bias, bnw]);
  });
});

// ---- state dicts ----

function stateDictThroughJson(sd: OptimizerStateDict): OptimizerStateDict {
  return { tensors: sd.tensors, meta: JSON.parse(JSON.stringify(sd.meta)) };
}

describe("stateDict / loadStateDict", () => {
  const makers: { name: string; make: (groups: ({ params: Tensor[] } & Record<string, unknown>)[]) => AnyOptimizer }[] =
    [
      {
        name: "SGD nesterov",
        make: (g) => new SGD(g as never, { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3 }),
      },
      { name: "Adam amsgrad", make: (g) => new Adam(g as never, { lr: 0.01, amsgrad: true, weightDecay: 0.01 }) },
      { name: "AdamW", make: (g) => new AdamW(g as never, { lr: 0.01 }) },
      { name: "LARS", make: (g) => new LARS(g as never, { lr: 0.3, weightDecay: 1e-4, eta: 0.01 }) },
    ];
  const groupSpecs: GroupSpec[] = [{ params: [0, 2] }, { params: [1], weightDecay: 0 }];

  for (const { name, make } of makers) {
    test(`${name}: 3 steps + save + fresh optimizer + load + 2 steps == 5 steps, bit for bit`, () => {
      // missing gradient for parameter 1 at step 0: its state starts later than the others'
      const problem = makeProblem(77, SHAPES, 5, [[0, 1]]);
      const straightParams = makeParams(problem);
      const straight = make(groupsFor(straightParams, groupSpecs));
      const expected = runSteps(straight, straightParams, problem, 0, 3);
      straight.paramGroups[1].lr = 0.004; // a hyperparameter change travels with the state dict
      expected.push(...runSteps(straight, straightParams, problem, 3, 5));

      const params = makeParams(problem);
      const first = make(groupsFor(params, groupSpecs));
      runSteps(first, params, problem, 0, 3);
      first.paramGroups[1].lr = 0.004;
      const saved = first.stateDict({ clone: true });
      first.dispose();
      assert.equal(saved.meta.optimizer, first.name);
      assert.deepEqual(
        saved.meta.param_groups.map((g) => g.params),
        [[0, 1], [2]],
      );
      for (const key of saved.tensors.keys()) assert.match(key, /^state\.\d+\.[a-z_]+$/);

      const second = make(groupsFor(params, groupSpecs));
      second.loadStateDict(stateDictThroughJson(saved));
      assert.equal(second.paramGroups[1].lr, 0.004);
      disposeAll([...saved.tensors.values()]); // the optimizer copied them
      const resumed = runSteps(second, params, problem, 3, 5);
      assert.deepEqual(resumed[1], expected[4]);
      assert.deepEqual(resumed[0], expected[3]);
      second.dispose();
      straight.dispose();
      disposeAll([...straightParams, ...params]);
    });
  }

  test("meta is PyTorch-shaped: snake_case hyperparameters, step counts by index", () => {
    const problem = makeProblem(5, SHAPES, 2, [[0, 2]]);
    const params = makeParams(problem);
    const opt = new Adam(groupsFor(params, [{ params: [0, 1] }, { params: [2], lr: 0.5 }]) as never, {
      weightDecay: 0.1,
    });
    runSteps(opt, params, problem, 0, 2);
    const sd = opt.stateDict();
    assert.deepEqual(sd.meta, {
      optimizer: "Adam",
      state: { "0": { step: 2 }, "1": { step: 2 }, "2": { step: 1 } },
      param_groups: [
        {
          lr: 1e-3,
          betas: [0.9, 0.999],
          eps: 1e-8,
          weight_decay: 0.1,
          amsgrad: false,
          maximize: false,
          params: [0, 1],
        },
        { lr: 0.5, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.1, amsgrad: false, maximize: false, params: [2] },
      ],
    });
    assert.deepEqual([...sd.tensors.keys()].sort(), [
      "state.0.exp_avg",
      "state.0.exp_avg_sq",
      "state.1.exp_avg",
      "state.1.exp_avg_sq",
      "state.2.exp_avg",
      "state.2.exp_avg_sq",
    ]);
    // Without clone the map holds the optimizer's own tensors.
    assert.equal(sd.tensors.get("state.0.exp_avg"), opt.stateOf(params[0])?.exp_avg);
    opt.dispose();
    disposeAll(params);
  });

  test("loading validates counts, shapes, keys and the optimizer class with clear errors", () => {
    const problem = makeProblem(9, SHAPES, 1);
    const params = makeParams(problem);
    const opt = new SGD(params, { lr: 0.1, momentum: 0.9 });
    runSteps(opt, params, problem, 0, 1);
    const sd = opt.stateDict();
    const meta = () => JSON.parse(JSON.stringify(sd.meta));

    const other = makeParams(problem);
    const fresh = new SGD(other, { lr: 0.1, momentum: 0.9 });
    const twoGroups = new SGD([{ params: [other[0]] }, { params: [other[1], other[2]] }], { lr: 0.1, momentum: 0.9 });
    assert.throws(() => twoGroups.loadStateDict(sd), /state dict has 1 parameter groups, the optimizer has 2/);
    const fewer = new SGD(other.slice(0, 2), { lr: 0.1, momentum: 0.9 });
    assert.throws(
      () => fewer.loadStateDict(sd),
      /parameter group 0 has 3 parameters in the state dict, 2 in the optimizer/,
    );
    assert.throws(() => new Adam(other).loadStateDict(sd), /saved by SGD, not Adam/);
    const wrongShape = new Map(sd.tensors);
    const bad = zeros([4, 3]);
    wrongShape.set("state.0.momentum_buffer", bad);
    assert.throws(
      () => fresh.loadStateDict({ tensors: wrongShape, meta: meta() }),
      /state tensor 'state.0.momentum_buffer' has shape \[4, 3\], but parameter 0 has shape \[3, 4\]/,
    );
    const unknownIndex = new Map(sd.tensors);
    unknownIndex.set("state.7.momentum_buffer", bad);
    assert.throws(
      () => fresh.loadStateDict({ tensors: unknownIndex, meta: meta() }),
      /refers to parameter 7, which no group lists/,
    );
    const badKey = new Map(sd.tensors);
    badKey.set("momentum", bad);
    assert.throws(() => fresh.loadStateDict({ tensors: badKey, meta: meta() }), /unexpected tensor key 'momentum'/);
    const badHyper = meta();
    badHyper.param_groups[0].lr = "fast";
    assert.throws(
      () => fresh.loadStateDict({ tensors: sd.tensors, meta: badHyper }),
      /param_groups\[0\]\.lr must be of the same kind/,
    );
    const unknownHyper = meta();
    unknownHyper.param_groups[0].betas = [0.9, 0.99];
    assert.throws(
      () => fresh.loadStateDict({ tensors: sd.tensors, meta: unknownHyper }),
      /unknown hyperparameter 'betas'/,
    );
    const unknownState = new Map(sd.tensors);
    unknownState.set("state.1.exp_avg", zeros([4]));
    assert.throws(
      () => fresh.loadStateDict({ tensors: unknownState, meta: meta() }),
      /unknown state tensor 'exp_avg' for parameter 1 \(SGD keeps: momentum_buffer\)/,
    );
    unknownState.get("state.1.exp_avg")?.dispose();
    // Adam: a step count without its moments is incomplete.
    const adam = new Adam(other);
    assert.throws(
      () =>
        adam.loadStateDict({
          tensors: new Map(),
          meta: {
            optimizer: "Adam",
            state: { "0": { step: 3 } },
            param_groups: adam.stateDict().meta.param_groups,
          },
        }),
      /the state of parameter 0 lacks exp_avg, exp_avg_sq/,
    );
    adam.dispose();
    // A failed load changes nothing; a good one works.
    assert.equal(fresh.stateOf(other[0]), undefined);
    fresh.loadStateDict(sd);
    assert.deepEqual(
      (fresh.stateOf(other[0])?.momentum_buffer as Tensor).data(),
      (opt.stateOf(params[0])?.momentum_buffer as Tensor).data(),
    );
    for (const o of [opt, fresh, twoGroups, fewer]) o.dispose();
    disposeAll([...params, ...other, bad]);
  });
});

// ---- construction, zeroGrad, dispose ----

describe("SGD's reused gradient buffer", () => {
  /** PyTorch's SGD rule with an allocating op for every intermediate (what step() computed before). */
  function referenceStep(p: Tensor, g: Tensor, buf: Tensor | null, h: Record<string, number | boolean>): Tensor {
    return noGrad(() =>
      scope(() => {
        let d = h.maximize ? g.neg() : g;
        d = d.add(p, h.weightDecay as number);
        const m = h.momentum as number;
        let b = buf;
        if (b === null) b = d.clone();
        else b.mul_(m).add_(d, 1 - (h.dampening as number));
        d = h.nesterov ? d.add(b, m) : b;
        p.add_(d, -(h.lr as number));
        return b;
      }),
    );
  }

  const configs: Record<string, number | boolean>[] = [
    { lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 0.01, nesterov: true, maximize: true },
    { lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 0.01, nesterov: false, maximize: false },
  ];
  configs.forEach((h, ci) => {
    test(`bit-identical to allocating ops for channels-last, non-dense and later, larger parameters (config ${ci})`, () => {
      const live = liveTensors();
      scope(() => runConfig(ci, h)); // frees the test's own tensors (gradient handles included)
      assert.equal(liveTensors(), live, "no tensor left behind, the buffer included");
    });
  });

  function runConfig(ci: number, h: Record<string, number | boolean>): void {
    manualSeed(ci);
    const leaf = (t: Tensor): Tensor => noGrad(() => t.detach()).requiresGrad_(true);
    // A channels-last conv weight, a transposed (non-contiguous: the allocating path) matrix, a
    // bias; a group with a larger parameter joins after the first step (the buffer grows).
    const make = (): Tensor[] => [
      leaf(randn([4, 3, 3, 3]).contiguous("channelsLast")),
      leaf(randn([6, 5]).t()),
      leaf(randn([4])),
      leaf(randn([40, 30])),
    ];
    const ours = make();
    manualSeed(ci);
    const ref = make();
    const grads = Array.from({ length: 4 }, () => ours.map((p) => randn(p.shape)));
    const opt = new SGD(ours.slice(0, 3), h as never);
    const bufs: (Tensor | null)[] = ref.map(() => null);
    grads.forEach((gs, step) => {
      if (step === 1) opt.addParamGroup({ params: [ours[3]] });
      const active = step === 0 ? 3 : 4;
      for (let i = 0; i < active; i++) ours[i].grad = gs[i];
      const before = gs.map((g) => g.data());
      opt.step();
      for (let i = 0; i < active; i++) {
        const b = referenceStep(ref[i], gs[i], bufs[i], h);
        if (bufs[i] === null) bufs[i] = b;
        assert.deepEqual(ours[i].data(), ref[i].data(), `step ${step + 1}, parameter ${i}`);
        assert.deepEqual(ours[i].grad!.data(), before[i], `step ${step + 1}: parameter ${i}'s gradient untouched`);
      }
    });
    for (const p of ours) p.dispose(); // parameters may go before their optimizer (the trainer's order)
    opt.dispose();
    for (const b of bufs) b?.dispose(); // kept by referenceStep's scope (returned), freed here
  }
});

describe("Optimizer basics", () => {
  test("parameter groups: defaults, overrides, validation errors", () => {
    const a = zeros([2, 2], { requiresGrad: true });
    const b = zeros([2], { requiresGrad: true });
    const opt = new SGD([{ params: [a] }, { params: [b], lr: 0.01, nesterov: true, momentum: 0.9 }], { lr: 0.1 });
    assert.equal(opt.paramGroups[0].lr, 0.1);
    assert.equal(opt.paramGroups[0].momentum, 0);
    assert.equal(opt.paramGroups[1].lr, 0.01);
    assert.equal(opt.paramGroups[1].nesterov, true);
    assert.deepEqual(opt.parameters(), [a, b]);
    assert.throws(() => new SGD([], { lr: 0.1 }), /empty parameter list/);
    assert.throws(() => new SGD([{ params: [a] }, { params: [a] }], { lr: 0.1 }), /more than one parameter group/);
    assert.throws(() => new SGD([a], { lr: -1 }), /SGD: lr must be a finite number >= 0, got -1/);
    assert.throws(() => new SGD([a], { lr: 0.1, nesterov: true }), /nesterov momentum requires momentum > 0/);
    assert.throws(() => new Adam([a], { betas: [0.9, 1] }), /betas\[1\] must be in \[0, 1\)/);
    assert.throws(
      () => new SGD([{ params: [a], weight_decay: 0.1 } as never], { lr: 0.1 }),
      /unknown hyperparameter 'weight_decay'/,
    );
    assert.throws(() => new SGD([{ params: [a], lr: "0.1" } as never], { lr: 0.1 }), /'lr' must be of the same kind/);
    opt.paramGroups[0].lr = -3;
    assert.throws(() => opt.step(), /lr must be a finite number >= 0/);
    opt.dispose();
    disposeAll([a, b]);
  });

  test("zeroGrad sets gradients to null (or zeroes them); dispose frees state and blocks reuse", () => {
    const p = zeros([3], { requiresGrad: true });
    const g = fromTypedArray(new Float32Array([1, 2, 3]));
    p.grad = g;
    const opt = new SGD([p], { lr: 0.1, momentum: 0.9 });
    opt.step();
    opt.zeroGrad(false);
    const zeroed = p.grad as Tensor | null;
    assert.deepEqual((zeroed as Tensor).toArray(), [0, 0, 0]);
    zeroed?.dispose();
    opt.zeroGrad();
    assert.equal(p.grad, null);
    const before = liveTensors();
    opt.dispose();
    assert.equal(liveTensors(), before - 1); // the momentum buffer
    assert.throws(() => opt.step(), /used after dispose/);
    disposeAll([p, g]);
  });
});

// ---- memory ----

describe("native memory", () => {
  const makers: [string, (ps: Tensor[]) => { step(): void; dispose(): void }][] = [
    ["SGD nesterov", (ps) => new SGD(ps, { lr: 0.01, momentum: 0.9, nesterov: true, weightDecay: 1e-4 })],
    ["Adam amsgrad", (ps) => new Adam(ps, { amsgrad: true, weightDecay: 1e-4 })],
    ["AdamW", (ps) => new AdamW(ps)],
    [
      "LARS",
      (ps) =>
        new LARS(excludeBiasAndNorm(ps.map((p, i) => [`p${i}`, p] as [string, Tensor])), {
          lr: 0.1,
          weightDecay: 1e-6,
        }),
    ],
  ];
  for (const [name, make] of makers) {
    test(`${name}: 100 steps keep liveTensors() and bytes constant after the first step`, () => {
      const problem = makeProblem(3, [[16, 8], [16], [4, 4, 3, 3]], 1);
      const params = makeParams(problem);
      setGrads(params, problem.grads[0], problem.shapes);
      const start = liveTensors();
      const opt = make(params);
      opt.step();
      const afterFirst = liveTensors();
      const bytesAfterFirst = memoryStats().currentBytes;
      for (let i = 1; i < 100; i++) opt.step();
      assert.equal(liveTensors(), afterFirst);
      assert.equal(memoryStats().currentBytes, bytesAfterFirst);
      opt.dispose();
      assert.equal(liveTensors(), start);
      disposeAll(params);
    });
  }
});

// ---- schedules ----

describe("schedules", () => {
  test("LinearWarmupCosine: warmup start/end, cosine midpoint, end", () => {
    const s = new LinearWarmupCosine({ warmupSteps: 10, totalSteps: 110, baseLr: 1.2, finalLr: 0.2 });
    assert.equal(s.lrAt(0), 0);
    assert.ok(Math.abs(s.lrAt(5) - 0.6) < 1e-12);
    assert.equal(s.lrAt(10), 1.2);
    assert.ok(Math.abs(s.lrAt(60) - 0.7) < 1e-12); // (base + final) / 2
    assert.ok(Math.abs(s.lrAt(35) - (0.2 + 0.5 * (1 + Math.cos(Math.PI / 4)))) < 1e-12);
    assert.ok(Math.abs(s.lrAt(110) - 0.2) < 1e-12);
    assert.equal(s.lrAt(500), 0.2);
    for (let i = 11; i <= 110; i++) assert.ok(s.lrAt(i) <= s.lrAt(i - 1), "monotone decay");
    const f = new LinearWarmupCosine({ warmupSteps: 4, totalSteps: 8, baseLr: 1, warmupStartFactor: 0.2 });
    assert.ok(Math.abs(f.lrAt(0) - 0.2) < 1e-12);
    assert.ok(Math.abs(f.lrAt(2) - 0.6) < 1e-12);
    assert.ok(Math.abs(f.lrAt(8)) < 1e-12);
    const noWarmup = new LinearWarmupCosine({ warmupSteps: 0, totalSteps: 100, baseLr: 0.5 });
    assert.equal(noWarmup.lrAt(0), 0.5);
    assert.ok(Math.abs(noWarmup.lrAt(50) - 0.25) < 1e-12);
    assert.throws(
      () => new LinearWarmupCosine({ warmupSteps: 10, totalSteps: 5, baseLr: 1 }),
      /totalSteps must be an integer >= warmupSteps/,
    );
  });

  test("LRScheduler sets group learning rates; state dict round trip; per-group schedules", () => {
    const a = zeros([2], { requiresGrad: true });
    const b = zeros([2], { requiresGrad: true });
    const opt = new SGD([{ params: [a] }, { params: [b] }], { lr: 99 });
    const schedule = new LinearWarmupCosine({ warmupSteps: 4, totalSteps: 12, baseLr: 0.8 });
    const sched = new LRScheduler(opt, schedule);
    assert.deepEqual(sched.lrs, [0, 0]);
    sched.step();
    sched.step();
    assert.equal(sched.stepCount, 2);
    assert.deepEqual(sched.lrs, [0.4, 0.4]);
    const saved = JSON.parse(JSON.stringify(sched.stateDict()));
    const opt2 = new SGD([{ params: [a] }, { params: [b] }], { lr: 99 });
    const sched2 = new LRScheduler(opt2, schedule);
    sched2.loadStateDict(saved);
    assert.deepEqual(sched2.lrs, [0.4, 0.4]);
    for (let i = 0; i < 6; i++) {
      sched.step();
      sched2.step();
    }
    assert.deepEqual(sched2.lrs, sched.lrs);
    assert.ok(Math.abs(sched.lrs[0] - 0.4) < 1e-12); // step 8: cosine midpoint
    const perGroup = new LRScheduler(opt2, [schedule, new ConstantLR(0.01)]);
    assert.deepEqual(perGroup.lrs, [0, 0.01]);
    assert.throws(() => new LRScheduler(opt2, [schedule]), /1 schedules for 2 parameter groups/);
    opt.dispose();
    opt2.dispose();
    disposeAll([a, b]);
  });

  test("scaledLearningRate: SimCLR's linear and sqrt scaling", () => {
    assert.equal(scaledLearningRate(0.3, 4096), 4.8);
    assert.equal(scaledLearningRate(0.3, 256, "linear"), 0.3);
    assert.ok(Math.abs(scaledLearningRate(0.075, 4096, "sqrt") - 4.8) < 1e-12);
    assert.ok(Math.abs(scaledLearningRate(0.075, 512, "sqrt") - 0.075 * Math.sqrt(512)) < 1e-15);
    assert.throws(() => scaledLearningRate(0.3, 0), /batchSize must be a positive integer/);
    assert.throws(() => scaledLearningRate(0.3, 256, "log" as never), /scaling must be "linear" or "sqrt"/);
  });
});
