// The pipeline simulator (src/learning/stage-sim.ts) on costs whose schedules can be worked out by
// hand: GIM on 2 equal ranks overlaps completely; end to end waits for the whole backward; LoCo
// synchronous waits for the rank above's first stage; pipelined LoCo does not wait, and keeps the
// graph for the late message or recomputes it; contention slows ranks that compute at once.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import {
  type SimulationInput,
  type StageCosts,
  assignStages,
  bestCuts,
  mergeBlockCosts,
  methodPreset,
  resolveLosses,
  simulatePipeline,
} from "../src/learning";

const stage = (over: Partial<StageCosts> = {}): StageCosts => ({
  forwardMs: 1,
  backwardInputMs: 2,
  backwardParamsMs: 2,
  decoderMs: 1,
  updateMs: 0,
  outputBytes: 0,
  ...over,
});
const instant = { latencyMs: 0, bytesPerMs: Infinity };

function simulate(
  method: "simclr" | "gim" | "loco",
  ranks: number,
  schedule: "sync" | "pipelined" = "sync",
  extra: Partial<SimulationInput> = {},
) {
  return simulatePipeline({
    costs: [stage(), stage()],
    losses: resolveLosses(methodPreset(method, 2), 2),
    layout: assignStages(2, ranks),
    schedule,
    images: 1000,
    link: instant,
    ...extra,
  });
}

const close = (a: number, b: number, what: string): void => assert.ok(Math.abs(a - b) < 1e-9, `${what}: ${a} vs ${b}`);

test("GIM on 2 equal ranks: twice the single process's throughput, no waiting", () => {
  close(simulate("gim", 1).stepMs, 8, "1 rank: F + D + B per stage");
  const two = simulate("gim", 2);
  close(two.stepMs, 4, "2 ranks");
  two.waitShare.forEach((w, r) => close(w, 0, `rank ${r} wait`));
});

test("end to end on 2 ranks: the same step time as one process, each rank waiting for the other", () => {
  // F0 + F1 + D1 + B1 (with input gradient) + B0 (parameters only) = 7.
  close(simulate("simclr", 1).stepMs, 7, "1 rank");
  const two = simulate("simclr", 2);
  close(two.stepMs, 7, "2 ranks");
  close(two.waitShare[0], 4 / 7, "rank 0 waits for F1 + D1 + B1");
  close(two.waitShare[1], 3 / 7, "rank 1 waits for F0 + B0");
});

test("LoCo: synchronous waits for the rank above's first stage; pipelined does not (it keeps the graph or recomputes)", () => {
  // One process: F0 D0 | F1 D1 B1 (with input gradient) | one pass B0 for both messages to stage 1
  // (the router sums messages of equal remaining reach) = 2 + 4 + 2.
  close(simulate("loco", 1).stepMs, 8, "1 rank");
  // Rank 0: F0 D0, then waits for rank 1's message (F1 D1 B1 from t=1, at t=5), then B0: 7.
  const sync = simulate("loco", 2);
  close(sync.stepMs, 7, "sync");
  close(sync.waitShare[0], 3 / 7, "sync rank 0 waits for F1 D1 B1 less its D0");
  // Pipelined, recompute: rank 0 runs F0 D0 B0 + F0 (recompute) + B0 = 7, never waiting (its own
  // message and the late one belong to different batches: two passes); rank 1 (4 per step) waits.
  const recompute = simulate("loco", 2, "pipelined", { lateMessages: "recompute" });
  close(recompute.stepMs, 7, "pipelined, recompute");
  close(recompute.waitShare[0], 0, "pipelined rank 0");
  close(recompute.waitShare[1], 3 / 7, "pipelined rank 1");
  // Pipelined, keep-graph (the default): rank 0's own message and the late one share the router's
  // group at stage 1, so one pass on the kept graph serves both, a step late: F0 D0 + B0 = 4, as
  // rank 1's F1 D1 B1; neither waits.
  const kept = simulate("loco", 2, "pipelined");
  close(kept.stepMs, 4, "pipelined, keep-graph");
  kept.waitShare.forEach((w, r) => close(w, 0, `keep-graph rank ${r} wait`));
});

test("Gloo's hand-over: a message leaves once its receive is posted; the activation's is posted a step ahead", () => {
  const link = { latencyMs: 0.5, bytesPerMs: Infinity };
  // GIM on 2 equal ranks (4 per step each): rank 0 runs ahead. Rank 1 posted each activation's
  // receive when it took the previous one (src/learning/stage-activations.ts), long before the
  // send, so the data leaves at once and arrives L later: after rank 1's first step neither waits.
  // (With a header before each activation, whose data receive was posted when the header arrived,
  // rank 1 waited 4L a step.)
  const gim = simulate("gim", 2, "sync", { link });
  close(gim.stepMs, 4, "step");
  gim.waitShare.forEach((w, r) => close(w, 0, `GIM rank ${r} wait`));
  // End to end: the activation arrives L after it is sent; the gradient, whose receive rank 0
  // posted when its forward had sent the activation, L after it is sent: 7 + 2L (with the header, 7 + 4L).
  close(simulate("simclr", 2, "sync", { link }).stepMs, 7 + 2 * 0.5, "end to end");
});

test("contention slows the ranks while both compute, not while one waits", () => {
  // GIM on 2 equal ranks: both always busy, each computes 1.25x slower.
  const gim = simulate("gim", 2, "sync", { contention: 1.25 });
  close(gim.stepMs, 4 * 1.25, "GIM, both busy");
  gim.slowdown.forEach((f) => close(f, 1.25, "slowdown"));
  // End to end: rank 0 is busy 3 of 7, rank 1 4 of 7; each slows by the other's busy share, so
  // the step grows by less than the factor.
  const e2e = simulate("simclr", 2, "sync", { contention: 1.25 });
  assert.ok(e2e.stepMs > 7 && e2e.stepMs < 7 * 1.25, `end to end: ${e2e.stepMs}`);
  assert.ok(e2e.slowdown[0] > e2e.slowdown[1], "rank 0 computes while the busier rank 1 does");
  close(simulate("gim", 1, "sync", { contention: 1.25 }).stepMs, 8, "one rank: nothing to contend with");
});

test("merged block costs and the best cuts", () => {
  const blocks = [stage({ forwardMs: 8 }), stage(), stage(), stage()];
  const merged = mergeBlockCosts(blocks, [1]);
  assert.deepEqual(
    merged.map((c) => c.forwardMs),
    [8, 3],
  );
  close(merged[1].backwardParamsMs, 2 + 2 + 2, "a parameters-only pass needs the inner input gradients");
  const gim = resolveLosses(methodPreset("gim", 2), 2);
  const speed = (costs: StageCosts[]): number =>
    simulatePipeline({ costs, losses: gim, layout: assignStages(2, 2), schedule: "sync", images: 1, link: instant })
      .imagesPerSecond;
  assert.deepEqual(bestCuts(blocks, 2, speed, [3]), [1], "the heavy first block alone");
});
