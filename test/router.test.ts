// The gradient router against docs/methods.md's reference (recompute stages k−r … k from
// detach(h_{k−r−1}) for each loss, backpropagate fully, sum parameter gradients), on a ResNet-18
// with batch norm, for SimCLR end to end, GIM, LoCo (reach 1 and 2) and ablations. The models run in
// float64, so "equal to float rounding" can be asserted tightly although the router sums messages
// before a backward pass where the reference sums parameter gradients after.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  type Tensor,
  Generator,
  collectGarbage,
  manualSeed,
  memoryStats,
  noGrad,
  randn,
  resetPeakMemory,
  scope,
} from "../src/torch";
import { resnet18 } from "../src/models";
import {
  LocalLearner,
  type LocalLearningConfig,
  OVERLAP_MODES,
  methodPreset,
  ntXent,
  routeStep,
  stageCountOf,
} from "../src/learning";
import { SGD } from "../src/optim";

function makeLearner(
  config: LocalLearningConfig,
  width = 8,
  dtype: "float32" | "float64" = "float64",
): { learner: LocalLearner; dispose: () => void } {
  manualSeed(7);
  const encoder = resnet18({ stem: "cifar", width, numClasses: 0, generator: new Generator(7), dtype });
  const learner = new LocalLearner(encoder, config, { generator: new Generator(8), inputShape: [3, 16, 16] }).to(dtype);
  return {
    learner,
    dispose: () => {
      learner.dispose();
      encoder.dispose();
    },
  };
}

/** Reads and clears every parameter's gradient (null when it has none). */
function takeGrads(params: Tensor[]): (Float64Array | null)[] {
  return params.map((p) => {
    const g = p.grad;
    if (g === null) return null;
    const data = Float64Array.from(g.data() as Float64Array);
    g.dispose();
    p.grad = null;
    return data;
  });
}

function maxRelativeDifference(a: (Float64Array | null)[], b: (Float64Array | null)[]): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    assert.equal(x === null, y === null, `parameter ${i}: gradient present in one result only`);
    if (x === null || y === null) continue;
    let scale = 0;
    for (const v of y) scale = Math.max(scale, Math.abs(v));
    for (let j = 0; j < x.length; j++) worst = Math.max(worst, Math.abs(x[j] - y[j]) / Math.max(scale, 1e-12));
  }
  return worst;
}

/** docs/methods.md's reference: one full recompute-and-backprop per loss. */
function referenceGrads(learner: LocalLearner, views: Tensor): (Float64Array | null)[] {
  const stages = learner.stages;
  scope(() => {
    const h: Tensor[] = [];
    noGrad(() => {
      let x = views;
      for (const s of stages) h.push((x = s.forward(x)));
    });
    learner.losses.forEach((loss, i) => {
      const first = loss.stage - loss.reach;
      let x = first === 0 ? views : h[first - 1].detach();
      for (let k = first; k <= loss.stage; k++) x = stages[k].forward(x);
      ntXent(learner.decoder(i).forward(x), loss.temperature).backward();
    });
  });
  return takeGrads(learner.allParameters());
}

const configs: [string, (k: number) => LocalLearningConfig][] = [
  ["simclr (end to end)", (k) => methodPreset("simclr", k)],
  ["gim", (k) => methodPreset("gim", k)],
  ["loco (reach 1, c=1)", (k) => methodPreset("loco", k)],
  ["loco reach 2", (k) => ({ ...methodPreset("loco", k), reach: 2 })],
  ["sharing only (reach 1, c=0)", (k) => ({ ...methodPreset("loco", k), convBlocks: 0 })],
  ["conv decoder only (reach 0, c=1)", (k) => ({ ...methodPreset("gim", k), convBlocks: 1 })],
  ["losses at stages 2 and 4, 4-layer MLP", (k) => ({ ...methodPreset("loco", k), lossStages: [2, 4], mlpLayers: 4 })],
];

for (const [name, make] of configs) {
  test(`router equals the recompute reference: ${name}`, () => {
    const { learner, dispose } = makeLearner(make(4));
    const views = randn([8, 3, 16, 16], { generator: new Generator(1), dtype: "float64" });
    learner.train();
    const result = learner.step(views);
    assert.ok(result.lossValues.every(Number.isFinite), `losses ${result.lossValues.join(", ")}`);
    const routed = takeGrads(learner.allParameters());
    assert.ok(routed.some((g) => g !== null));
    const reference = referenceGrads(learner, views);
    const diff = maxRelativeDifference(routed, reference);
    assert.ok(diff <= 1e-12, `max relative gradient difference ${diff}`);
    views.dispose();
    dispose();
  });
}

