// `loco experiment`: a tiny two-row grid killed (SIGTERM) while its second run trains, then
// restarted: the finished run is not redone, the interrupted one resumes from its checkpoint, and
// the tables come out. Also: --jobs never oversubscribes the cores, grid files are validated.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { threadsPerJob } from "../src/experiments/runner";
import { RESPONSE_GRID, presetSpec, readGridFile } from "../src/experiments/grid";
import { readMetrics } from "../src/learning/metrics";
import { haveFashionMnist, loco, makeTinyFashionMnist, show, startLoco } from "./helpers/runs";

function tinyGrid(dataDir: string): string {
  return `name: tiny
description: tiny Fashion-MNIST copy, ResNet-18 width 4, 2 epochs
protocol:
  data-dir: ${dataDir}
  train-subset: 0
  batch-size: 64
  width: 4
  epochs: 2
  knn-every: 0
  readout-epochs: 1
  readout-train-size: 128
  checkpoint-every: 2
  per-stage: false
seeds: [0]
baselines: []
rows:
  - name: SimCLR
    flags: { method: simclr }
  - name: GIM
    flags: { method: gim }
`;
}

test("jobs × threads never exceeds the cores", () => {
  assert.equal(threadsPerJob(1, 2), 2);
  assert.equal(threadsPerJob(2, 2), 1);
  assert.equal(threadsPerJob(3, 8), 2);
  assert.throws(() => threadsPerJob(3, 2), /--jobs 3 exceeds the 2 cores/);
});

test("the presets hold every row of the authors' response", () => {
  const names = RESPONSE_GRID.map((r) => r.name).join("; ");
  for (const want of [
    /SimCLR, 2-layer/,
    /SimCLR, 4-layer/,
    /GIM, 2-layer/,
    /GIM, 4-layer/,
    /sharing only/,
    /conv decoder only/,
  ]) {
    assert.match(names, want);
  }
  for (const want of [
    /LoCo, 2-layer/,
    /LoCo, 4-layer/,
    /SimCLR \+ conv block/,
    /GIM, sequential/,
    /LoCo, sequential/,
    /feedback alignment/,
  ]) {
    assert.match(names, want);
  }
  for (const p of ["quick", "standard", "paper"] as const) {
    const spec = presetSpec(p);
    assert.deepEqual(spec.baselines, ["random-init", "supervised", "raw-pixels"]);
    assert.equal(spec.rows.length, RESPONSE_GRID.length);
  }
  assert.equal(presetSpec("standard").seeds.length, 3);
});

test("a grid file with an unknown field is refused, naming it", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "loco-grid-"));
  const file = path.join(dir, "g.yaml");
  fs.writeFileSync(file, "name: x\nrowz: []\n");
  assert.throws(() => readGridFile(file), /unknown field 'rowz'/);
  fs.writeFileSync(file, "rows:\n  - name: a\n    flags: { method: [1] }\n");
  assert.throws(() => readGridFile(file), /rows\[0\]\.flags\.method/);
  fs.rmSync(dir, { recursive: true });
});

describe("loco experiment", { skip: haveFashionMnist ? false : "the Fashion-MNIST files are not installed" }, () => {
  let root = "";
  let grid = "";
  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-experiment-"));
    grid = path.join(root, "grid.yaml");
    fs.writeFileSync(grid, tinyGrid(makeTinyFashionMnist(path.join(root, "fm"), 256, 128)));
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  test("bad flags in a row are a usage error before anything runs", async () => {
    const bad = path.join(root, "bad.yaml");
    fs.writeFileSync(bad, `${tinyGrid(path.join(root, "fm"))}  - name: broken\n    flags: { method: nope }\n`);
    const run = await loco(["experiment", bad, "--dir", path.join(root, "bad")]);
    assert.equal(run.status, 2, show(run));
    assert.match(run.stderr, /row 'broken'/);
    assert.equal(fs.existsSync(path.join(root, "bad")), false, "nothing was started");
  });

  test("killed mid-grid and restarted, it finishes without redoing finished runs", async () => {
    const dir = path.join(root, "exp");
    const args = ["experiment", grid, "--dir", dir, "--jobs", "1"];
    const first = startLoco(args, { timeoutMs: 240_000 });
    await first.waitFor(/\[1\/2\] SimCLR \(seed 0\): finished/, 180_000);
    // Stop once the second run has written a checkpoint (so it has something to resume from).
    const checkpoints = path.join(dir, "runs", "gim", "seed-0", "checkpoints");
    for (
      let i = 0;
      i < 600 && !(fs.existsSync(checkpoints) && fs.readdirSync(checkpoints).some((f) => f.endsWith(".safetensors")));
      i++
    ) {
      await new Promise((r) => setTimeout(r, 100));
    }
    first.child.kill("SIGTERM");
    const stopped = await first.done;
    assert.equal(stopped.status, 130, show(stopped));
    const finishedResults = path.join(dir, "runs", "simclr", "seed-0", "results.json");
    const before = { text: fs.readFileSync(finishedResults, "utf8"), mtime: fs.statSync(finishedResults).mtimeMs };
    assert.equal(fs.existsSync(path.join(dir, "runs", "gim", "seed-0", "results.json")), false, "GIM was interrupted");

    const second = await loco(args, { timeoutMs: 240_000 });
    assert.equal(second.status, 0, show(second));
    assert.match(second.stderr, /1 of 2 runs already finished: skipped/);
    assert.match(second.stderr, /GIM \(seed 0\): resumed/);
    assert.doesNotMatch(second.stderr, /SimCLR \(seed 0\): (started|resumed)/);
    assert.equal(fs.readFileSync(finishedResults, "utf8"), before.text);
    assert.equal(fs.statSync(finishedResults).mtimeMs, before.mtime, "the finished run was not redone");
    const gimMetrics = readMetrics(path.join(dir, "runs", "gim", "seed-0", "metrics.jsonl"));
    assert.ok(
      gimMetrics.some((r) => r.type === "resume"),
      "GIM resumed from its checkpoint",
    );
    assert.ok(gimMetrics.some((r) => r.type === "results"));

    const results = JSON.parse(fs.readFileSync(path.join(dir, "results.json"), "utf8")) as {
      rows: { row: string; finished: number; peakBytes: { mean: number } | null }[];
    };
    assert.deepEqual(
      results.rows.map((r) => r.row),
      ["SimCLR", "GIM"],
    );
    for (const r of results.rows) {
      assert.equal(r.finished, 1);
      assert.ok(r.peakBytes !== null && r.peakBytes.mean > 0, `${r.row}: peak memory measured`);
    }
    const md = fs.readFileSync(path.join(dir, "results.md"), "utf8");
    assert.match(md, /\| SimCLR \| 1\/1 \|/);
    assert.match(fs.readFileSync(path.join(dir, "results.csv"), "utf8"), /^row,kind,runs,finished,linear_top1_mean/);
    assert.ok(fs.existsSync(path.join(dir, "report.html")));
  });
});
