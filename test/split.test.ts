// Stages at any block boundary: the encoder's blocks, the balanced splits' partition against brute
// force, split parsing and validation, block profiles, and the memory planner's measured search.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Generator, noGrad, randn, scope } from "../src/torch";
import { resnet18, resnet50 } from "../src/models";
import {
  LocalLearner,
  balancedCuts,
  buildStages,
  describeSplit,
  methodPreset,
  parseSplit,
  profileBlocks,
  resolveSplit,
} from "../src/learning";
import { largestFitting, overlapMatters, parseBytes } from "../src/learning/memory";

test("ResNet's blocks: the stem then every residual block, its own split at the layer boundaries", () => {
  const r50 = resnet50({ numClasses: 0, width: 4 });
  assert.equal(r50.blocks().length, 17);
  assert.deepEqual(r50.naturalSplit(), [4, 8, 14]);
  assert.deepEqual(r50.blockNames().slice(0, 5), ["stem", "layer1.0", "layer1.1", "layer1.2", "layer2.0"]);
  assert.deepEqual(r50.blockChannels().slice(0, 5), [4, 16, 16, 16, 32]);
  assert.equal(r50.blocks(), r50.blocks(), "the same array every call");
  r50.dispose();
  const r18 = resnet18({ numClasses: 0, width: 4, stem: "cifar" });
  assert.deepEqual(r18.naturalSplit(), [3, 5, 7]);
  assert.equal(describeSplit(r18.naturalSplit(), 9), "0-2 | 3-4 | 5-6 | 7-8");
  // Stages cut anywhere compose to the encoder's own forward pass.
  const x = randn([4, 3, 16, 16], { generator: new Generator(3) });
  r18.eval();
  noGrad(() =>
    scope(() => {
      const expected = r18.forwardStages(x)[3];
      for (const cuts of [[], [1], [2, 5], [1, 2, 3, 4, 5, 6, 7, 8]]) {
        let h = x;
        for (const s of buildStages(r18, cuts)) h = s.forward(h);
        assert.ok(h.equal(expected), `split ${JSON.stringify(cuts)}`);
      }
    }),
  );
  x.dispose();
  r18.dispose();
});

/** The smallest largest-group sum over every way to cut costs into k groups. */
function bruteForce(costs: number[], k: number): number {
  let best = Infinity;
  const visit = (start: number, groups: number, worst: number): void => {
    if (groups === 1) {
      best = Math.min(
        best,
        Math.max(
          worst,
          costs.slice(start).reduce((a, b) => a + b, 0),
        ),
      );
      return;
    }
    for (let end = start + 1; end <= costs.length - groups + 1; end++) {
      visit(
        end,
        groups - 1,
        Math.max(
          worst,
          costs.slice(start, end).reduce((a, b) => a + b, 0),
        ),
      );
    }
  };
  visit(0, k, 0);
  return best;
}

test("balanced cuts minimise the largest group (against brute force)", () => {
  let seed = 1;
  const random = (): number => ((seed = (seed * 16807) % 2147483647) % 1000) + 1;
  for (let trial = 0; trial < 40; trial++) {
    const n = 1 + (trial % 9);
    const costs = Array.from({ length: n }, random);
    for (let k = 1; k <= n; k++) {
      const cuts = balancedCuts(costs, k);
      assert.equal(cuts.length, k - 1);
      const bounds = [0, ...cuts, n];
      for (let i = 1; i < bounds.length; i++) assert.ok(bounds[i] > bounds[i - 1], `non-empty groups ${cuts}`);
      const worst = Math.max(
        ...bounds.slice(1).map((end, g) => costs.slice(bounds[g], end).reduce((a, b) => a + b, 0)),
      );
      assert.equal(worst, bruteForce(costs, k), `costs ${costs} into ${k}`);
    }
  }
  assert.throws(() => balancedCuts([1, 2], 3), /cannot cut 2 blocks into 3 stages/);
});

