// Breadth checks of the tensor engine against known values: creation, views and shape ops, math,
// reductions, in-place ops, random generators, grad mode, scopes, memory gauges, threads, workers.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { PerformanceObserver, constants as perfConstants } from "node:perf_hooks";
import { Worker } from "node:worker_threads";
import {
  type Tensor,
  Generator,
  arange,
  cat,
  empty,
  emptyCache,
  enableGrad,
  eye,
  fromTypedArray,
  full,
  getNumThreads,
  isGradEnabled,
  keep,
  linspace,
  liveTensors,
  manualSeed,
  memoryStats,
  noGrad,
  ones,
  rand,
  randint,
  randn,
  randperm,
  resetPeakMemory,
  collectGarbage,
  scalarTensor,
  scope,
  scopeDepth,
  setNumThreads,
  stack,
  tensor,
  where,
  zeros,
  zerosLike,
  defaultGenerator,
} from "../src/torch";
import * as torch from "../src/torch";
import * as nn from "../src/nn";

const close = (a: number[], b: number[], tol = 1e-6, msg = "") => {
  assert.equal(a.length, b.length, `${msg} length`);
  a.forEach((v, i) =>
    assert.ok(Math.abs(v - b[i]) <= tol * Math.max(1, Math.abs(b[i])), `${msg}[${i}]: ${v} vs ${b[i]}`),
  );
};

/** Every test runs in a scope and checks that it leaves no tensor behind. */
function leakFree(name: string, fn: () => void): void {
  test(name, () => {
    const start = liveTensors();
    scope(fn);
    assert.equal(liveTensors(), start, `${name}: leaked tensors`);
  });
}