// Stages at any block boundary (ResNet-18: stem + 8 blocks) and every overlap mode: every split
// and mode must give the reference's gradients.
const splits: [string, Pick<LocalLearningConfig, "stages" | "split">][] = [
  ["resnet", { split: "resnet" }],
  ["balanced-memory K=8", { stages: 8, split: "balanced-memory" }],
  ["balanced-compute K=3", { stages: 3, split: "balanced-compute" }],
  ["blocks 2,5", { split: [2, 5] }],
];
for (const [splitName, split] of splits) {
  for (const overlap of OVERLAP_MODES) {
    for (const [name, make] of configs.slice(0, 4)) {
      test(`router equals the recompute reference: ${name}, split ${splitName}, overlap ${overlap}`, () => {
        const stageCount = stageCountOf(split, 4);
        const { learner, dispose } = makeLearner({ ...make(stageCount), ...split, overlap });
        assert.equal(learner.stages.length, stageCount);
        const views = randn([8, 3, 16, 16], { generator: new Generator(1), dtype: "float64" });
        learner.train();
        const result = learner.step(views);
        assert.ok(result.lossValues.every(Number.isFinite), `losses ${result.lossValues.join(", ")}`);
        const routed = takeGrads(learner.allParameters());
        const reference = referenceGrads(learner, views);
        const diff = maxRelativeDifference(routed, reference);
        assert.ok(diff <= 1e-10, `max relative gradient difference ${diff}`);
        views.dispose();
        dispose();
      });
    }
  }
}

// recompute-min drops and restores stage inputs and outputs: every loss layout, including losses
// that skip stages (a restore then runs through stages without a pass of their own).
for (const [name, make] of configs) {
  test(`router equals the recompute reference: ${name}, overlap recompute-min`, () => {
    const { learner, dispose } = makeLearner({ ...make(4), overlap: "recompute-min" });
    const views = randn([8, 3, 16, 16], { generator: new Generator(1), dtype: "float64" });
    learner.train();
    assert.ok(learner.step(views).lossValues.every(Number.isFinite));
    const diff = maxRelativeDifference(takeGrads(learner.allParameters()), referenceGrads(learner, views));
    assert.ok(diff <= 1e-10, `max relative gradient difference ${diff}`);
    views.dispose();
    dispose();
  });
}

test("float32: every overlap mode equals the reference to float32 rounding and the others exactly (LoCo, balanced-memory K=8)", () => {
  const grads = OVERLAP_MODES.map((overlap) => {
    const { learner, dispose } = makeLearner(
      { ...methodPreset("loco", 8), stages: 8, split: "balanced-memory", overlap },
      8,
      "float32",
    );
    const views = randn([8, 3, 16, 16], { generator: new Generator(1) });
    learner.step(views);
    const routed = takeGrads(learner.allParameters());
    // Summing messages before a pass (router) or gradients after (reference) rounds differently:
    // about 2e-6 relative in float32 over eight stages, for either mode.
    const diff = maxRelativeDifference(routed, referenceGrads(learner, views));
    assert.ok(diff <= 1e-5, `${overlap}: max relative gradient difference ${diff}`);
    views.dispose();
    dispose();
    return routed;
  });
  for (let i = 1; i < grads.length; i++) assert.equal(maxRelativeDifference(grads[i], grads[0]), 0, OVERLAP_MODES[i]);
});

/** Every batch norm buffer of the encoder's stages, copied (running_mean, running_var, num_batches_tracked). */
function bnBuffers(learner: LocalLearner): [string, Tensor][] {
  return learner.stages.flatMap((s, k) => s.namedBuffers().map(([n, b]): [string, Tensor] => [`${k}.${n}`, b.clone()]));
}

