// A grid run in pieces (issue 13's `standard` grid takes hours): --rows/--seeds run a subset into the
// experiment directory and the tables show the rest as pending; --max-runs stops between runs and a
// rerun continues; --list shows every row × seed's state; a directory refuses a grid with another
// protocol, naming the field. Tiny runs (128 images, width 4, 1 epoch), a few seconds each.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { presetSpec } from "../src/experiments/grid";
import { gridDifference, gridIdentity, selectRows, selectSeeds } from "../src/experiments/selection";
import { Estimator, Slice } from "../src/experiments/status";
import { haveFashionMnist, loco, makeTinyFashionMnist, show } from "./helpers/runs";

function tinyGrid(dataDir: string, epochs = 1): string {
  return `name: pieces
description: tiny Fashion-MNIST copy, ResNet-18 width 4, ${epochs} epoch
protocol:
  data-dir: ${dataDir}
  train-subset: 0
  batch-size: 64
  width: 4
  epochs: ${epochs}
  knn-every: 0
  readout-epochs: 1
  readout-train-size: 128
  per-stage: false
seeds: [0, 1]
baselines: [raw-pixels]
finetune: []
rows:
  - name: SimCLR
    flags: { method: simclr }
  - name: GIM
    flags: { method: gim }
`;
}

const exists = (dir: string, row: string, seed: number, file: string): boolean =>
  fs.existsSync(path.join(dir, "runs", row, `seed-${seed}`, file));

/** The cells of a markdown table row that starts with `| name |`. */
function tableRow(md: string, name: string): string[] {
  const line = md.split("\n").find((l) => l.startsWith(`| ${name} |`));
  assert.ok(line !== undefined, `no row '${name}' in\n${md}`);
  return line.split("|").map((c) => c.trim());
}

test("--rows takes ids, ranges and names; --seeds a subset of the grid's", () => {
  const spec = presetSpec("standard");
  const names = (value: string): string[] => selectRows(spec, value).map((r) => r.name);
  assert.deepEqual(names("1,3-4"), ["SimCLR, 2-layer MLP", "GIM, 2-layer MLP", "GIM, 4-layer MLP"]);
  assert.deepEqual(names("loco-2-layer-mlp, 12"), ["LoCo, 2-layer MLP", "SimCLR, feedback alignment"]);
  assert.deepEqual(names("GIM, sequential"), ["GIM, sequential"], "a whole row name, commas and all");
  assert.throws(() => names("13"), /--rows: '13' is not a row id or a range of row ids in 1-12/);
  assert.throws(() => names("simclr,gim-3-layer"), /--rows: no row 'simclr'/);
  assert.deepEqual(selectSeeds(spec, [2, 0]), [0, 2]);
  assert.throws(() => selectSeeds(spec, [3]), /--seeds: seed 3 is not in the grid 'standard' \(its seeds: 0, 1, 2\)/);
});

test("two grids differ at the first field that differs, by name", () => {
  const quick = gridIdentity(presetSpec("quick"));
  const standard = gridIdentity(presetSpec("standard"));
  assert.equal(gridDifference(quick, quick), null);
  assert.equal(gridDifference(standard, quick)?.field, "name");
  const longer = { ...quick, protocol: { ...quick.protocol, epochs: 4 } };
  assert.deepEqual(gridDifference(quick, longer), { field: "protocol.epochs", saved: 3, current: 4 });
  const rows = quick.rows.map((r, i) => (i === 2 ? { ...r, flags: { ...r.flags, "mlp-layers": 3 } } : r));
  assert.equal(gridDifference(quick, { ...quick, rows })?.field, "rows[2].flags.mlp-layers");
});

