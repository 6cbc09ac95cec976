// Tests of src/eval: feature extraction, linear readout, weighted kNN, the baselines' harness and
// per-stage readout, on synthetic data whose answer is known (plus a small Fashion-MNIST smoke
// test when the dataset is installed).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import {
  Generator,
  type Tensor,
  fromTypedArray,
  keep,
  liveTensors,
  manualSeed,
  noGrad,
  randint,
  randn,
  scope,
  tensor,
} from "../src/torch";
import * as nn from "../src/nn";
import { resnet18 } from "../src/models";
import { loadMnistSplit } from "../src/data/mnist";
import { type ImageDataset, MemoryImages, makeDataset } from "../src/data/dataset";
import { readoutReport } from "../src/learning/readout";
import {
  type EvalBatch,
  type FeatureSet,
  disposeFeatureSet,
  evaluateEncoder,
  extractFeatures,
  fromViewBatches,
  extractStageFeatures,
  knnClassify,
  linearReadout,
  rawPixelsFeatures,
  stageFeatures,
  stageForward,
  trainSupervised,
  withEval,
} from "../src/eval";

// ---- synthetic data ----

/**
 * Gaussian clusters: class c has mean `separation`·u_c (u_c a fixed random unit-ish direction) and
 * identity covariance. With separation 8 in 16 dimensions the classes are linearly separable with
 * overwhelming probability, so a linear readout and kNN must both reach ~100 %.
 */
function clusters(n: number, numClasses: number, dim: number, separation: number, seed: number): FeatureSet {
  const g = new Generator(seed);
  return scope(() => {
    const centres = randn([numClasses, dim], { generator: new Generator(12345) });
    const unit = centres.div(centres.norm(2, 1, true)).mul(separation);
    const labels = randint(0, numClasses, [n], { generator: g });
    const features = unit.indexSelect(0, labels).add(randn([n, dim], { generator: g }));
    return { features, labels };
  });
}

function randomSet(n: number, numClasses: number, dim: number, seed: number): FeatureSet {
  const g = new Generator(seed);
  return scope(() => ({
    features: randn([n, dim], { generator: g }),
    labels: randint(0, numClasses, [n], { generator: g }),
  }));
}

function disposeAll(...sets: FeatureSet[]): void {
  for (const s of sets) disposeFeatureSet(s);
}

/** Batches of NCHW images whose class is a bright 4×4 quadrant (learnable by a tiny convnet). */
function quadrantImages(n: number, seed: number): { images: Tensor; labels: Tensor } {
  const g = new Generator(seed);
  return scope(() => {
    const labels = randint(0, 4, [n], { generator: g });
    const ys = labels.toArray();
    const data = new Float32Array(n * 64);
    for (let i = 0; i < n; i++) {
      const [r0, c0] = [ys[i] >> 1 ? 4 : 0, ys[i] & 1 ? 4 : 0];
      for (let r = 0; r < 4; r++) for (let c = 0; c < 4; c++) data[i * 64 + (r0 + r) * 8 + c0 + c] = 1;
    }
    const images = fromTypedArray(data, [n, 1, 8, 8]).add(randn([n, 1, 8, 8], { generator: g }).mul(0.3));
    return { images, labels };
  });
}

function batchesOf(set: { images: Tensor; labels: Tensor }, size: number): EvalBatch[] {
  const n = set.images.shape[0];
  const out: EvalBatch[] = [];
  for (let i = 0; i < n; i += size) {
    const len = Math.min(size, n - i);
    out.push({ images: set.images.narrow(0, i, len), labels: set.labels.narrow(0, i, len) });
  }
  return out;
}

function disposeBatches(batches: EvalBatch[]): void {
  for (const b of batches) {
    b.images.release();
    b.labels.release();
  }
}