describe("creation", () => {
  leakFree("zeros, ones, full, empty, eye, linspace, scalarTensor", () => {
    const z = zeros([2, 3]);
    assert.deepEqual(z.shape, [2, 3]);
    assert.equal(z.dtype, "float32");
    assert.deepEqual(z.toArray(), [0, 0, 0, 0, 0, 0]);
    assert.deepEqual(ones([2], { dtype: "int32" }).toArray(), [1, 1]);
    assert.equal(ones([2], { dtype: "int32" }).dtype, "int32");
    const f = full([2, 2], 7.5);
    assert.deepEqual(f.tolist(), [
      [7.5, 7.5],
      [7.5, 7.5],
    ]);
    assert.equal(full([1], 3, { dtype: "int64" }).dtype, "int64");
    assert.deepEqual(empty([4, 0]).shape, [4, 0]);
    assert.deepEqual(eye(3).tolist(), [
      [1, 0, 0],
      [0, 1, 0],
      [0, 0, 1],
    ]);
    close(linspace(0, 1, 5).toArray(), [0, 0.25, 0.5, 0.75, 1]);
    const s = scalarTensor(4);
    assert.deepEqual(s.shape, []);
    assert.equal(s.item(), 4);
    assert.equal(zeros([2], { requiresGrad: true }).requiresGrad, true);
    assert.deepEqual(zerosLike(f).shape, [2, 2]);
  });

  leakFree("arange: integer arguments give int64, fractional float32", () => {
    const a = arange(5);
    assert.equal(a.dtype, "int64");
    assert.deepEqual(a.toArray(), [0, 1, 2, 3, 4]);
    assert.deepEqual(arange(2, 11, 3).toArray(), [2, 5, 8]);
    assert.deepEqual(arange(3, 0, -1).toArray(), [3, 2, 1]);
    const b = arange(0, 1, 0.25);
    assert.equal(b.dtype, "float32");
    assert.deepEqual(b.toArray(), [0, 0.25, 0.5, 0.75]);
    assert.equal(arange(0, 4, 1, { dtype: "float64" }).dtype, "float64");
  });

  leakFree("tensor() and fromTypedArray: dtypes, shapes, values", () => {
    const t = tensor([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    assert.deepEqual(t.shape, [2, 3]);
    assert.equal(t.dtype, "float32");
    assert.deepEqual(t.tolist(), [
      [1, 2, 3],
      [4, 5, 6],
    ]);
    assert.equal(tensor([true, false]).dtype, "bool");
    assert.deepEqual(tensor([1.5, -2], { dtype: "int64" }).toArray(), [1, -2]);
    assert.deepEqual(tensor([0.1], { dtype: "float64" }).toArray(), [0.1]);
    const u = fromTypedArray(new Uint8Array([1, 0, 1]), [3], { dtype: "bool" });
    assert.equal(u.dtype, "bool");
    const g = fromTypedArray(new Float64Array([1, 2, 3, 4, 5, 6]), [3, 2]);
    assert.equal(g.dtype, "float64");
    assert.deepEqual(g.tolist(), [
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    assert.deepEqual(fromTypedArray(new Int32Array([7, 8])).data(), new Int32Array([7, 8]));
    assert.throws(() => fromTypedArray(new Float32Array(5), [2, 2]), /5 values cannot fill shape \[2, 2\]/);
    assert.equal(String(t), "Tensor(shape=[2, 3], dtype=float32)");
  });

  leakFree("rand in [0, 1), randn ~ N(0, 1), randint in [low, high), randperm a permutation", () => {
    const r = rand([20000]);
    assert.ok(r.min().item() >= 0 && r.max().item() < 1);
    assert.ok(Math.abs(r.mean().item() - 0.5) < 0.01);
    const n = randn([20000], { dtype: "float64" });
    assert.equal(n.dtype, "float64");
    assert.ok(Math.abs(n.mean().item()) < 0.03, `mean ${n.mean().item()}`);
    assert.ok(Math.abs(n.std().item() - 1) < 0.03, `std ${n.std().item()}`);
    const k = randint(-3, 4, [5000]);
    assert.equal(k.dtype, "int64");
    assert.equal(k.min().item(), -3);
    assert.equal(k.max().item(), 3);
    const p = randperm(10);
    assert.deepEqual(p.sort().values.toArray(), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});

describe("shapes and views", () => {
  leakFree("reshape, view, flatten, permute, transpose, squeeze, unsqueeze", () => {
    const x = arange(24).reshape(2, 3, 4);
    assert.deepEqual(x.shape, [2, 3, 4]);
    assert.deepEqual(x.reshape([4, -1]).shape, [4, 6]);
    assert.ok(x.view(6, 4).isAliasOf(x));
    assert.deepEqual(x.flatten().shape, [24]);
    assert.deepEqual(x.flatten(1).shape, [2, 12]);
    const p = x.permute(2, 0, 1);
    assert.deepEqual(p.shape, [4, 2, 3]);
    assert.deepEqual(p.strides, [1, 12, 4]);
    assert.equal(p.isContiguous(), false);
    assert.deepEqual(p.contiguous().select(0, 1).tolist(), [
      [1, 5, 9],
      [13, 17, 21],
    ]);
    const t = x.transpose(0, 2);
    assert.deepEqual(t.shape, [4, 3, 2]);
    assert.equal(t.select(0, 3).select(0, 2).select(0, 1).item(), 23);
    assert.deepEqual(
      tensor([
        [1, 2],
        [3, 4],
      ])
        .t()
        .tolist(),
      [
        [1, 3],
        [2, 4],
      ],
    );
    const s = zeros([1, 3, 1, 2]);
    assert.deepEqual(s.squeeze().shape, [3, 2]);
    assert.deepEqual(s.squeeze(2).shape, [1, 3, 2]);
    assert.deepEqual(s.unsqueeze(-1).shape, [1, 3, 1, 2, 1]);
    assert.deepEqual(s.unsqueeze(0).shape, [1, 1, 3, 1, 2]);
  });

  leakFree("narrow, select, slice, indexSelect, gather, index", () => {
    const x = arange(12).reshape(3, 4);
    assert.deepEqual(x.narrow(1, 1, 2).tolist(), [
      [1, 2],
      [5, 6],
      [9, 10],
    ]);
    assert.ok(x.narrow(0, 1, 1).isAliasOf(x));
    assert.deepEqual(x.select(1, 3).toArray(), [3, 7, 11]);
    assert.deepEqual(x.slice(1, 0, 4, 2).tolist(), [
      [0, 2],
      [4, 6],
      [8, 10],
    ]);
    const idx = tensor([2, 0], { dtype: "int64" });
    assert.deepEqual(x.indexSelect(0, idx).tolist(), [
      [8, 9, 10, 11],
      [0, 1, 2, 3],
    ]);
    assert.deepEqual(x.indexSelect(1, idx).tolist(), [
      [2, 0],
      [6, 4],
      [10, 8],
    ]);
    const g = tensor(
      [
        [3, 0],
        [1, 1],
        [0, 2],
      ],
      { dtype: "int64" },
    );
    assert.deepEqual(x.gather(1, g).tolist(), [
      [3, 0],
      [5, 5],
      [8, 10],
    ]);
    assert.deepEqual(x.index([idx]).tolist(), [
      [8, 9, 10, 11],
      [0, 1, 2, 3],
    ]);
    assert.deepEqual(x.index([null, idx]).tolist(), [
      [2, 0],
      [6, 4],
      [10, 8],
    ]);
  });

  leakFree("cat, stack, chunk, split, expand, repeat, flip", () => {
    const a = tensor([[1, 2]]);
    const b = tensor([
      [3, 4],
      [5, 6],
    ]);
    assert.deepEqual(cat([a, b]).tolist(), [
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    assert.deepEqual(cat([b, b], 1).shape, [2, 4]);
    const s = stack([tensor([1, 2]), tensor([3, 4])], 1);
    assert.deepEqual(s.tolist(), [
      [1, 3],
      [2, 4],
    ]);
    const chunks = arange(7).chunk(3);
    assert.deepEqual(
      chunks.map((c) => c.toArray()),
      [[0, 1, 2], [3, 4, 5], [6]],
    );
    assert.ok(chunks[1].isAliasOf(chunks[0]));
    assert.deepEqual(
      arange(5)
        .split([2, 3])
        .map((c) => c.toArray()),
      [
        [0, 1],
        [2, 3, 4],
      ],
    );
    assert.deepEqual(
      arange(5)
        .split(2)
        .map((c) => c.shape[0]),
      [2, 2, 1],
    );
    const e = tensor([[1], [2]]).expand(2, 3);
    assert.deepEqual(e.tolist(), [
      [1, 1, 1],
      [2, 2, 2],
    ]);
    assert.deepEqual(e.strides, [1, 0]);
    assert.deepEqual(tensor([1, 2]).repeat(2).toArray(), [1, 2, 1, 2]);
    assert.deepEqual(tensor([1, 2, 3]).flip([0]).toArray(), [3, 2, 1]);
  });

  leakFree("channels-last layout: contiguity flags, strides, same values", () => {
    const x = randn([2, 3, 4, 5]);
    assert.equal(x.isContiguous(), true);
    assert.equal(x.isContiguous("channelsLast"), false);
    const y = x.channelsLast();
    assert.equal(y.isContiguous(), false);
    assert.equal(y.isContiguous("channelsLast"), true);
    assert.deepEqual(y.strides, [60, 1, 15, 3]);
    assert.deepEqual(y.shape, [2, 3, 4, 5]);
    assert.ok(y.equal(x));
    assert.deepEqual(y.contiguous().strides, [60, 20, 5, 1]);
    assert.equal(y.clone("preserve").isContiguous("channelsLast"), true);
    // Elementwise ops keep the layout.
    assert.equal(y.relu().isContiguous("channelsLast"), true);
  });
});

describe("math", () => {
  leakFree("elementwise arithmetic and functions", () => {
    const a = tensor([1, -2, 3, 0.5]);
    const b = tensor([2, 2, -1, 4]);
    assert.deepEqual(a.add(b).toArray(), [3, 0, 2, 4.5]);
    assert.deepEqual(a.add(b, 2).toArray(), [5, 2, 1, 8.5]);
    assert.deepEqual(a.sub(1).toArray(), [0, -3, 2, -0.5]);
    assert.deepEqual(a.mul(b).toArray(), [2, -4, -3, 2]);
    assert.deepEqual(a.div(b).toArray(), [0.5, -1, -3, 0.125]);
    assert.deepEqual(tensor([7, -7]).div(2, "floor").toArray(), [3, -4]);
    assert.deepEqual(tensor([7, -7]).div(2, "trunc").toArray(), [3, -3]);
    assert.deepEqual(a.rsub(1).toArray(), [0, 3, -2, 0.5]);
    assert.deepEqual(a.neg().toArray(), [-1, 2, -3, -0.5]);
    assert.deepEqual(a.abs().toArray(), [1, 2, 3, 0.5]);
    assert.deepEqual(a.pow(2).toArray(), [1, 4, 9, 0.25]);
    assert.deepEqual(a.relu().toArray(), [1, 0, 3, 0.5]);
    assert.deepEqual(a.sign().toArray(), [1, -1, 1, 1]);
    close(a.exp().toArray(), [Math.E, Math.exp(-2), Math.exp(3), Math.exp(0.5)]);
    close(b.abs().log().toArray(), [Math.log(2), Math.log(2), 0, Math.log(4)]);
    close(b.abs().sqrt().toArray(), [Math.SQRT2, Math.SQRT2, 1, 2]);
    close(
      a.sigmoid().toArray(),
      [1, -2, 3, 0.5].map((v) => 1 / (1 + Math.exp(-v))),
    );
    close(a.tanh().toArray(), [1, -2, 3, 0.5].map(Math.tanh));
    assert.deepEqual(tensor([1.4, -1.6, 2.5]).round().toArray(), [1, -2, 2]);
    assert.deepEqual(tensor([5, -5]).remainder(3).toArray(), [2, 1]);
  });

  leakFree("dtype promotion: int tensors stay int with integer scalars", () => {
    const i = tensor([1, 2], { dtype: "int32" });
    assert.equal(i.add(2).dtype, "int32");
    assert.equal(i.add(2.5).dtype, "float32");
    assert.deepEqual(i.add(2.5).toArray(), [3.5, 4.5]);
    assert.equal(i.add(tensor([1], { dtype: "float64" })).dtype, "float64");
    assert.equal(tensor([true, true]).sum().dtype, "int64");
  });

  leakFree("comparisons, logic, where, clamp", () => {
    const a = tensor([1, 2, 3, 4]);
    assert.deepEqual(a.gt(2).toArray(), [0, 0, 1, 1]);
    assert.equal(a.gt(2).dtype, "bool");
    assert.deepEqual(a.le(tensor([2, 2, 2, 2])).toArray(), [1, 1, 0, 0]);
    assert.deepEqual(a.eq(3).toArray(), [0, 0, 1, 0]);
    assert.deepEqual(a.ne(3).toArray(), [1, 1, 0, 1]);
    assert.deepEqual(a.gt(1).logicalAnd(a.lt(4)).toArray(), [0, 1, 1, 0]);
    assert.deepEqual(a.gt(3).logicalOr(a.lt(2)).logicalNot().toArray(), [0, 1, 1, 0]);
    assert.deepEqual(where(a.gt(2), a, a.neg()).toArray(), [-1, -2, 3, 4]);
    assert.deepEqual(where(a.gt(2), 1, 0).toArray(), [0, 0, 1, 1]);
    assert.deepEqual(where(a.gt(2), a, 0).toArray(), [0, 0, 3, 4]);
    assert.deepEqual(a.clamp(2, 3).toArray(), [2, 2, 3, 3]);
    assert.deepEqual(a.clamp(undefined, 2).toArray(), [1, 2, 2, 2]);
    assert.deepEqual(a.clampMin(3).toArray(), [3, 3, 3, 4]);
    assert.deepEqual(tensor([NaN, 1, Infinity]).isnan().toArray(), [1, 0, 0]);
    assert.deepEqual(tensor([NaN, 1, Infinity]).isfinite().toArray(), [0, 1, 0]);
    assert.equal(a.allclose(a.add(1e-7)), true);
    assert.equal(a.equal(a.clone()), true);
    assert.equal(a.equal(a.add(1)), false);
  });

  leakFree("reductions: sum, mean, max, min, argmax, logsumexp, var, std, norm", () => {
    const x = tensor([
      [1, 5, 3],
      [4, 2, 6],
    ]);
    assert.equal(x.sum().item(), 21);
    assert.deepEqual(x.sum(0).toArray(), [5, 7, 9]);
    assert.deepEqual(x.sum(1, true).shape, [2, 1]);
    assert.deepEqual(x.sum([0, 1]).shape, []);
    assert.equal(x.mean().item(), 3.5);
    assert.deepEqual(x.mean(1).toArray(), [3, 4]);
    assert.equal(x.max().item(), 6);
    const m = x.max(1);
    assert.deepEqual(m.values.toArray(), [5, 6]);
    assert.deepEqual(m.indices.toArray(), [1, 2]);
    assert.equal(m.indices.dtype, "int64");
    assert.deepEqual(x.min(0).values.toArray(), [1, 2, 3]);
    assert.equal(x.argmax().item(), 5);
    assert.deepEqual(x.argmax(0).toArray(), [1, 0, 1]);
    assert.deepEqual(x.argmin(1, true).shape, [2, 1]);
    close(x.logsumexp(1).toArray(), [
      Math.log(Math.exp(1) + Math.exp(5) + Math.exp(3)),
      Math.log(Math.exp(4) + Math.exp(2) + Math.exp(6)),
    ]);
    // Large values: logsumexp must not overflow.
    close(tensor([1000, 1000]).logsumexp(0).toArray(), [1000 + Math.log(2)], 1e-6);
    const v = tensor([1, 2, 3, 4]);
    close([v.var().item()], [5 / 3]);
    close([v.var(0, { correction: 0 }).item()], [1.25]);
    close([v.std().item()], [Math.sqrt(5 / 3)]);
    close(x.var(1).toArray(), [4, 4]);
    close([tensor([3, 4]).norm().item()], [5]);
    close([tensor([3, -4]).norm(1).item()], [7]);
    assert.equal(tensor([1, 2, 3]).prod().item(), 6);
    assert.deepEqual(tensor([1, 2, 3]).cumsum(0).toArray(), [1, 3, 6]);
    assert.deepEqual(tensor([3, 1, 2]).topk(2).values.toArray(), [3, 2]);
    close(tensor([1, 2]).softmax(0).toArray(), [1 / (1 + Math.E), Math.E / (1 + Math.E)]);
  });

  leakFree("matmul, mm, bmm, outer", () => {
    const a = tensor([
      [1, 2],
      [3, 4],
    ]);
    const b = tensor([
      [5, 6],
      [7, 8],
    ]);
    assert.deepEqual(a.matmul(b).tolist(), [
      [19, 22],
      [43, 50],
    ]);
    assert.deepEqual(a.mm(b).tolist(), [
      [19, 22],
      [43, 50],
    ]);
    assert.deepEqual(a.matmul(tensor([1, 1])).toArray(), [3, 7]);
    assert.deepEqual(randn([5, 2, 3]).matmul(randn([3, 4])).shape, [5, 2, 4]);
    assert.deepEqual(
      stack([a, b])
        .bmm(stack([b, a]))
        .select(1, 0)
        .tolist(),
      [
        [19, 22],
        [23, 34],
      ],
    );
    assert.deepEqual(
      tensor([1, 2])
        .outer(tensor([3, 4]))
        .tolist(),
      [
        [3, 4],
        [6, 8],
      ],
    );
  });

  leakFree("addOut, negOut write into a given tensor, asStrided views storage", () => {
    const flat = zeros([8]);
    const out = flat.asStrided([2, 2], [1, 2], 1); // a transposed 2x2 view starting at element 1
    const a = tensor([
      [1, 2],
      [3, 4],
    ]);
    const b = tensor([
      [10, 20],
      [30, 40],
    ]);
    assert.equal(torch.addOut(out, a, b, 0.5), out, "returns the tensor it wrote");
    assert.deepEqual(out.tolist(), a.add(b, 0.5).tolist());
    assert.deepEqual(flat.toArray(), [0, 6, 18, 12, 24, 0, 0, 0], "written through the view's strides");
    assert.ok(out.isAliasOf(flat));
    torch.negOut(out, out);
    assert.deepEqual(out.tolist(), a.add(b, 0.5).neg().tolist(), "in place when out is the input");
  });

  leakFree("in-place ops mutate, alias and return the same tensor", () => {
    const x = tensor([1, 2, 3]);
    const view = x.narrow(0, 1, 2);
    assert.equal(x.add_(1), x);
    assert.deepEqual(x.toArray(), [2, 3, 4]);
    assert.deepEqual(view.toArray(), [3, 4], "views see in-place changes");
    x.mul_(2)
      .sub_(1, 2)
      .div_(tensor([2, 2, 2]));
    assert.deepEqual(x.toArray(), [1, 2, 3]);
    x.addcmul_(tensor([1, 1, 1]), tensor([2, 3, 4]), 0.5);
    assert.deepEqual(x.toArray(), [2, 3.5, 5]);
    x.addcdiv_(tensor([4, 4, 4]), tensor([2, 2, 2]), -1);
    assert.deepEqual(x.toArray(), [0, 1.5, 3]);
    x.clamp_(1, 2);
    assert.deepEqual(x.toArray(), [1, 1.5, 2]);
    x.lerp_(tensor([3, 3, 3]), 0.5);
    assert.deepEqual(x.toArray(), [2, 2.25, 2.5]);
    x.copy_(tensor([9, 8, 7]));
    assert.deepEqual(x.toArray(), [9, 8, 7]);
    x.fill_(4).sqrt_();
    assert.deepEqual(x.toArray(), [2, 2, 2]);
    x.neg_().relu_();
    assert.deepEqual(x.toArray(), [0, 0, 0]);
    x.fill_(5).zero_();
    assert.deepEqual(x.toArray(), [0, 0, 0]);
    const u = zeros([1000]).uniform_(-2, -1);
    assert.ok(u.min().item() >= -2 && u.max().item() <= -1);
    const n = zeros([4000]).normal_(3, 0.5);
    assert.ok(Math.abs(n.mean().item() - 3) < 0.05);
  });
});

describe("random generators", () => {
  leakFree("manualSeed makes the default generator reproducible", () => {
    manualSeed(42);
    const a = randn([5]);
    const r = rand([3]);
    manualSeed(42);
    assert.ok(randn([5]).equal(a));
    assert.ok(rand([3]).equal(r));
    manualSeed(43);
    assert.ok(!randn([5]).equal(a));
    assert.throws(() => manualSeed(-1), /non-negative integer/);
  });

  leakFree("Generators: same seed same stream, independent of the default one", () => {
    const g1 = new Generator(7);
    const g2 = new Generator(7);
    const a = randn([4], { generator: g1 });
    manualSeed(1);
    randn([10]); // draws from the default generator do not disturb g2
    assert.ok(randn([4], { generator: g2 }).equal(a));
    assert.ok(randint(0, 100, [6], { generator: g1 }).equal(randint(0, 100, [6], { generator: g2 })));
    assert.ok(randperm(8, { generator: g1 }).equal(randperm(8, { generator: g2 })));
    g1.manualSeed(7);
    assert.ok(randn([4], { generator: g1 }).equal(a));
  });

  leakFree("getState / setState resume the exact sequence (incl. the default generator)", () => {
    const g = new Generator(123);
    randn([3], { generator: g }); // an odd count leaves a cached normal in the state
    const state = g.getState();
    assert.ok(state.length > 5000);
    const a = randn([7], { generator: g });
    const b = rand([2], { generator: g });
    g.setState(state);
    assert.ok(randn([7], { generator: g }).equal(a));
    assert.ok(rand([2], { generator: g }).equal(b));
    // Across generators.
    const h = new Generator(999).setState(state);
    assert.ok(randn([7], { generator: h }).equal(a));
    // The default generator.
    manualSeed(5);
    const saved = defaultGenerator.getState();
    const c = randn([4]);
    defaultGenerator.setState(saved);
    assert.ok(randn([4]).equal(c));
    // In-place samplers use the generator too.
    const s = g.getState();
    const u1 = zeros([5]).uniform_(0, 1, g);
    g.setState(s);
    assert.ok(zeros([5]).uniform_(0, 1, g).equal(u1));
  });
});

describe("grad mode", () => {
  leakFree("noGrad records no graph and restores the mode; enableGrad nests inside it", () => {
    const w = randn([3]).requiresGrad_();
    assert.equal(isGradEnabled(), true);
    const y = noGrad(() => {
      assert.equal(isGradEnabled(), false);
      const inner = enableGrad(() => {
        assert.equal(isGradEnabled(), true);
        return w.mul(2);
      });
      assert.equal(inner.requiresGrad, true);
      assert.equal(isGradEnabled(), false);
      return w.mul(2);
    });
    assert.equal(y.requiresGrad, false);
    assert.equal(isGradEnabled(), true);
    assert.throws(
      () =>
        noGrad(() => {
          throw new Error("boom");
        }),
      /boom/,
    );
    assert.equal(isGradEnabled(), true);
  });

  leakFree("backward accumulates into leaves; detach cuts the graph", () => {
    const x = tensor([1, 2, 3]).requiresGrad_();
    assert.equal(x.isLeaf, true);
    const y = x.mul(x).sum();
    assert.equal(y.isLeaf, false);
    y.backward();
    assert.deepEqual(x.grad!.toArray(), [2, 4, 6]);
    x.mul(3).sum().backward();
    assert.deepEqual(x.grad!.toArray(), [5, 7, 9]);
    x.grad = null;
    assert.equal(x.grad, null);
    const d = x.detach();
    assert.equal(d.requiresGrad, false);
    assert.ok(d.isAliasOf(x));
  });
});

describe("scopes", () => {
  test("tensors die at the end of their scope; results escape to the enclosing scope", () => {
    const start = liveTensors();
    let inner!: Tensor;
    let escaped!: Tensor;
    const outer = scope(() => {
      assert.equal(scopeDepth(), 1);
      const a = ones([2]);
      escaped = scope(() => {
        assert.equal(scopeDepth(), 2);
        inner = zeros([2]);
        return a.add(1);
      });
      assert.equal(inner.isDisposed, true, "inner temporaries are freed");
      assert.equal(escaped.isDisposed, false, "the returned tensor survives the inner scope");
      assert.equal(escaped.scopeDepth, 0, "and belongs to the outer scope");
      return { result: escaped.mul(2), list: [a.clone()], map: new Map([["k", a.clone()]]) };
    });
    assert.equal(escaped.isDisposed, true, "an escaped tensor not returned again dies with the outer scope");
    assert.equal(outer.result.isDisposed, false);
    assert.deepEqual(outer.result.toArray(), [4, 4]);
    assert.equal(outer.list[0].isDisposed, false);
    assert.equal(outer.map.get("k")!.isDisposed, false);
    assert.equal(liveTensors(), start + 3);
    outer.result.dispose();
    outer.list[0].dispose();
    outer.map.get("k")!.dispose();
    assert.equal(liveTensors(), start);
    assert.equal(scopeDepth(), 0);
  });

  test("keep() exempts a tensor from every enclosing scope; the caller disposes it", () => {
    const start = liveTensors();
    let kept!: Tensor;
    let temp!: Tensor;
    scope(() => {
      scope(() => {
        kept = keep(ones([3]));
        temp = zeros([3]);
      });
    });
    assert.equal(temp.isDisposed, true);
    assert.equal(kept.isDisposed, false);
    assert.equal(liveTensors(), start + 1);
    kept.dispose();
    assert.equal(liveTensors(), start);
  });

  test("an error inside a scope still frees its tensors and closes the scope", () => {
    const start = liveTensors();
    assert.throws(
      () =>
        scope(() => {
          ones([10]);
          scope(() => {
            zeros([10]);
            throw new Error("inner failure");
          });
        }),
      /inner failure/,
    );
    assert.equal(scopeDepth(), 0);
    assert.equal(liveTensors(), start);
    // A libtorch error too.
    assert.throws(() => scope(() => ones([2]).matmul(ones([3]))), /aten::matmul/);
    assert.equal(liveTensors(), start);
  });

  test("an async function is refused (scopes are synchronous)", () => {
    const start = liveTensors();
    assert.throws(() => scope((async () => ones([1])) as never), /returned a Promise/);
    assert.equal(scopeDepth(), 0);
    assert.equal(liveTensors(), start, "tensors created before the first await are freed with the scope");
  });

  test("tensors a scope holds are not reported to V8: no full GCs that can free nothing", async () => {
    // V8 starts a full collection when external memory grows by ~64 MiB. `empty` tensors of 64 MiB
    // (never touched, so never paged in): 32 held by a scope must cause none; 32 loose ones (only
    // dispose() or the GC can free them) must still cause some.
    let major = 0;
    const observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries())
        if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR)
          major++;
    });
    observer.observe({ entryTypes: ["gc"] });
    const settle = async (): Promise<void> => {
      for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
    };
    try {
      await settle();
      major = 0;
      scope(() => {
        for (let i = 0; i < 32; i++) empty([2 ** 24]);
      });
      await settle();
      assert.equal(major, 0, "full GCs while a scope held 2 GiB of tensors");
      const loose = Array.from({ length: 32 }, () => empty([2 ** 24]));
      await settle();
      assert.ok(major > 0, "no full GC after 2 GiB of tensors only the GC could free");
      loose.forEach((t) => t.dispose());
      const kept = scope(() => keep(empty([2 ** 24])));
      kept.dispose();
    } finally {
      observer.disconnect();
      emptyCache();
    }
  });

  test("a training-like step returns liveTensors() to its start", () => {
    const w = keep(randn([4, 3]).requiresGrad_());
    const start = liveTensors();
    for (let step = 0; step < 3; step++) {
      scope(() => {
        const x = randn([8, 4]);
        const loss = x.matmul(w).relu().pow(2).mean();
        loss.backward();
        noGrad(() => w.sub_(w.grad!.mul(0.1)));
        w.grad = null;
      });
      assert.equal(liveTensors(), start, `step ${step}`);
    }
    w.dispose();
  });
});

describe("memory gauges", () => {
  test("currentBytes rises by exactly a tensor's bytes and falls back after dispose", () => {
    const before = memoryStats();
    const t = empty([1000, 25]); // 100,000 bytes of float32
    const during = memoryStats();
    assert.equal(during.currentBytes - before.currentBytes, 100_000);
    assert.equal(during.liveTensors - before.liveTensors, 1);
    assert.equal(during.allocations - before.allocations, 1);
    const d = empty([10], { dtype: "float64" });
    assert.equal(memoryStats().currentBytes - during.currentBytes, 80);
    d.dispose();
    t.dispose();
    const after = memoryStats();
    assert.equal(after.currentBytes, before.currentBytes);
    assert.equal(after.liveTensors, before.liveTensors);
  });

  test("views share storage: no new bytes", () => {
    const t = zeros([256]);
    const before = memoryStats().currentBytes;
    const v = t.view(16, 16);
    const n = t.narrow(0, 0, 8);
    assert.equal(memoryStats().currentBytes, before);
    v.dispose();
    n.dispose();
    assert.equal(memoryStats().currentBytes, before);
    t.dispose();
  });

  test("peakBytes tracks the high-water mark; resetPeakMemory restarts it from now", () => {
    resetPeakMemory();
    const base = memoryStats();
    assert.equal(base.peakBytes, base.currentBytes);
    const big = empty([1 << 18]); // 1 MiB
    big.dispose();
    const after = memoryStats();
    assert.equal(after.currentBytes, base.currentBytes);
    assert.equal(after.peakBytes, base.currentBytes + (1 << 20));
    resetPeakMemory();
    assert.equal(memoryStats().peakBytes, memoryStats().currentBytes);
  });

  test("collectGarbage() frees dropped tensors before it returns", () => {
    const before = memoryStats();
    // Dropped without dispose(), in a function so that nothing on this stack refers to them.
    (() => {
      for (let i = 0; i < 10; i++) empty([1 << 16]); // 256 KiB each
    })();
    const dropped = memoryStats();
    assert.equal(dropped.liveTensors - before.liveTensors, 10);
    collectGarbage();
    const after = memoryStats();
    assert.equal(after.liveTensors, before.liveTensors);
    assert.equal(after.currentBytes, before.currentBytes);
  });

  test(
    "freed large blocks are cached and reused for requests up to 1/4 smaller; emptyCache() frees them",
    { skip: process.env.LOCO_CACHE_MB !== undefined && "LOCO_CACHE_MB is set" },
    () => {
      emptyCache();
      assert.equal(memoryStats().cachedBytes, 0);
      empty([1 << 18]).dispose(); // 1 MiB: its block is cached
      const block = memoryStats().cachedBytes;
      assert.ok(block >= 1 << 20, `cachedBytes ${block}`);
      const near = empty([240000]); // 0.92 MiB, another size class: takes the cached block
      assert.equal(memoryStats().cachedBytes, 0);
      near.dispose();
      assert.equal(memoryStats().cachedBytes, block); // back in its own class
      const half = empty([1 << 17]); // 0.5 MiB: too small for that block, a new one
      assert.equal(memoryStats().cachedBytes, block);
      half.dispose();
      assert.ok(memoryStats().cachedBytes > block);
      emptyCache();
      assert.equal(memoryStats().cachedBytes, 0);
    },
  );

  test(
    "blocks of 2 MiB or more are mappings advised for huge pages, kept when cached, unmapped by emptyCache()",
    {
      skip:
        (process.platform !== "linux" && "reads /proc/self/smaps") ||
        (process.env.LOCO_HUGE_PAGES === "0" && "LOCO_HUGE_PAGES=0") ||
        (process.env.LOCO_CACHE_MB !== undefined && "LOCO_CACHE_MB is set"),
    },
    () => {
      // Bytes in mappings whose VmFlags carry "hg" (madvise(MADV_HUGEPAGE)).
      const advisedBytes = (): number => {
        let total = 0;
        let size = 0;
        for (const line of fs.readFileSync("/proc/self/smaps", "utf8").split("\n")) {
          const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
          if (range) size = parseInt(range[2], 16) - parseInt(range[1], 16);
          else if (line.startsWith("VmFlags:") && / hg( |$)/.test(line)) total += size;
        }
        return total;
      };
      emptyCache();
      const before = advisedBytes();
      const elements = 3 << 20; // 12 MiB of float32
      const t = ones([elements]);
      assert.ok(advisedBytes() - before >= elements * 4, `advised ${advisedBytes() - before} bytes`);
      // Every page of the mapping is usable.
      assert.equal(
        scope(() => t.sum().item()),
        elements,
      );
      t.dispose();
      assert.ok(advisedBytes() - before >= elements * 4); // cached, still mapped
      emptyCache();
      assert.equal(advisedBytes(), before);
      const small = ones([1 << 18]); // 1 MiB: from malloc, not advised
      assert.equal(advisedBytes(), before);
      small.dispose();
      emptyCache();
    },
  );
});

describe("threads and workers", () => {
  test("setNumThreads / getNumThreads", () => {
    const original = getNumThreads();
    try {
      setNumThreads(1);
      assert.equal(getNumThreads(), 1);
      setNumThreads(2);
      assert.equal(getNumThreads(), 2);
      scope(() =>
        assert.equal(
          ones([64, 64])
            .matmul(ones([64, 64]))
            .sum()
            .item(),
          64 * 64 * 64,
        ),
      );
    } finally {
      setNumThreads(original);
    }
  });

  test("worker threads load the addon (context-aware) and compute alongside the main thread", async () => {
    const torchPath = path.resolve(__dirname, "..", "src", "torch");
    const code = `
      const { parentPort, workerData } = require("node:worker_threads");
      const t = require(${JSON.stringify(torchPath)});
      t.setNumThreads(1);
      const r = t.scope(() => {
        const g = new t.Generator(workerData.seed);
        const x = t.randn([16, 8], { generator: g });
        const loss = x.matmul(t.ones([8, 2])).sum();
        return { sum: t.ones([3, 3]).matmul(t.ones([3, 3])).sum().item(), first: x.select(0, 0).select(0, 0).item(), loss: loss.item() };
      });
      parentPort.postMessage(r);
    `;
    const run = (seed: number) =>
      new Promise<{ sum: number; first: number; loss: number }>((resolve, reject) => {
        const w = new Worker(code, {
          eval: true,
          workerData: { seed },
          env: { ...process.env, LOCO_NUM_THREADS: "1" },
        });
        let result: { sum: number; first: number; loss: number } | undefined;
        w.on("message", (m) => (result = m));
        w.on("error", reject);
        w.on("exit", (codeNum) =>
          codeNum === 0 && result ? resolve(result) : reject(new Error(`worker exited ${codeNum}`)),
        );
      });
    const [a, b] = await Promise.all([run(11), run(11)]);
    assert.equal(a.sum, 27);
    assert.equal(a.first, b.first, "same seed, same numbers in both workers");
    // The same seed on the main thread gives the same values.
    const expected = scope(() =>
      randn([16, 8], { generator: new Generator(11) })
        .select(0, 0)
        .select(0, 0)
        .item(),
    );
    assert.equal(a.first, expected);
    // A second round after the first workers exited (addon instance torn down and reloaded).
    const c = await run(12);
    assert.equal(c.sum, 27);
    scope(() => assert.equal(ones([2]).sum().item(), 2, "the main thread's engine still works"));
  });
});

describe("devices", () => {
  test("tensors are created on, moved to and report a device ('cpu' on this build)", () => {
    scope(() => {
      assert.ok(torch.availableDevices().includes("cpu"));
      assert.equal(torch.checkDevice("cpu"), "cpu");
      assert.equal(torch.checkDevice("cpu:0"), "cpu", "one canonical name for the CPU");
      const made = [
        torch.zeros([2], { device: "cpu" }),
        torch.ones([2], { device: "cpu" }),
        torch.full([2], 3, { device: "cpu" }),
        torch.arange(0, 4, 1, { device: "cpu" }),
        torch.randn([2], { device: "cpu", generator: new torch.Generator(1) }),
        torch.randperm(3, { device: "cpu" }),
        torch.tensor([1, 2], { device: "cpu" }),
        torch.zerosLike(torch.ones([2]), { device: "cpu" }),
      ];
      for (const t of made) assert.equal(t.device, "cpu");
      const x = torch.tensor([1.5, -2]);
      const moved = x.to("cpu");
      assert.equal(moved.device, "cpu");
      assert.deepEqual(moved.toArray(), [1.5, -2]);
      const both = x.to({ device: "cpu", dtype: "float64" });
      assert.equal(both.dtype, "float64");
      assert.deepEqual(both.toArray(), [1.5, -2]);
    });
  });

  test("an unavailable or unknown device is an error naming it and what is available", () => {
    scope(() => {
      if (torch.isDeviceAvailable("cuda")) return; // a CUDA build of libtorch: nothing to refuse
      const unavailable = /device 'cuda' is not available in this libtorch build \(available: cpu/;
      assert.throws(() => torch.zeros([2], { device: "cuda" }), new RegExp(`zeros: ${unavailable.source}`));
      assert.throws(() => torch.tensor([1], { device: "cuda" }), new RegExp(`tensor: ${unavailable.source}`));
      assert.throws(() => torch.randn([2]).to("cuda"), new RegExp(`Tensor\\.to: ${unavailable.source}`));
      assert.throws(() => torch.checkDevice("cuda:1"), /device 'cuda:1' is not available/);
      assert.throws(() => torch.checkDevice("nonsense"), /checkDevice: unknown device 'nonsense' \(available: cpu/);
      assert.throws(() => torch.zeros([2], { device: 7 as never }), /zeros: a device is a string such as "cpu"/);
      assert.throws(() => torch.randn([2]).to("float33" as never), /unknown dtype 'float33'/);
    });
  });

  test("Module.to(device) moves parameters and buffers; an unavailable device changes nothing", () => {
    const model = new nn.Sequential(new nn.Linear(3, 2), new nn.BatchNorm1d(2));
    const before = model.parameters().map((p) => p.toArray());
    assert.equal(model.to("cpu"), model);
    assert.ok([...model.parameters(), ...model.buffers()].every((t) => t.device === "cpu"));
    assert.deepEqual(
      model.parameters().map((p) => p.toArray()),
      before,
    );
    if (!torch.isDeviceAvailable("cuda")) {
      assert.throws(() => model.to("cuda"), /Module\.to: device 'cuda' is not available .*available: cpu/);
      assert.deepEqual(
        model.parameters().map((p) => p.toArray()),
        before,
      );
    }
    model.dispose();
  });
});