for (const [name, config, overlap] of [
  ["loco", methodPreset("loco", 4), "recompute"],
  ["loco reach 2", { ...methodPreset("loco", 4), reach: 2 }, "recompute"],
  ["simclr (end to end)", methodPreset("simclr", 4), "recompute"],
  ["loco", methodPreset("loco", 4), "recompute-all"],
  ["gim", methodPreset("gim", 4), "recompute-all"],
  ["loco", methodPreset("loco", 4), "recompute-min"],
  ["loco reach 2", { ...methodPreset("loco", 4), reach: 2 }, "recompute-min"],
  ["simclr (end to end)", methodPreset("simclr", 4), "recompute-min"],
  ["losses at stages 2 and 4", { ...methodPreset("loco", 4), lossStages: [2, 4] as number[] }, "recompute-min"],
] as const) {
  test(`overlap ${overlap} updates batch-norm running statistics once: ${name}`, () => {
    // What one forward pass in training mode does to the statistics, from the same initial state.
    const expected = makeLearner(config);
    const views = randn([8, 3, 16, 16], { generator: new Generator(6), dtype: "float64" });
    noGrad(() => {
      let x = views;
      for (const s of expected.learner.stages) x = s.forward(x);
    });
    const once = bnBuffers(expected.learner);
    expected.dispose();

    const { learner, dispose } = makeLearner({ ...config, overlap });
    const losses = learner.losses.map((l, i) => ({
      stage: l.stage,
      reach: l.reach,
      decoder: learner.decoder(i),
      loss: (z: Tensor) => ntXent(z, l.temperature),
    }));
    const { recomputesPerStage, passesPerStage, restoresPerStage } = routeStep(learner.stages, losses, views, {
      overlap,
    });
    if (overlap !== "recompute") assert.deepEqual(recomputesPerStage, passesPerStage, "every pass recomputes");
    // recompute-min also reruns graph-free forwards (LoCo's next-stage inputs, dropped during the
    // bridge passes below them; the top stage's input, dropped during its decoder's pass): the
    // statistics must not count those either.
    const restores = `restores per stage: ${restoresPerStage.join(", ")}`;
    if (overlap === "recompute-min")
      assert.ok(
        restoresPerStage.some((n) => n > 0),
        restores,
      );
    else
      assert.ok(
        restoresPerStage.every((n) => n === 0),
        restores,
      );
    assert.ok(
      recomputesPerStage.some((n) => n > 0),
      `the step recomputed stages (${recomputesPerStage.join(", ")})`,
    );
    const after = bnBuffers(learner);
    assert.equal(after.length, once.length);
    for (let i = 0; i < once.length; i++) {
      assert.equal(after[i][0], once[i][0]);
      assert.ok(after[i][1].equal(once[i][1]), `${after[i][0]} differs from one forward pass's update`);
    }
    for (const [, t] of [...once, ...after]) t.dispose();
    takeGrads(learner.allParameters());
    views.dispose();
    dispose();
  });
}

test("every overlap mode trains identically: same losses and weights over three SGD steps", () => {
  const runs = OVERLAP_MODES.map((overlap) => {
    const { learner, dispose } = makeLearner({ ...methodPreset("loco", 4), overlap });
    const sgd = new SGD(learner.allParameters(), { lr: 0.1, momentum: 0.9 });
    const losses: number[][] = [];
    for (let step = 0; step < 3; step++) {
      const views = randn([8, 3, 16, 16], { generator: new Generator(10 + step), dtype: "float64" });
      sgd.zeroGrad();
      losses.push(learner.step(views).lossValues);
      sgd.step();
      views.dispose();
    }
    const weights = learner.allParameters().map((p) => Float64Array.from(p.data() as Float64Array));
    dispose();
    return { losses, weights };
  });
  for (const run of runs.slice(1)) {
    assert.deepEqual(run.losses, runs[0].losses);
    assert.deepEqual(run.weights, runs[0].weights);
  }
});

test("router end to end equals a plain single backward", () => {
  const { learner, dispose } = makeLearner(methodPreset("simclr", 4));
  const views = randn([8, 3, 16, 16], { generator: new Generator(2), dtype: "float64" });
  learner.step(views);
  const routed = takeGrads(learner.allParameters());
  scope(() => {
    let x = views;
    for (const s of learner.stages) x = s.forward(x);
    ntXent(learner.decoder(0).forward(x), 0.5).backward();
  });
  const plain = takeGrads(learner.allParameters());
  assert.equal(maxRelativeDifference(routed, plain), 0);
  views.dispose();
  dispose();
});