function smallEncoder(seed: number): nn.Sequential {
  const generator = new Generator(seed);
  return new nn.Sequential(
    new nn.Conv2d(1, 8, 3, { padding: 1, generator }),
    new nn.BatchNorm2d(8),
    new nn.ReLU(),
    new nn.Conv2d(8, 8, 3, { padding: 1, stride: 2, generator }),
    new nn.BatchNorm2d(8),
    new nn.ReLU(),
    new nn.AdaptiveAvgPool2d(2),
    new nn.Flatten(),
  );
}

function snapshot(m: nn.Module): Map<string, Tensor> {
  return noGrad(() => new Map([...m.stateDict()].map(([k, t]) => [k, t.clone()])));
}

// ---- linear readout ----

test("linear readout: separable Gaussian clusters → top-1 ≈ 1", () => {
  const train = clusters(600, 5, 16, 8, 1);
  const testSet = clusters(400, 5, 16, 8, 2);
  const r = linearReadout(train, testSet, { epochs: 30, numClasses: 5 });
  assert.ok(r.top1 >= 0.99, `top1 ${r.top1}`);
  assert.ok(r.trainTop1 >= 0.99, `train top1 ${r.trainTop1}`);
  assert.equal(r.top5, undefined, "no top-5 with 5 classes");
  assert.equal(r.standardized, true);
  assert.equal(r.predictions.length, 400);
  assert.equal(r.featureDim, 16);
  disposeAll(train, testSet);
});

test("linear readout: random labels → chance on the test split", () => {
  const train = randomSet(800, 4, 32, 3);
  const testSet = randomSet(1000, 4, 32, 4);
  const r = linearReadout(train, testSet, { epochs: 20 });
  assert.equal(r.numClasses, 4, "numClasses inferred from the labels");
  // Predictions cannot depend on the test labels: Binomial(1000, 1/4), sd 0.014; allow 4 sd.
  assert.ok(Math.abs(r.top1 - 0.25) < 0.055, `top1 ${r.top1} is not near chance 0.25`);
  assert.ok(r.trainTop1 > r.top1, "the classifier fits (memorises) the train labels better than chance");
  disposeAll(train, testSet);
});

test("linear readout: deterministic for a seed, leaves the global RNG and the inputs alone", () => {
  const train = clusters(300, 10, 8, 2, 5); // overlapping classes: the result depends on the run
  const testSet = clusters(200, 10, 8, 2, 6);
  const before = noGrad(() => train.features.clone());
  manualSeed(7);
  const expected = randn([4]);
  manualSeed(7);
  const a = linearReadout(train, testSet, { epochs: 5, batchSize: 64, seed: 3 });
  const afterRun = randn([4]);
  assert.ok(afterRun.equal(expected), "the readout did not draw from the default generator");
  const b = linearReadout(train, testSet, { epochs: 5, batchSize: 64, seed: 3 });
  const c = linearReadout(train, testSet, { epochs: 5, batchSize: 64, seed: 4 });
  assert.equal(a.trainLoss, b.trainLoss);
  assert.equal(a.top1, b.top1);
  assert.deepEqual(a.predictions, b.predictions);
  assert.notEqual(a.trainLoss, c.trainLoss, "another seed shuffles differently");
  assert.ok(a.top5 !== undefined && a.top5 >= a.top1, "top-5 reported with 10 classes");
  assert.ok(train.features.equal(before), "the train features are not modified");
  for (const t of [before, expected, afterRun]) t.dispose();
  disposeAll(train, testSet);
});

test("linear readout: weight decay selection on held-out train features, SGD option", () => {
  const train = clusters(400, 4, 16, 3, 8);
  const testSet = clusters(200, 4, 16, 3, 9);
  const grid = [0, 1e-3, 1e-1];
  const r = linearReadout(train, testSet, { epochs: 5, selectWeightDecay: grid, optimizer: "sgd", lr: 0.05 });
  assert.equal(r.selection?.length, 3);
  assert.ok(grid.includes(r.weightDecay));
  const best = Math.max(...(r.selection ?? []).map((t) => t.valTop1));
  assert.equal(r.selection?.find((t) => t.weightDecay === r.weightDecay)?.valTop1, best);
  assert.ok(r.top1 > 0.8, `top1 ${r.top1}`);
  assert.throws(() => linearReadout(train, testSet, { numClasses: 3 }), /label 3 but numClasses is 3/);
  disposeAll(train, testSet);
});

