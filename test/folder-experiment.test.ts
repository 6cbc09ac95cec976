// The repository's example grid on an image folder (examples/folder-grid.yaml) end to end, shrunk
// to seconds: its rows (SimCLR, GIM, LoCo) and its fine-tuning fractions (1% and 10%) as they are,
// its protocol made tiny (24 px, ResNet-18 of width 4, 1 epoch), on a generated ImageNet-layout
// folder. `loco experiment` pretrains each row with `loco train` on the streamed folder, fine-tunes
// every run and a random-init encoder with `loco finetune`, and the tables carry the fine-tuning
// columns for every method row and the random-init row.
import { after, before, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import YAML from "yaml";
import { writeSyntheticFolder } from "../src/data";
import { readGridFile } from "../src/experiments/grid";
import { loco, show } from "./helpers/runs";

const EXAMPLE = path.join(__dirname, "..", "..", "examples", "folder-grid.yaml");

let root = "";
let data = "";
before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-folder-experiment-"));
  data = path.join(root, "imagenet-like");
  // 100 training images in 4 classes: 1% of the labels is 4 images (one per class), 10% is 10.
  await writeSyntheticFolder(data, { classes: 4, train: 25, val: 3, sizes: [40, 64], seed: 3 });
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

test("the example grid file is what the README says: three methods, fine-tuning on 1% and 10%", () => {
  const spec = readGridFile(EXAMPLE);
  assert.deepEqual(
    spec.rows.map((r) => [r.name, r.flags.method]),
    [
      ["SimCLR", "simclr"],
      ["GIM", "gim"],
      ["LoCo", "loco"],
    ],
  );
  assert.deepEqual(spec.finetune?.fractions, [0.01, 0.1]);
  assert.equal(spec.protocolFlags.dataset, "folder");
  assert.deepEqual(spec.baselines, ["random-init", "raw-pixels"]);
});

test("loco experiment on a generated folder: method rows, fine-tuning rows at 1% and 10%, random init", async () => {
  const grid = YAML.parse(fs.readFileSync(EXAMPLE, "utf8")) as {
    protocol: Record<string, unknown>;
    finetune: { fractions: number[]; flags: Record<string, unknown> };
  };
  grid.protocol = {
    ...grid.protocol,
    "image-size": 24,
    width: 4,
    epochs: 1,
    "batch-size": 8,
    "knn-every": 0,
    "readout-epochs": 1,
    workers: 1,
  };
  grid.finetune.flags = { ...grid.finetune.flags, epochs: 1, "batch-size": 4 };
  const file = path.join(root, "tiny-folder-grid.json");
  fs.writeFileSync(file, JSON.stringify(grid));
  const dir = path.join(root, "exp");
  const run = await loco(["experiment", file, "--data-dir", data, "--dir", dir, "--jobs", "1", "--cores", "1"], {
    timeoutMs: 600_000,
  });
  assert.equal(run.status, 0, show(run));

  const runs = ["simclr", "gim", "loco"].map((m) => path.join(dir, "runs", m, "seed-0"));
  for (const runDir of runs) {
    assert.match(fs.readFileSync(path.join(runDir, "train.log"), "utf8"), /train: 100 images in 4 classes/);
    for (const [pct, labelled] of [
      ["1", 4],
      ["10", 10],
    ] as const) {
      const result = JSON.parse(fs.readFileSync(path.join(runDir, `finetune-${pct}pct.json`), "utf8")) as {
        init: string;
        labelledImages: number;
        testImages: number;
      };
      assert.equal(result.init, "pretrained");
      assert.equal(result.labelledImages, labelled, `${runDir}: ${pct}% of 100 images`);
      assert.equal(result.testImages, 12);
    }
  }
  for (const pct of ["1", "10"]) {
    const random = JSON.parse(fs.readFileSync(path.join(runs[0], `finetune-${pct}pct-random-init.json`), "utf8")) as {
      init: string;
    };
    assert.equal(random.init, "random", "random init beside the first row's run");
  }

  const results = JSON.parse(fs.readFileSync(path.join(dir, "results.json"), "utf8")) as {
    rows: { row: string; finetune: { fraction: number; top1: { mean: number } | null }[] }[];
  };
  const byName = new Map(results.rows.map((r) => [r.row, r]));
  for (const name of ["SimCLR", "GIM", "LoCo", "random init"]) {
    const row = byName.get(name);
    assert.ok(row !== undefined, `results.json has the row ${name}: ${[...byName.keys()].join(", ")}`);
    for (const fraction of [0.01, 0.1]) {
      const top1 = row.finetune.find((f) => f.fraction === fraction)?.top1?.mean;
      assert.ok(top1 !== undefined && top1 >= 0 && top1 <= 1, `${name}: fine-tuning on ${fraction}: ${top1}`);
    }
  }
  assert.ok(byName.has("raw pixels"));

  const [header, ...lines] = fs.readFileSync(path.join(dir, "results.csv"), "utf8").trim().split("\n");
  const columns = header.split(",");
  const cell = (line: string, column: string): string => line.split(",")[columns.indexOf(column)];
  for (const column of ["finetune_1pct_top1_mean", "finetune_10pct_top1_mean"]) {
    assert.ok(columns.includes(column), header);
    for (const name of ["SimCLR", "GIM", "LoCo", "random init"]) {
      const line = lines.find((l) => l.startsWith(`${name},`));
      assert.ok(line !== undefined, `results.csv has ${name}`);
      assert.match(cell(line, column), /^\d/, `${name}: ${column} is filled`);
    }
    assert.equal(
      cell(
        lines.find((l) => l.startsWith("raw pixels,"))!,
        column,
      ),
      "",
      "raw pixels are not fine-tuned",
    );
  }
  const md = fs.readFileSync(path.join(dir, "results.md"), "utf8");
  assert.match(md, /fine-tune 1% top-1 %.*fine-tune 10% top-1 %/);
});
