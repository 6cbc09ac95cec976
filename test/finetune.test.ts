// Fine-tuning (src/learning/finetune.ts) on a tiny run over a generated image folder: the protocol's
// defaults (SimCLR's recipe: epochs by label fraction, lr 0.05 x batch/256, Nesterov, no weight
// decay), a class-balanced labelled subset, the encoder actually trained (loss falls, the result
// depends on the initialisation), runs repeatable from their seeds, the result written to the run,
// and `loco finetune`'s bad values refused with status 2.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { writeSyntheticFolder } from "../src/data";
import { defaultFinetuneEpochs, finetune } from "../src/learning/finetune";

const MAIN = path.join(__dirname, "..", "src", "cli", "main.js");
const ENV = { ...process.env, LOCO_NUM_THREADS: "1", OMP_NUM_THREADS: "1" };

function loco(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8", env: ENV, timeout: 180_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

let root: string;
let runDir: string;
before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-finetune-"));
  const data = path.join(root, "data");
  await writeSyntheticFolder(data, { classes: 4, train: 10, val: 3, sizes: [40, 64], seed: 6 });
  runDir = path.join(root, "run");
  const r = loco([
    "train",
    "--dataset",
    "folder",
    "--data-dir",
    data,
    "--image-size",
    "24",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--width",
    "4",
    "--train-subset",
    "0",
    "--readout-epochs",
    "1",
    "--baselines",
    "none",
    "--knn-every",
    "0",
    "--threads",
    "1",
    "--workers",
    "0",
    "--run-dir",
    runDir,
  ]);
  assert.equal(r.status, 0, r.stderr);
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

describe("fine-tuning", () => {
  test("defaults follow SimCLR's recipe", () => {
    assert.equal(defaultFinetuneEpochs(0.01), 60);
    assert.equal(defaultFinetuneEpochs(0.1), 30);
    assert.equal(defaultFinetuneEpochs(1), 30);
  });

  test("trains encoder and head on a balanced subset, repeatably; random init differs; the result is written", async () => {
    const options = { fraction: 0.4, epochs: 4, batchSize: 8, lr: 0.2, workers: 0 };
    const a = await finetune(runDir, options);
    assert.equal(a.labelledImages, 16, "40% of 40 images");
    assert.equal(a.testImages, 12);
    assert.equal(a.init, "pretrained");
    assert.deepEqual(
      [a.settings.momentum, a.settings.nesterov, a.settings.weightDecay, a.settings.warmupEpochs],
      [0.9, true, 0, 0],
    );
    assert.deepEqual(a.settings.augment.crop?.scale, [0.08, 1]);
    assert.equal(a.settings.augment.hflip, 0.5);
    assert.equal(a.settings.augment.colorJitter, undefined, "crop and flip only");
    assert.ok(a.history.at(-1)!.loss < a.history[0].loss, `loss falls: ${a.history.map((h) => h.loss.toFixed(3))}`);
    assert.ok(a.top1 >= 0 && a.top1 <= 1);
    const written = JSON.parse(fs.readFileSync(path.join(runDir, "finetune-40pct.json"), "utf8")) as { top1: number };
    assert.equal(written.top1, a.top1);
    const again = await finetune(runDir, { ...options, out: null });
    assert.deepEqual(
      again.history.map((h) => h.loss),
      a.history.map((h) => h.loss),
      "same options, same run",
    );
    const random = await finetune(runDir, { ...options, fromRandomInit: true });
    assert.equal(random.init, "random");
    assert.equal(random.labelledImages, 16);
    assert.notDeepEqual(
      random.history.map((h) => h.loss),
      a.history.map((h) => h.loss),
    );
    assert.ok(fs.existsSync(path.join(runDir, "finetune-40pct-random-init.json")));
    const defaultLr = await finetune(runDir, { fraction: 0.2, epochs: 1, batchSize: 8, workers: 0, out: null });
    assert.equal(defaultLr.settings.lr, (0.05 * 8) / 256);
  });

  test("loco finetune: bad values exit 2 naming the flag", () => {
    const r = loco(["finetune", runDir, "--fraction", "1.5"]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--fraction: each must be in \(0, 1\]/);
    const none = loco(["finetune", path.join(root, "missing")]);
    assert.equal(none.status, 2);
    assert.match(none.stderr, /missing: no such run directory/);
  });
});