test("linear readout: rejects mismatched feature sets", () => {
  const a = randomSet(10, 2, 4, 1);
  const b = randomSet(10, 2, 5, 2);
  assert.throws(() => linearReadout(a, b), /4 dimensions but test features 5/);
  assert.throws(() => knnClassify(a, b), /4 dimensions but test features 5/);
  disposeAll(a, b);
});

// ---- kNN ----

test("kNN: hand-computed weighted vote (5 train points, k = 3)", () => {
  // Cosine similarities are scale-free: the points are deliberately not unit length.
  const train = {
    features: tensor([
      [3, 0],
      [0.6, 0.8],
      [0.6, -0.8],
      [-2, 0],
      [0, -5],
    ]),
    labels: tensor([0, 1, 1, 0, 2], { dtype: "int64" }),
  };
  const testSet = {
    features: tensor([
      [2, 0],
      [0, -1],
    ]),
    labels: tensor([0, 2], { dtype: "int64" }),
  };
  // q1 = (2, 0): sims [1, .6, .6, -1, 0] → neighbours p0 (c0, 1), p1 (c1, .6), p2 (c1, .6).
  // q2 = (0, -1): sims [0, -.8, .8, 0, 1] → p4 (c2, 1), p2 (c1, .8), then p0 or p3 (both c0, 0).
  const expect = (t: number): number[] => [
    Math.exp(1 / t),
    2 * Math.exp(0.6 / t),
    0,
    Math.exp(0 / t),
    Math.exp(0.8 / t),
    Math.exp(1 / t),
  ];
  const sharp = knnClassify(train, testSet, { k: 3, temperature: 0.1, returnScores: true });
  // The nearest neighbour outweighs the two others: e^10 > 2e^6.
  assert.deepEqual([...sharp.predictions], [0, 2]);
  assert.equal(sharp.top1, 1);
  const flat = knnClassify(train, testSet, { k: 3, temperature: 1, returnScores: true });
  // At temperature 1 the two class-1 neighbours win for q1: 2e^0.6 = 3.64 > e = 2.72.
  assert.deepEqual([...flat.predictions], [1, 2]);
  assert.equal(flat.top1, 0.5);
  for (const [r, t] of [
    [sharp, 0.1],
    [flat, 1],
  ] as const) {
    const want = expect(t);
    r.scores?.forEach((s, i) =>
      assert.ok(Math.abs(s - want[i]) <= 1e-5 * Math.max(1, want[i]), `T=${t} score ${i}: ${s} vs ${want[i]}`),
    );
  }
  const all = knnClassify(train, testSet, { k: 200 });
  assert.equal(all.k, 5, "k is capped at the train size");
  for (const t of [train.features, train.labels, testSet.features, testSet.labels]) t.dispose();
});

test("kNN: clustered data → top-1 ≈ 1, chunked and unchunked agree", () => {
  const train = clusters(500, 5, 16, 8, 11);
  const testSet = clusters(300, 5, 16, 8, 12);
  const a = knnClassify(train, testSet, { numClasses: 5 });
  const b = knnClassify(train, testSet, { numClasses: 5, chunkSize: 7 });
  assert.ok(a.top1 >= 0.99, `top1 ${a.top1}`);
  assert.equal(a.k, 200);
  assert.deepEqual(a.predictions, b.predictions);
  disposeAll(train, testSet);
});

// ---- extraction and the encoder harness ----