test("splits parse and validate with messages naming what is wrong", () => {
  assert.equal(parseSplit("balanced-memory"), "balanced-memory");
  assert.deepEqual(parseSplit("4, 8,14"), [4, 8, 14]);
  assert.throws(() => parseSplit("4,x"), /expected resnet, balanced-memory, balanced-compute or comma-separated/);
  const r18 = resnet18({ numClasses: 0, width: 4, stem: "cifar" });
  assert.deepEqual(resolveSplit(r18, {}), [3, 5, 7]);
  assert.deepEqual(resolveSplit(r18, { split: [2, 6] }), [2, 6]);
  assert.throws(() => resolveSplit(r18, { split: [5, 2] }), /split: expected increasing block indices in 1\.\.8/);
  assert.throws(() => resolveSplit(r18, { split: [0, 2] }), /increasing block indices/);
  assert.throws(() => resolveSplit(r18, { split: [2, 6], stages: 4 }), /stages: 4 stages need 3 block indices/);
  assert.throws(() => resolveSplit(r18, { stages: 8 }), /split "resnet" has the encoder's own 4 stages, not 8/);
  assert.throws(
    () => resolveSplit(r18, { stages: 10, split: "balanced-memory" }, [3, 8, 8]),
    /stages: expected an integer in 1\.\.9/,
  );
  assert.throws(() => resolveSplit(r18, { stages: 3, split: "balanced-compute" }), /needs the input shape/);
  assert.throws(
    () => new LocalLearner(r18, { ...methodPreset("gim", 8), stages: 8 }),
    /split "resnet" has the encoder's own 4 stages/,
  );
  r18.dispose();
});

test("block profiles: measured without touching batch-norm statistics; the balanced splits follow them", () => {
  const r18 = resnet18({ numClasses: 0, width: 4, stem: "cifar" });
  const before = r18.bn1.runningMean!.clone();
  const x = randn([4, 3, 16, 16], { generator: new Generator(4) });
  const profiles = profileBlocks(r18, x);
  assert.ok(r18.bn1.runningMean!.equal(before), "running statistics unchanged");
  assert.equal(Number(r18.bn1.numBatchesTracked!.item()), 0);
  assert.equal(profiles.length, 9);
  for (const p of profiles) assert.ok(p.activationBytes > 0 && p.flops > 0, `${p.name}: ${JSON.stringify(p)}`);
  // The stem's 3→w conv at full resolution: 2 · N·w·H·W · 3·3·3 flops.
  assert.equal(profiles[0].flops, 2 * 4 * 4 * 16 * 16 * 27);
  assert.deepEqual(profiles[8].shape, [4, 32, 2, 2]);
  // Full-resolution blocks hold the most: the memory-balanced split starts its stages early.
  const memory = resolveSplit(r18, { stages: 4, split: "balanced-memory" }, [3, 16, 16]);
  const compute = resolveSplit(r18, { stages: 4, split: "balanced-compute" }, [3, 16, 16]);
  // Bytes grow linearly with the batch: profiling 2 samples or 4 picks the same cuts.
  assert.deepEqual(
    memory,
    balancedCuts(
      profiles.map((p) => p.activationBytes),
      4,
    ),
  );
  assert.ok(memory[0] <= 3 && memory[2] < 7, `memory split ${memory}`);
  assert.equal(compute.length, 3);
  before.dispose();
  x.dispose();
  r18.dispose();
});

test("largestFitting: the largest fitting value, every answer from a probe", () => {
  for (const limit of [1, 2, 3, 17, 100, 1000]) {
    for (const guess of [1, 5, 50, 5000]) {
      const probed = new Set<number>();
      const fits = (n: number): boolean => {
        probed.add(n);
        return n <= limit;
      };
      assert.equal(largestFitting(fits, guess, 1, 1 << 16), limit, `limit ${limit} guess ${guess}`);
      assert.ok(probed.has(limit) && probed.has(limit + 1), `limit ${limit}: the answer and the next were measured`);
    }
  }
  assert.equal(
    largestFitting(() => false, 4, 1, 10),
    null,
  );
  assert.equal(
    largestFitting(() => true, 4, 1, 10),
    10,
  );
});

test("byte sizes and which configs overlap can change", () => {
  assert.equal(parseBytes("8GiB"), 8 * 2 ** 30);
  assert.equal(parseBytes("1.5 MiB"), 1.5 * 2 ** 20);
  assert.equal(parseBytes("2GB"), 2e9);
  assert.throws(() => parseBytes("lots"), /expected a size like 8GiB/);
  assert.equal(overlapMatters(methodPreset("gim", 4)), false);
  assert.equal(overlapMatters(methodPreset("loco", 4)), true);
  assert.equal(overlapMatters(methodPreset("simclr", 4)), true);
  // recompute-all also separates stage and decoder graphs: it matters without late messages too.
  assert.equal(overlapMatters(methodPreset("gim", 4), "recompute-all"), true);
  assert.equal(overlapMatters(methodPreset("gim", 4), "recompute-min"), true);
  assert.equal(overlapMatters(methodPreset("loco", 4), "retain"), false);
});
