// `loco experiment`: a tiny two-row grid SIGKILLed while its first run trains (the child stops
// with it, its checkpoint intact), restarted, killed (SIGTERM) while its second run trains, then
// restarted: the finished run is not redone, the interrupted ones resume from their checkpoints, and
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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitForCheckpoint(runDir: string): Promise<void> {
  const checkpoints = path.join(runDir, "checkpoints");
  for (
    let i = 0;
    i < 1200 && !(fs.existsSync(checkpoints) && fs.readdirSync(checkpoints).some((f) => f.endsWith(".safetensors")));
    i++
  ) {
    await sleep(100);
  }
}

/** The pid of the `loco train` process training into runDir (from /proc), or null. */
function trainPid(runDir: string): number | null {
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(path.join("/proc", entry, "cmdline"), "utf8").split("\0");
    } catch {
      continue;
    }
    const i = argv.indexOf("--run-dir");
    if (argv.includes("train") && i >= 0 && argv[i + 1] === runDir) return Number(entry);
  }
  return null;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

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
finetune:
  fractions: [0.5]
  flags: { epochs: 1, batch-size: 32 }
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
  fs.writeFileSync(file, "finetune: [0.01, 2]\n");
  assert.throws(() => readGridFile(file), /finetune\.fractions: expected a list of label fractions in \(0, 1\]/);
  fs.writeFileSync(file, "finetune: { fractions: [0.1], flags: { seed: 3 } }\n");
  assert.throws(() => readGridFile(file), /finetune\.flags\.seed/);
  fs.writeFileSync(file, "finetune: [0.1, 0.01]\n");
  assert.deepEqual(readGridFile(file).finetune, { fractions: [0.1, 0.01], flags: {} });
  fs.writeFileSync(file, "finetune: []\n");
  assert.equal(readGridFile(file).finetune, undefined);
  fs.rmSync(dir, { recursive: true });
});

describe(
  "loco experiment",
  {
    skip: !haveFashionMnist
      ? "the Fashion-MNIST files are not installed"
      : !fs.existsSync("/proc/self/cmdline")
        ? "needs /proc to find the child process"
        : false,
  },
  () => {
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
      fs.writeFileSync(bad, tinyGrid(path.join(root, "fm")).replace("epochs: 1, batch-size: 32", "epochz: 1"));
      const badFinetune = await loco(["experiment", bad, "--dir", path.join(root, "bad")]);
      assert.equal(badFinetune.status, 2, show(badFinetune));
      assert.match(badFinetune.stderr, /finetune flags: .*epochz/);
      assert.equal(fs.existsSync(path.join(root, "bad")), false, "nothing was started");
    });

    test("killed mid-grid (SIGKILL, then SIGTERM) and restarted, it finishes without redoing finished runs", async () => {
      const dir = path.join(root, "exp");
      const args = ["experiment", grid, "--dir", dir, "--jobs", "1"];
      // SIGKILL of the runner while its first run trains: the child `loco train` notices (it watches
      // its parent), checkpoints and exits within seconds instead of training on as an orphan.
      const killed = startLoco(args, { timeoutMs: 600_000 });
      const simclrDir = path.join(dir, "runs", "simclr", "seed-0");
      await waitForCheckpoint(simclrDir);
      const orphan = trainPid(simclrDir);
      assert.ok(orphan !== null, "the SimCLR run's `loco train` process is running");
      killed.child.kill("SIGKILL");
      await killed.done;
      const killedAt = Date.now();
      while (processAlive(orphan) && Date.now() - killedAt < 30_000) await sleep(100);
      assert.equal(processAlive(orphan), false, "the child died with its parent");
      const seconds = (Date.now() - killedAt) / 1000;
      assert.ok(seconds < 20, `the child stopped ${seconds.toFixed(1)} s after its parent's SIGKILL`);
      assert.match(fs.readFileSync(path.join(simclrDir, "train.log"), "utf8"), /SIGTERM: finishing the current step/);
      assert.equal(fs.existsSync(path.join(simclrDir, "results.json")), false, "SimCLR was interrupted");

      const first = startLoco(args, { timeoutMs: 600_000 });
      await first.waitFor(/SimCLR \(seed 0\): resumed/, 60_000);
      await first.waitFor(/\[1\/2\] SimCLR \(seed 0\): finished/, 400_000);
      assert.ok(
        readMetrics(path.join(simclrDir, "metrics.jsonl")).some((r) => r.type === "resume"),
        "SimCLR resumed from the checkpoint its stopped child left",
      );
      // Stop once the second run has written a checkpoint (so it has something to resume from).
      await waitForCheckpoint(path.join(dir, "runs", "gim", "seed-0"));
      first.child.kill("SIGTERM");
      const stopped = await first.done;
      assert.equal(stopped.status, 130, show(stopped));
      const finishedResults = path.join(dir, "runs", "simclr", "seed-0", "results.json");
      const before = { text: fs.readFileSync(finishedResults, "utf8"), mtime: fs.statSync(finishedResults).mtimeMs };
      assert.equal(
        fs.existsSync(path.join(dir, "runs", "gim", "seed-0", "results.json")),
        false,
        "GIM was interrupted",
      );

      const second = await loco(args, { timeoutMs: 600_000 });
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
        ["SimCLR", "GIM", "random init"],
      );
      for (const r of results.rows.slice(0, 2)) {
        assert.equal(r.finished, 1);
        assert.ok(r.peakBytes !== null && r.peakBytes.mean > 0, `${r.row}: peak memory measured`);
      }
      const md = fs.readFileSync(path.join(dir, "results.md"), "utf8");
      assert.match(md, /\| SimCLR \| 1\/1 \|/);
      const csv = fs.readFileSync(path.join(dir, "results.csv"), "utf8");
      assert.match(csv, /^row,kind,runs,finished,linear_top1_mean/);
      assert.ok(fs.existsSync(path.join(dir, "report.html")));

      // Fine-tuning rows: every pretrained run and random init (beside the first row), on 50% of the labels.
      for (const file of ["simclr/seed-0/finetune-50pct.json", "gim/seed-0/finetune-50pct.json"]) {
        assert.ok(fs.existsSync(path.join(dir, "runs", file)), file);
      }
      const random = JSON.parse(
        fs.readFileSync(path.join(dir, "runs", "simclr", "seed-0", "finetune-50pct-random-init.json"), "utf8"),
      ) as { init: string; fraction: number; top1: number };
      assert.equal(random.init, "random");
      assert.match(md, /fine-tune 50% top-1 %/);
      const header = md
        .split("\n")
        .find((l) => l.startsWith("| row"))!
        .split("|");
      const column = header.findIndex((h) => h.trim() === "fine-tune 50% top-1 %");
      const randomRow = md.split("\n").find((l) => l.startsWith("| *random init*"));
      assert.ok(randomRow !== undefined, md);
      assert.equal(
        randomRow.split("|")[column].trim(),
        (random.top1 * 100).toFixed(2),
        "the random-init row shows its fine-tuning",
      );
      assert.match(csv.split("\n")[0], /finetune_50pct_top1_mean/);
      assert.ok(fs.existsSync(path.join(dir, "charts", "finetune.svg")), "the report has a fine-tuning chart");
      const again = await loco(args, { timeoutMs: 300_000 });
      assert.equal(again.status, 0, show(again));
      assert.match(again.stderr, /3 fine-tunings already finished: skipped/);
    });
  },
);