test("extractFeatures: leaves liveTensors unchanged apart from its two outputs", async () => {
  const encoder = smallEncoder(1);
  const data = quadrantImages(40, 1);
  const batches = batchesOf(data, 16);
  const before = liveTensors();
  const out = await withEval(encoder, () => extractFeatures((x) => encoder.forward(x), batches));
  assert.equal(liveTensors(), before + 2);
  assert.deepEqual(out.features.shape, [40, 32]);
  assert.equal(out.features.dtype, "float32");
  assert.equal(out.labels.dtype, "int64");
  assert.ok(out.labels.equal(data.labels));
  assert.ok(
    batches.every((b) => !b.images.isDisposed),
    "caller-owned batches are left alive",
  );
  disposeFeatureSet(out);

  // A generator making fresh tensors per batch, around a tensor it creates lazily and frees itself:
  // with disposeBatches each yielded batch is freed after use, the generator's own tensor is not.
  function* generated(): IterableIterator<EvalBatch> {
    const all = randn([24, 1, 8, 8]);
    try {
      for (let i = 0; i < 3; i++) yield { images: all.narrow(0, 8 * i, 8), labels: randint(0, 4, [8]) };
    } finally {
      all.dispose();
    }
  }
  const before2 = liveTensors();
  const gen = await extractFeatures(rawPixelsFeatures, generated(), { limit: 20, disposeBatches: true });
  assert.equal(liveTensors(), before2 + 2);
  assert.deepEqual(gen.features.shape, [20, 64], "limit cuts the last batch");
  disposeFeatureSet(gen);
  const full = await extractFeatures(rawPixelsFeatures, generated(), { disposeBatches: true });
  assert.deepEqual(full.features.shape, [24, 64]);
  assert.equal(liveTensors(), before2 + 2);
  disposeFeatureSet(full);

  disposeBatches(batches);
  data.images.dispose();
  data.labels.dispose();
  encoder.dispose();
});

test("evaluateEncoder never changes the encoder (state dict bit for bit) and restores its mode", async () => {
  const encoder = smallEncoder(2); // in training mode: a forward in train mode would move BN stats
  const trainData = quadrantImages(64, 3);
  const testData = quadrantImages(32, 4);
  const trainBatches = batchesOf(trainData, 16);
  const testBatches = batchesOf(testData, 16);
  const before = snapshot(encoder);
  const live = liveTensors();
  const r = await evaluateEncoder(encoder, trainBatches, testBatches, {
    numClasses: 4,
    linear: { epochs: 10 },
    knn: { k: 10 },
  });
  assert.equal(liveTensors(), live, "nothing left behind");
  for (const [key, t] of encoder.stateDict()) assert.ok(t.equal(before.get(key) as Tensor), `${key} changed`);
  assert.ok(
    encoder.modules().every((m) => m.training),
    "training mode restored",
  );
  assert.ok(
    encoder.parameters().every((p) => p.grad === null),
    "no gradient reached the encoder",
  );
  assert.equal(r.featureDim, 32);
  assert.equal(r.trainSize, 64);
  assert.ok(r.linear !== undefined && r.linear.top1 >= 0 && r.linear.top1 <= 1);
  assert.ok(r.knn !== undefined && r.knn.top1 >= 0 && r.knn.top1 <= 1);
  // The check above is meaningful: a train-mode forward does move the BatchNorm statistics.
  scope(() => {
    encoder.forward(trainData.images);
  });
  assert.ok(!(encoder.getBuffer("1.running_mean") as Tensor).equal(before.get("1.running_mean") as Tensor));

  for (const t of before.values()) t.dispose();
  disposeBatches([...trainBatches, ...testBatches]);
  for (const t of [trainData.images, trainData.labels, testData.images, testData.labels]) t.dispose();
  encoder.dispose();
});

