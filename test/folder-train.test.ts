// `loco train --dataset folder` as a user runs it, on generated folders: the ImageNet layout
// streams through pretraining and is read out on train/ and val/; a text file named .jpg is
// skipped and listed in the run directory with --on-bad-image skip, and stops the run (exit 1, its
// path, no stack trace) by default; an unlabelled folder pretrains only with a labelled
// --readout-data-dir, and says so without one.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { writeSyntheticFolder } from "../src/data";
import { type Run, loco } from "./helpers/runs";

const TINY = ["--image-size", "32", "--epochs", "1", "--batch-size", "16", "--width", "4", "--train-subset", "0"];
const QUICK_READOUT = ["--readout-epochs", "1", "--baselines", "none", "--threads", "1"];

/** `loco train --dataset folder` on dataDir with the tiny settings and `flags`, into root/run. */
function trainFolder(dataDir: string, run: string, flags: string[] = []): Promise<Run> {
  const args = ["train", "--dataset", "folder", "--data-dir", dataDir, ...TINY, ...flags];
  return loco([...args, "--run-dir", path.join(root, run)], { timeoutMs: 120_000 });
}

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
  test("a bad file stops the run by default, naming it", async () => {
    const r = await trainFolder(labelled, "r0");
    assert.equal(r.status, 1, r.stderr);
    const bad = path.join(labelled, "train", "class002", "readme.jpg");
    assert.ok(r.stderr.includes(`${bad}: cannot decode image (`), r.stderr);
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  });

  test("streams the ImageNet layout, skips and lists the bad file, reads out on train/ and val/", async () => {
    const runDir = path.join(root, "r1");
    const r = await trainFolder(labelled, "r1", ["--on-bad-image", "skip", ...QUICK_READOUT]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /pretraining data: .*train: 33 images in 4 classes \(class000 8, class001 8, class002 9/);
    assert.match(r.stderr, /test data: .*val: 8 images in 4 classes/);
    const listed = fs.readFileSync(path.join(runDir, "bad-images.txt"), "utf8");
    assert.match(listed, /class002\/readme\.jpg\t/);
    const results = JSON.parse(fs.readFileSync(path.join(runDir, "results.json"), "utf8")) as { dataset: string };
    assert.match(results.dataset, /folder/);
  });

  test("an unlabelled folder needs a labelled --readout-data-dir, and says so", async () => {
    const flat = path.join(root, "unlabelled");
    fs.mkdirSync(flat);
    for (const f of fs.readdirSync(path.join(labelled, "train", "class000")))
      fs.copyFileSync(path.join(labelled, "train", "class000", f), path.join(flat, f));
    for (const f of fs.readdirSync(path.join(labelled, "train", "class001")))
      fs.copyFileSync(path.join(labelled, "train", "class001", f), path.join(flat, `b-${f}`));
    const refused = await trainFolder(flat, "r2");
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /has no val\/ or test\/ folder; evaluation .* needs labelled images/);
    assert.match(refused.stderr, /--readout-data-dir/);
    const r = await trainFolder(flat, "r3", [
      "--readout-data-dir",
      labelled,
      "--on-bad-image",
      "skip",
      ...QUICK_READOUT,
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /pretraining data: .*unlabelled: 16 unlabelled images/);
  });
});