test("sequential schedule: a phase trains its stage only, lower stages frozen in eval, upper not computed", () => {
  const { learner, dispose } = makeLearner({ ...methodPreset("gim", 4), schedule: "sequential" });
  const views = randn([8, 3, 16, 16], { generator: new Generator(3), dtype: "float64" });
  learner.train();
  learner.setPhase(1);
  assert.deepEqual(learner.trainableStages(), [false, true, false, false]);
  assert.equal(learner.stages[0].training, false, "stage 1 is in eval mode");
  assert.equal(learner.stages[1].training, true);
  const runningMeans = learner.stages.map((s) =>
    s
      .namedBuffers()
      .find(([n]) => n.endsWith("running_mean"))![1]
      .clone(),
  );
  const { lossValues } = learner.step(views);
  assert.ok(Number.isFinite(lossValues[1]) && lossValues.filter(Number.isFinite).length === 1);
  const grads = learner.stages.map((s) => s.parameters().some((p) => p.grad !== null));
  assert.deepEqual(grads, [false, true, false, false]);
  const decoderGrads = learner.decoders.children().map((d) => d.parameters().some((p) => p.grad !== null));
  assert.deepEqual(decoderGrads, [false, true, false, false]);
  const changed = learner.stages.map((s, k) => {
    const now = s.namedBuffers().find(([n]) => n.endsWith("running_mean"))![1];
    return !now.equal(runningMeans[k]);
  });
  assert.deepEqual(changed, [false, true, false, false], "only the trained stage updates BN statistics");
  // The phase's gradient equals the reference of that loss alone.
  const routed = takeGrads(learner.allParameters());
  scope(() => {
    const h0 = noGrad(() => learner.stages[0].forward(views));
    ntXent(learner.decoder(1).forward(learner.stages[1].forward(h0.detach())), 0.5).backward();
  });
  assert.equal(maxRelativeDifference(routed, takeGrads(learner.allParameters())), 0);
  runningMeans.forEach((t) => t.dispose());
  views.dispose();
  dispose();
});

/** Wraps each stage to record the bytes libtorch holds when its forward starts. */
function recordStageEntry(learner: LocalLearner): number[] {
  const entry: number[] = [];
  learner.stages.forEach((stage, k) => {
    const forward = stage.forward.bind(stage);
    stage.forward = (x: Tensor) => {
      entry[k] = memoryStats().currentBytes;
      return forward(x);
    };
  });
  return entry;
}

function measure(config: LocalLearningConfig): { peak: number; entry: number[]; passes: number[] } {
  const { learner, dispose } = makeLearner(config, 16, "float32");
  const views = randn([16, 3, 32, 32], { generator: new Generator(4) });
  learner.step(views); // the first step allocates gradients
  const entry = recordStageEntry(learner);
  collectGarbage(); // earlier tests' dropped handles, collected mid-step, would lower the peak
  resetPeakMemory();
  const start = memoryStats().currentBytes;
  learner.step(views);
  const peak = memoryStats().peakBytes - start;
  const passes = learner.losses.map(() => 0);
  views.dispose();
  dispose();
  return { peak, entry: entry.map((b) => b - start), passes };
}

test("memory-efficient order: a stage's graph is freed once no message can reach it", () => {
  const simclr = measure(methodPreset("simclr", 4));
  const gim = measure(methodPreset("gim", 4));
  const loco = measure(methodPreset("loco", 4));
  const locoReach3 = measure({ ...methodPreset("loco", 4), reach: 3 });
  // End to end holds every stage graph until its single loss; GIM frees each right after its loss.
  assert.ok(gim.peak < simclr.peak, `gim ${gim.peak} vs simclr ${simclr.peak}`);
  // With reach r at most r+1 stage graphs are alive: reach 1 peaks below reach 3.
  assert.ok(loco.peak < locoReach3.peak, `loco ${loco.peak} vs reach 3 ${locoReach3.peak}`);
  // When stage 4 starts, end to end still holds stages 1-3's activations; GIM holds little more
  // than h_3 (S_1's graph, the largest, is long gone).
  assert.ok(
    gim.entry[3] < 0.25 * simclr.entry[3],
    `bytes at S4's start: gim ${gim.entry[3]} vs simclr ${simclr.entry[3]}`,
  );
  // LoCo keeps S_3 (for the bridge from L_4) but has freed S_1 and S_2.
  assert.ok(
    loco.entry[3] < 0.6 * simclr.entry[3],
    `bytes at S4's start: loco ${loco.entry[3]} vs simclr ${simclr.entry[3]}`,
  );
});