test("trainSupervised trains the same encoder end to end; then the linear protocol reads it out", async () => {
  manualSeed(0);
  const encoder = smallEncoder(3);
  const random = smallEncoder(3); // identical initialisation, left untouched (random-init baseline)
  const trainData = quadrantImages(256, 5);
  const testData = quadrantImages(128, 6);
  const trainBatches = batchesOf(trainData, 32);
  const testBatches = batchesOf(testData, 64);
  const live = liveTensors();
  const result = await trainSupervised(encoder, 32, 4, () => trainBatches, { epochs: 4, lr: 0.1, warmupEpochs: 1 });
  assert.equal(liveTensors(), live + 2, "only the head's weight and bias remain");
  assert.equal(result.history.length, 4);
  assert.equal(result.steps, 32);
  assert.ok(
    result.history[3].loss < result.history[0].loss,
    `loss ${result.history.map((h) => h.loss.toFixed(3)).join(" → ")}`,
  );
  assert.ok(result.history[3].lr < 1e-9, "the cosine ends at 0");
  assert.ok(
    encoder.modules().every((m) => m.training),
    "mode restored",
  );
  result.head.dispose();
  const options = { numClasses: 4, linear: { epochs: 20 }, knn: false as const };
  const supervised = await evaluateEncoder(encoder, trainBatches, testBatches, options);
  const baseline = await evaluateEncoder(random, trainBatches, testBatches, options);
  assert.ok(
    supervised.linear !== undefined && supervised.linear.top1 >= 0.95,
    `supervised top1 ${supervised.linear?.top1}`,
  );
  assert.ok(baseline.linear !== undefined);
  const differs = [...encoder.stateDict()].some(([k, t]) => !t.equal(random.stateDict().get(k) as Tensor));
  assert.ok(differs, "the supervised run changed the encoder");
  disposeBatches([...trainBatches, ...testBatches]);
  for (const t of [trainData.images, trainData.labels, testData.images, testData.labels]) t.dispose();
  encoder.dispose();
  random.dispose();
});

test("per-stage readout: pooled features of any stage, one pass for all stages", async () => {
  const model = resnet18({ width: 4, stem: "cifar", inChannels: 1, numClasses: 0, generator: new Generator(1) });
  const stages = model.stages();
  const data = quadrantImages(12, 7);
  const batches = batchesOf(data, 5);
  withEval(model, () =>
    noGrad(() =>
      scope(() => {
        const hs = model.forwardStages(data.images);
        for (let i = 0; i < 4; i++) {
          const f = stageFeatures(stages, data.images, i);
          assert.deepEqual(f.shape, [12, model.stageChannels()[i]]);
          assert.ok(f.allclose(hs[i].mean([2, 3]), 1e-5, 1e-6), `stage ${i}`);
        }
        assert.ok(stageForward(stages, 3)(data.images).allclose(model.forwardFeatures(data.images), 1e-5, 1e-6));
      }),
    ),
  );
  const live = liveTensors();
  const sets = await withEval(model, () => extractStageFeatures(stages, batches, [0, 2]));
  assert.equal(liveTensors(), live + 4);
  assert.deepEqual(
    sets.map((s) => s.features.shape),
    [
      [12, 4],
      [12, 16],
    ],
  );
  const single = await extractFeatures(stageForward(stages, 2), batches, { module: model });
  assert.ok(single.features.allclose(sets[1].features, 1e-5, 1e-6));
  // Without withEval: the stages (Modules) are put in eval mode by extractStageFeatures itself.
  const auto = await extractStageFeatures(stages, batches, [2]);
  assert.ok(auto[0].features.allclose(sets[1].features, 1e-5, 1e-6));
  assert.ok(
    model.modules().every((m) => m.training),
    "modes restored",
  );
  disposeFeatureSet(auto[0]);
  assert.throws(() => stageFeatures(stages, data.images, 4), /stageIndex must be an integer in \[0, 3\]/);
  [...sets, single].forEach(disposeFeatureSet);
  disposeBatches(batches);
  data.images.dispose();
  data.labels.dispose();
  model.dispose();
});