test("a slice admits runs up to --max-runs, or while the next one's estimate ends within --max-minutes", () => {
  const byCount = new Slice({ maxRuns: 2 });
  assert.deepEqual(
    [1, 2, 3, 4].map((i) => byCount.admit(`run ${i}`, null)),
    [true, true, false, false],
  );
  assert.match(byCount.stopReason ?? "", /--max-runs 2: 2 runs started/);
  let now = 0;
  const byTime = new Slice({ maxMinutes: 10 }, () => now);
  assert.equal(byTime.admit("a", 240), true, "0 + 4 min <= 10 min");
  now = 240_000;
  assert.equal(byTime.admit("b", 240), true, "4 + 4 min <= 10 min");
  now = 480_000;
  assert.equal(byTime.admit("c", 240), false, "8 + 4 min > 10 min");
  assert.equal(byTime.admit("d", 0), false, "once stopped, nothing more starts");
  assert.match(byTime.stopReason ?? "", /--max-minutes 10: c would end after 12 min/);
  const estimator = new Estimator(
    [
      { row: "A", seed: 0, dir: "a0", status: "finished", wallSeconds: 100 },
      { row: "A", seed: 1, dir: "a1", status: "finished", wallSeconds: 200 },
      { row: "B", seed: 0, dir: "b0", status: "interrupted", wallSeconds: 50 },
    ],
    [{ row: "A", seed: 0, dir: "a0", status: "finished", wallSeconds: 60 }],
    2,
  );
  assert.equal(estimator.runSeconds("A"), 150);
  assert.equal(estimator.runSeconds("B"), 150, "a row without a finished run: the mean of all");
  assert.equal(estimator.finetuneSeconds(3), 90, "30 s a fraction");
});

