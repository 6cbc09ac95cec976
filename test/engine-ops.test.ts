// `npm run bench:engine-ops` (bench/engine_ops.ts) end to end on a tiny step: it builds
// bench/opcount.cpp, runs loco's step and PyTorch's under it, and its tables must add up to each
// phase's total and count the operators each side runs (the same, but for loco's batch norm + ReLU
// nodes).
import { test } from "node:test";
import * as assert from "node:assert/strict";
import type { PhaseTable } from "../bench/engine_ops_report";
import { runBenchJson } from "./helpers/bench";

/** The parts of the script's --json report this test reads. */
interface Report {
  phases: Record<string, { a: { steps: number; cpuMs: number }; b: { steps: number; cpuMs: number } }>;
  tables: PhaseTable[];
}

test("bench:engine-ops: per-operator tables that add up to each phase, and the operators each side runs", () => {
  const args = ["--model", "resnet18", "--batch-size", "2", "--steps", "2", "--warmup", "1"];
  args.push("--rounds", "1", "--json");
  const report = runBenchJson<Report>("engine_ops", args);

  for (const phase of ["forward", "backward", "optimizer"]) {
    assert.equal(report.phases[phase].a.steps, 2, `${phase}: loco's recorded steps`);
    assert.equal(report.phases[phase].b.steps, 2, `${phase}: PyTorch's recorded steps`);
  }
  for (const t of report.tables) {
    const sumA = t.rows.reduce((s, row) => s + row.msA, 0);
    const sumB = t.rows.reduce((s, row) => s + row.msB, 0);
    assert.ok(Math.abs(sumA - t.totalA.cpu / 1e3) < 1e-6, `${t.phase}/${t.view}: loco's rows add up`);
    assert.ok(Math.abs(sumB - t.totalB.cpu / 1e3) < 1e-6, `${t.phase}/${t.view}: PyTorch's rows add up`);
    assert.ok(
      t.rows.every((row) => row.kind === "-" || row.msA >= 0),
      `${t.phase}/${t.view}: no negative time`,
    );
  }
  const count = (phase: string, view: string, name: string): [number, number] => {
    const row = report.tables.find((t) => t.phase === phase && t.view === view)?.rows.find((x) => x.name === name);
    return row === undefined ? [0, 0] : [row.countA, row.countB];
  };
  // CIFAR ResNet-18: 20 convolutions (17 3x3 + 3 shortcuts), 21 batch norms (20 + the head's).
  // loco runs 18 of them with the ReLU after them as one node (F.batchNormReLU: the stem's, both
  // of each block's, the head's), PyTorch all 21 as batch_norm; the 3 shortcut ones alike.
  assert.deepEqual(count("forward", "top", "aten::conv2d"), [20, 20]);
  assert.deepEqual(count("forward", "top", "aten::batch_norm"), [3, 21]);
  assert.deepEqual(count("forward", "top", "loco::batch_norm_relu"), [18, 0]);
  assert.deepEqual(count("backward", "self", "aten::convolution_backward"), [20, 20]);
  assert.deepEqual(count("backward", "self", "aten::native_batch_norm_backward"), [3, 21]);
});