test("async batches (DataLoader-shaped): extraction, evaluation and supervised training stay leak-free", async () => {
  // Like the DataLoader: tensors the caller owns (kept), released by the batch's dispose().
  async function* loaderLike(
    seed: number,
    n: number,
  ): AsyncGenerator<{ views: Tensor[]; labels: Tensor; dispose(): void }> {
    for (let i = 0; i < n; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      const { images, labels } = quadrantImages(16, seed * 100 + i);
      keep(images);
      keep(labels);
      yield { views: [images], labels, dispose: () => [images, labels].forEach((t) => t.release()) };
    }
  }
  const encoder = smallEncoder(4);
  const before = liveTensors();
  const feats = await extractFeatures((x) => encoder.forward(x), fromViewBatches(loaderLike(1, 3)));
  assert.equal(liveTensors(), before + 2);
  assert.deepEqual(feats.features.shape, [48, 32]);
  disposeFeatureSet(feats);
  const sup = await trainSupervised(encoder, 32, 4, () => fromViewBatches(loaderLike(2, 4)), {
    epochs: 2,
    lr: 0.05,
  });
  assert.equal(sup.steps, 8);
  sup.head.dispose();
  const r = await evaluateEncoder(
    encoder,
    () => fromViewBatches(loaderLike(3, 4)),
    () => fromViewBatches(loaderLike(4, 2)),
    { numClasses: 4, linear: { epochs: 5 }, knn: { k: 5 } },
  );
  assert.equal(r.trainSize, 64);
  assert.equal(r.testSize, 32);
  assert.equal(liveTensors(), before, "every batch was disposed, nothing else left");
  assert.ok(
    encoder.modules().every((m) => m.training),
    "modes restored after the async runs",
  );
  encoder.dispose();
});

// ---- real data (skipped when Fashion-MNIST is not installed) ----

const FMNIST = "/usr/share/datasets/fashion-mnist";
test(
  "Fashion-MNIST raw pixels: linear readout of 2000 train / 1000 test images > 0.7",
  { skip: !fs.existsSync(FMNIST) },
  async () => {
    const load = (split: "train" | "test", n: number): { images: Tensor; labels: Tensor } => {
      const s = loadMnistSplit(FMNIST, split);
      const pixels = Float32Array.from(s.images.subarray(0, n * 784), (v) => v / 255);
      const labels = BigInt64Array.from(s.labels.subarray(0, n), (v) => BigInt(v));
      return { images: fromTypedArray(pixels, [n, 1, 28, 28]), labels: fromTypedArray(labels, [n]) };
    };
    const trainData = load("train", 2000);
    const testData = load("test", 1000);
    const [trainBatches, testBatches] = [batchesOf(trainData, 500), batchesOf(testData, 500)];
    const r = await evaluateEncoder(rawPixelsFeatures, trainBatches, testBatches, {
      numClasses: 10,
      linear: { epochs: 30 },
    });
    assert.ok(r.linear !== undefined && r.linear.top1 > 0.7, `linear top1 ${r.linear?.top1}`);
    assert.ok(r.knn !== undefined && r.knn.top1 > 0.6, `kNN top1 ${r.knn?.top1}`);
    assert.equal(r.featureDim, 784);
    disposeBatches([...trainBatches, ...testBatches]);
    console.log(
      `fashion-mnist raw pixels 2000/1000: linear top1 ${r.linear.top1.toFixed(3)}, kNN top1 ${r.knn.top1.toFixed(3)}`,
    );
    for (const t of [trainData.images, trainData.labels, testData.images, testData.labels]) t.dispose();
  },
);