describe(
  "loco experiment in pieces",
  { skip: haveFashionMnist ? false : "the Fashion-MNIST files are not installed" },
  () => {
    let root = "";
    let grid = "";
    let dir = "";
    before(() => {
      root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-pieces-"));
      grid = path.join(root, "grid.yaml");
      fs.writeFileSync(grid, tinyGrid(makeTinyFashionMnist(path.join(root, "fm"), 128, 128)));
      dir = path.join(root, "exp");
    });
    after(() => fs.rmSync(root, { recursive: true, force: true }));

    test("a subset, a stopped slice and the rest complete the grid; --list follows it", async () => {
      const base = ["experiment", grid, "--dir", dir, "--jobs", "1"];
      // Piece 1: one row, one seed. Only that run trains; the tables show the others as pending.
      const piece = await loco([...base, "--rows", "gim", "--seeds", "1"], { timeoutMs: 300_000 });
      assert.equal(piece.status, 0, show(piece));
      assert.match(piece.stderr, /1 runs to do \(1 of the grid's 4\)/);
      assert.ok(exists(dir, "gim", 1, "results.json"));
      for (const [row, seed] of [
        ["simclr", 0],
        ["simclr", 1],
        ["gim", 0],
      ] as const) {
        assert.equal(
          fs.existsSync(path.join(dir, "runs", row, `seed-${seed}`)),
          false,
          `${row} seed ${seed} not started`,
        );
      }
      assert.match(piece.stderr, /3 runs and 0 fine-tunings of the grid are left/);
      let md = fs.readFileSync(path.join(dir, "results.md"), "utf8");
      assert.match(md, /\*\*Unfinished grid:\*\* 1 of 4 runs/);
      assert.equal(tableRow(md, "GIM")[2], "1/2");
      assert.equal(tableRow(md, "SimCLR")[2], "pending");
      assert.equal(tableRow(md, "*raw pixels*")[2], "pending", "the baselines are read out beside the first row");

      const list = await loco([...base, "--list"]);
      assert.equal(list.status, 0, show(list));
      assert.match(list.stdout, /^\s*1\s+SimCLR\s+simclr\s+pending\s+pending$/m);
      assert.match(list.stdout, /^\s*2\s+GIM\s+gim\s+pending\s+done$/m);
      assert.match(list.stdout, /runs of 4: 1 done, 0 partial, 3 pending/);
      assert.match(list.stdout, /time left: about \S+ (s|min) with --jobs 1 .*from the wall times of 1 finished runs/);

      // Piece 2: the whole grid, but stop after one run: SimCLR seed 0 (seeds outer, rows inner).
      const sliced = await loco([...base, "--max-runs", "1"], { timeoutMs: 300_000 });
      assert.equal(sliced.status, 0, show(sliced));
      assert.match(
        sliced.stderr,
        /stopped \(--max-runs 1: 1 run started\): 2 runs and 0 fine-tunings of the grid are left/,
      );
      assert.ok(exists(dir, "simclr", 0, "results.json"));
      assert.equal(exists(dir, "gim", 0, "config.json"), false, "the slice stopped before the next run");
      assert.equal(exists(dir, "simclr", 1, "config.json"), false);
      md = fs.readFileSync(path.join(dir, "results.md"), "utf8");
      assert.equal(tableRow(md, "SimCLR")[2], "1/2");
      assert.equal(tableRow(md, "*raw pixels*")[2], "1");

      // Piece 3: the rest. The finished runs are not redone; the tables hold all four runs.
      const finished = path.join(dir, "runs", "gim", "seed-1", "results.json");
      const mtime = fs.statSync(finished).mtimeMs;
      const rest = await loco(base, { timeoutMs: 300_000 });
      assert.equal(rest.status, 0, show(rest));
      assert.match(rest.stderr, /2 of 4 runs already finished: skipped/);
      assert.doesNotMatch(rest.stderr, /GIM \(seed 1\): (started|resumed)|SimCLR \(seed 0\): (started|resumed)/);
      assert.equal(fs.statSync(finished).mtimeMs, mtime, "GIM seed 1 was not redone");
      assert.doesNotMatch(rest.stderr, /grid are left/);
      md = fs.readFileSync(path.join(dir, "results.md"), "utf8");
      assert.doesNotMatch(md, /Unfinished grid/);
      assert.equal(tableRow(md, "SimCLR")[2], "2/2");
      assert.equal(tableRow(md, "GIM")[2], "2/2");
      assert.match(tableRow(md, "SimCLR")[3], /^\d+\.\d\d ± \d+\.\d\d$/, "mean ± std over the two seeds");
      assert.equal(tableRow(md, "*raw pixels*")[2], "2");
      const results = JSON.parse(fs.readFileSync(path.join(dir, "results.json"), "utf8")) as {
        progress: { runs: { finished: number; total: number } };
      };
      assert.deepEqual(results.progress.runs, { finished: 4, total: 4 });

      const done = await loco([...base, "--list"]);
      assert.equal(done.status, 0, show(done));
      assert.match(done.stdout, /^\s*1\s+SimCLR\s+simclr\s+done\s+done$/m);
      assert.match(done.stdout, /runs of 4: 4 done, 0 partial, 0 pending/);
      assert.match(done.stdout, /time left: none/);
    });

    test("a directory refuses a grid with another protocol, naming the field (exit status 2)", async () => {
      const other = path.join(root, "other.yaml");
      fs.writeFileSync(other, tinyGrid(path.join(root, "fm"), 2));
      for (const extra of [[], ["--list"]]) {
        const refused = await loco(["experiment", other, "--dir", dir, ...extra]);
        assert.equal(refused.status, 2, show(refused));
        assert.match(
          refused.stderr,
          /holds the experiment 'pieces' with another protocol\.epochs: 1 there, 2 in this command's grid/,
        );
        assert.doesNotMatch(refused.stderr, /\n\s+at /, "no stack trace");
      }
      const preset = await loco(["experiment", "quick", "--dir", dir, "--list"]);
      assert.equal(preset.status, 2, show(preset));
      assert.match(preset.stderr, /with another name: "pieces" there, "quick" in this command's grid/);
      const badRows = await loco(["experiment", grid, "--dir", dir, "--rows", "nope"]);
      assert.equal(badRows.status, 2, show(badRows));
      assert.match(badRows.stderr, /--rows: no row 'nope' in the grid 'pieces'/);
    });
  },
);