test("overlap recompute: LoCo holds one stage graph, below retain's peak and at most GIM's plus a conv decoder", () => {
  const retain = measure(methodPreset("loco", 4));
  const recompute = measure({ ...methodPreset("loco", 4), overlap: "recompute" });
  const gimConv = measure({ ...methodPreset("gim", 4), convBlocks: 1 });
  assert.ok(recompute.peak < 0.85 * retain.peak, `recompute ${recompute.peak} vs retain ${retain.peak}`);
  // LoCo's decoders are GIM's with one conv block: recompute brings LoCo down to that.
  assert.ok(recompute.peak <= 1.05 * gimConv.peak, `recompute ${recompute.peak} vs gim with c=1 ${gimConv.peak}`);
});

test("overlap recompute-all: a stage graph never coexists with a decoder graph, the peak falls where they would", () => {
  // One block per stage and two conv blocks per decoder: a decoder graph outweighs its stage's, and
  // with retained or on-time graphs the two are alive together at each loss.
  const config = { stages: 9, split: "balanced-memory", convBlocks: 2 } as const;
  const gim = measure({ ...methodPreset("gim", 9), ...config });
  const gimAll = measure({ ...methodPreset("gim", 9), ...config, overlap: "recompute-all" });
  const loco = measure({ ...methodPreset("loco", 9), ...config, overlap: "recompute" });
  const locoAll = measure({ ...methodPreset("loco", 9), ...config, overlap: "recompute-all" });
  assert.ok(gimAll.peak < 0.9 * gim.peak, `gim: recompute-all ${gimAll.peak} vs retain ${gim.peak}`);
  assert.ok(locoAll.peak < 0.9 * loco.peak, `loco: recompute-all ${locoAll.peak} vs recompute ${loco.peak}`);
});

test("overlap recompute-min: a pass holds nothing of the stages above it, LoCo below recompute-all and at GIM's peak", () => {
  // One block per stage: recompute-all's bridge pass through stage k-1 still holds x_k, h_k and the
  // message, GIM's pass h_k and the message; recompute-min holds x_{k-1}, the recomputed graph and
  // its backward buffers.
  const config = { stages: 9, split: "balanced-memory" } as const;
  const locoAll = measure({ ...methodPreset("loco", 9), ...config, overlap: "recompute-all" });
  const locoMin = measure({ ...methodPreset("loco", 9), ...config, overlap: "recompute-min" });
  const gimAll = measure({ ...methodPreset("gim", 9), ...config, overlap: "recompute-all" });
  const gimMin = measure({ ...methodPreset("gim", 9), ...config, overlap: "recompute-min" });
  const gimConvMin = measure({ ...methodPreset("gim", 9), ...config, convBlocks: 1, overlap: "recompute-min" });
  assert.ok(locoMin.peak < 0.95 * locoAll.peak, `loco: recompute-min ${locoMin.peak} vs recompute-all ${locoAll.peak}`);
  assert.ok(gimMin.peak < 0.9 * gimAll.peak, `gim: recompute-min ${gimMin.peak} vs recompute-all ${gimAll.peak}`);
  // LoCo's decoders are GIM's with one conv block: with recompute-min the bridge costs nothing more.
  assert.ok(locoMin.peak <= 1.02 * gimConvMin.peak, `loco ${locoMin.peak} vs gim with c=1 ${gimConvMin.peak}`);
});

test("messages with the same remaining reach share one backward pass", () => {
  const { learner, dispose } = makeLearner(methodPreset("loco", 4));
  const views = randn([8, 3, 16, 16], { generator: new Generator(5), dtype: "float64" });
  const stages = learner.stages;
  const losses = learner.losses.map((l, i) => ({
    stage: l.stage,
    reach: l.reach,
    decoder: learner.decoder(i),
    loss: (z: Tensor) => ntXent(z, l.temperature),
  }));
  // LoCo: S_1 gets its own message (reach clipped to 0) and the bridge from L_2 (ρ 0): one pass.
  // S_2 and S_3 get their own (ρ 1, continues down) and a bridge (ρ 0): two passes; S_4 one.
  const { passesPerStage } = routeStep(stages, losses, views);
  assert.deepEqual(passesPerStage, [1, 2, 2, 1]);
  takeGrads(learner.allParameters());
  views.dispose();
  dispose();
});