test("progress: extraction reports examples of each split, the linear readout its epochs", async () => {
  const encoder = smallEncoder(5);
  const train = quadrantImages(40, 5);
  const testData = quadrantImages(20, 6);
  const [trainBatches, testBatches] = [batchesOf(train, 16), batchesOf(testData, 16)];
  const seen: string[] = [];
  const r = await evaluateEncoder(encoder, trainBatches, testBatches, {
    linear: { epochs: 3 },
    knn: false,
    trainTotal: 40,
    onProgress: (stage, done, total) => seen.push(`${stage} ${done}/${total}`),
  });
  assert.deepEqual(seen, [
    "train features 16/40",
    "train features 32/40",
    "train features 40/40",
    "test features 16/undefined",
    "test features 20/undefined",
    "linear readout 1/3",
    "linear readout 2/3",
    "linear readout 3/3",
  ]);
  assert.equal(r.testSize, 20);
  // With a weight-decay grid the readout fits once per grid value, then once more.
  const epochs: string[] = [];
  const features = await extractFeatures((x) => encoder.forward(x), trainBatches, { module: encoder, limit: 30 });
  const progress: number[][] = [];
  await extractFeatures((x) => encoder.forward(x), trainBatches, {
    module: encoder,
    limit: 30,
    onProgress: (done, total) => progress.push([done, total ?? -1]),
  }).then(disposeFeatureSet);
  assert.deepEqual(progress, [
    [16, 30],
    [30, 30],
  ]);
  linearReadout(features, features, {
    epochs: 2,
    selectWeightDecay: [0, 1e-3],
    onProgress: (done, total) => epochs.push(`${done}/${total}`),
  });
  assert.deepEqual(epochs, ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6"]);
  disposeFeatureSet(features);
  disposeBatches([...trainBatches, ...testBatches]);
  for (const t of [train.images, train.labels, testData.images, testData.labels]) t.dispose();
  encoder.dispose();
});

test("readoutReport: a test-set size limit (strided subset), progress per evaluated encoder", async () => {
  const rng = new Generator(11);
  const synthetic = (name: string, count: number): ImageDataset => {
    const images = MemoryImages.allocate(count, 1, 8, 8);
    images.data.set(Uint8Array.from(randint(0, 256, [count * 64], { generator: rng }).toArray()));
    const labels = Int32Array.from({ length: count }, (_, i) => i % 3);
    return makeDataset({ name, images, labels, classNames: ["a", "b", "c"] });
  };
  const train = synthetic("synthetic/train", 40);
  const testSet = synthetic("synthetic/test", 20);
  const encoder = resnet18({ width: 4, stem: "cifar", inChannels: 1, numClasses: 0, generator: new Generator(2) });
  const last = new Map<string, string>();
  const report = await readoutReport(encoder, train, testSet, {
    normalize: null,
    readoutEpochs: 2,
    // Two weight decays: each fit runs 2 epochs per candidate on 80% of the train features, then
    // once more on all of them (2 × 3 epochs in all).
    readoutWeightDecays: [0, 1e-3],
    readoutTrainSize: 0,
    readoutTestSize: 10,
    baselines: ["raw-pixels"],
    perStage: false,
    supervisedEpochs: 1,
    batchSize: 16,
    seed: 0,
    freshEncoder: () => {
      throw new Error("not needed for raw pixels");
    },
    onProgress: (what, stage, done, total) => last.set(`${what} ${stage}`, `${done}/${total}`),
  });
  assert.ok(report !== null);
  assert.equal(report.readout.testImages, 10);
  assert.equal(report.readout.trainImages, 40);
  assert.deepEqual(Object.fromEntries(last), {
    "trained train features": "40/40",
    "trained test features": "10/10",
    "trained linear readout": "6/6",
    "raw-pixels train features": "40/40",
    "raw-pixels test features": "10/10",
    "raw-pixels linear readout": "6/6",
  });
  assert.deepEqual(report.readout.weightDecays, [0, 1e-3]);
  assert.ok([0, 1e-3].includes(report.readout.weightDecay ?? NaN), "the chosen weight decay comes from the grid");
  encoder.dispose();
});
