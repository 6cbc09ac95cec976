// `loco train --dataset folder` as a user runs it, on generated folders: the ImageNet layout
// streams through pretraining and is read out on train/ and val/; a text file named .jpg is
// skipped and listed in the run directory with --on-bad-image skip, and stops the run (exit 1, its
// path, no stack trace) by default; an unlabelled folder pretrains only with a labelled
// --readout-data-dir, and says so without one.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { writeSyntheticFolder } from "../src/data";

const MAIN = path.join(__dirname, "..", "src", "cli", "main.js");
const ENV = { ...process.env, LOCO_NUM_THREADS: "1", OMP_NUM_THREADS: "1" };

function loco(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8", env: ENV, timeout: 120_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const TINY = ["--image-size", "32", "--epochs", "1", "--batch-size", "16", "--width", "4", "--train-subset", "0"];
const QUICK_READOUT = ["--readout-epochs", "1", "--baselines", "none", "--threads", "1"];

let root: string;
let labelled: string;
before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-folder-train-"));
  labelled = path.join(root, "imagenet-like");
  await writeSyntheticFolder(labelled, { classes: 4, train: 8, val: 2, sizes: [40, 80], seed: 2 });
  fs.writeFileSync(path.join(labelled, "train", "class002", "readme.jpg"), "not an image\n");
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

describe("loco train --dataset folder", () => {
  test("a bad file stops the run by default, naming it", () => {
    const r = loco([
      "train",
      "--dataset",
      "folder",
      "--data-dir",
      labelled,
      ...TINY,
      "--run-dir",
      path.join(root, "r0"),
    ]);
    assert.equal(r.status, 1, r.stderr);
    const bad = path.join(labelled, "train", "class002", "readme.jpg");
    assert.ok(r.stderr.includes(`${bad}: cannot decode image (`), r.stderr);
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  });

  test("streams the ImageNet layout, skips and lists the bad file, reads out on train/ and val/", () => {
    const runDir = path.join(root, "r1");
    const r = loco([
      "train",
      "--dataset",
      "folder",
      "--data-dir",
      labelled,
      "--on-bad-image",
      "skip",
      ...TINY,
      ...QUICK_READOUT,
      "--run-dir",
      runDir,
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /pretraining data: .*train: 33 images in 4 classes \(class000 8, class001 8, class002 9/);
    assert.match(r.stderr, /test data: .*val: 8 images in 4 classes/);
    const listed = fs.readFileSync(path.join(runDir, "bad-images.txt"), "utf8");
    assert.match(listed, /class002\/readme\.jpg\t/);
    const results = JSON.parse(fs.readFileSync(path.join(runDir, "results.json"), "utf8")) as { dataset: string };
    assert.match(results.dataset, /folder/);
  });

  test("an unlabelled folder needs a labelled --readout-data-dir, and says so", () => {
    const flat = path.join(root, "unlabelled");
    fs.mkdirSync(flat);
    for (const f of fs.readdirSync(path.join(labelled, "train", "class000")))
      fs.copyFileSync(path.join(labelled, "train", "class000", f), path.join(flat, f));
    for (const f of fs.readdirSync(path.join(labelled, "train", "class001")))
      fs.copyFileSync(path.join(labelled, "train", "class001", f), path.join(flat, `b-${f}`));
    const refused = loco([
      "train",
      "--dataset",
      "folder",
      "--data-dir",
      flat,
      ...TINY,
      "--run-dir",
      path.join(root, "r2"),
    ]);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /has no val\/ or test\/ folder; evaluation .* needs labelled images/);
    assert.match(refused.stderr, /--readout-data-dir/);
    const r = loco([
      "train",
      "--dataset",
      "folder",
      "--data-dir",
      flat,
      "--readout-data-dir",
      labelled,
      "--on-bad-image",
      "skip",
      ...TINY,
      ...QUICK_READOUT,
      "--run-dir",
      path.join(root, "r3"),
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /pretraining data: .*unlabelled: 16 unlabelled images/);
  });
});
