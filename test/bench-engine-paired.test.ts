// `npm run bench:engine -- --paired N` (bench/engine.ts, bench/engine_paired.ts) end to end on a tiny
// step: its --json report keeps the headline keys, adds the per-turn ratio statistics, and its
// turns must really interleave (disjoint step intervals in the reported order, the first side
// alternating, one persistent process per side), with the ratios computed from those turns.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { ratioStats, type RatioStats } from "../bench/engine_paired";
import { runBenchJson } from "./helpers/bench";

interface StepOut {
  ms: number;
  startS: number;
  endS: number;
  pid: number;
}

/** The parts of the --json report this test reads. */
interface Report {
  resnet18StepMs: Record<string, number>;
  ratio: Record<string, number>;
  pairedRatio: { resnet18Step: Record<string, RatioStats> };
  settings: {
    paired: {
      turns: number;
      workerPids: { resnet18: Record<string, number> };
      turnsByModel: { resnet18: { order: string[]; steps: Record<string, StepOut> }[] };
    };
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

test("bench:engine --paired: interleaved turns of persistent workers, per-turn ratios with intervals", () => {
  const turns = 6;
  const args = ["--json", "--no-tiny", "--models", "resnet18", "--batch-size", "2", "--pytorch", "tuned"];
  args.push("--paired", String(turns), "--warmup", "1", "--threads", "1");
  const report = runBenchJson<Report>("engine", args);

  assert.ok(report.resnet18StepMs.loco > 0 && report.resnet18StepMs.pytorchTuned > 0, "headline step times");
  const paired = report.settings.paired;
  assert.equal(paired.turns, turns);
  const list = paired.turnsByModel.resnet18;
  assert.equal(list.length, turns);
  const pids = paired.workerPids.resnet18;
  assert.notEqual(pids.loco, pids.pytorchTuned, "one process per side");

  // Every step, in the reported order, starts after the previous one ended: no two overlap.
  const sequence = list.flatMap((t) => t.order.map((side) => ({ side, ...t.steps[side] })));
  for (let i = 1; i < sequence.length; i++) {
    assert.ok(sequence[i].startS >= sequence[i - 1].endS, `step ${i} overlaps the one before`);
  }
  list.forEach((t, i) => {
    assert.deepEqual(t.order, i % 2 === 0 ? ["loco", "pytorchTuned"] : ["pytorchTuned", "loco"], `turn ${i}`);
    for (const side of t.order) assert.equal(t.steps[side].pid, pids[side], `turn ${i}: ${side}'s worker`);
  });
  const ratios = list.map((t) => t.steps.loco.ms / t.steps.pytorchTuned.ms);
  const stats = report.pairedRatio.resnet18Step.pytorchTuned;
  assert.equal(stats.pairs, turns);
  assert.ok(Math.abs(stats.median - median(ratios)) < 1e-12, "median of the per-turn ratios");
  assert.ok(stats.q25 <= stats.median && stats.median <= stats.q75, "quartiles around the median");
  assert.ok(stats.ci95 !== null && stats.ci95[0] <= stats.median && stats.median <= stats.ci95[1], "interval");
  assert.equal(stats.locoFasterPairs, ratios.filter((x) => x < 1).length);
  assert.equal(report.ratio.resnet18StepPaired, stats.median);
  assert.equal(report.resnet18StepMs.loco, median(list.map((t) => t.steps.loco.ms)), "headline from the turns");
});

test("paired ratio statistics: order-statistic interval of the median and its coverage", () => {
  const xs = Array.from({ length: 20 }, (_, i) => 20 - i); // 20, 19, ..., 1
  const s = ratioStats(xs);
  assert.equal(s.median, 10.5);
  assert.equal(s.q25, 5.75);
  assert.equal(s.q75, 15.25);
  // n = 20: [x(6), x(15)], coverage 1 - 2 P(Binomial(20, 1/2) <= 5) = 0.9586...
  assert.deepEqual(s.ci95, [6, 15]);
  assert.ok(Math.abs(s.ciCoverage! - (1 - 2 * (21700 / 2 ** 20))) < 1e-12);
  assert.equal(ratioStats([0.9, 1.1, 0.95, 1.2, 0.8]).ci95, null, "5 pairs cannot give 95%");
  assert.equal(ratioStats([0.9, 1.1, 0.95]).locoFasterPairs, 2);
});
