// `loco export` against torchvision: a tiny run of a torchvision-shaped ResNet-18 (width 64,
// ImageNet stem) on a generated image folder is exported; PyTorch loads the file into
// torchvision.models.resnet18() with strict=False (only fc missing, nothing unexpected) and its
// eval-mode features of a batch match loco's encoder on the same batch to 1e-4. The JSON beside
// the file gives the input size and normalisation. A CIFAR-stem encoder is exported with a note.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Generator, noGrad, randn, scope } from "../src/torch";
import { writeSyntheticFolder } from "../src/data";
import type { ResNet } from "../src/models";
import { openRun } from "../src/learning/runs";
import { type EncoderInfo, exportEncoder } from "../src/learning/export";
import { oracleAvailable, oracleScript, runOracle } from "./helpers/oracle";
import { assertClose } from "./helpers/assert";

const MAIN = path.join(__dirname, "..", "src", "cli", "main.js");
const ENV = { ...process.env, LOCO_NUM_THREADS: "1", OMP_NUM_THREADS: "1" };
const skip = oracleAvailable() ? false : "python3-torch is not installed for /usr/bin/python3";

function loco(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8", env: ENV, timeout: 300_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

let root: string;
let data: string;
before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-export-"));
  data = path.join(root, "data");
  await writeSyntheticFolder(data, { classes: 2, train: 4, val: 1, sizes: [40, 60], seed: 4 });
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

const TRAIN = [
  "--dataset",
  "folder",
  "--image-size",
  "32",
  "--epochs",
  "1",
  "--batch-size",
  "4",
  "--train-subset",
  "0",
];
const QUICK = ["--readout-epochs", "1", "--baselines", "none", "--knn-every", "0", "--threads", "1", "--workers", "0"];

describe("loco export", () => {
  test("torchvision's resnet18 loads the file (only fc missing) and computes loco's features", { skip }, () => {
    const runDir = path.join(root, "run64");
    const r = loco([
      "train",
      "--data-dir",
      data,
      ...TRAIN,
      "--width",
      "64",
      "--stem",
      "imagenet",
      ...QUICK,
      "--run-dir",
      runDir,
    ]);
    assert.equal(r.status, 0, r.stderr);
    const out = path.join(root, "encoder.safetensors");
    const e = loco(["export", runDir, "--out", out]);
    assert.equal(e.status, 0, e.stderr);
    assert.match(e.stdout, /only fc\.weight and fc\.bias are missing/);
    const info = JSON.parse(fs.readFileSync(path.join(root, "encoder.json"), "utf8")) as EncoderInfo;
    assert.deepEqual(info.inputSize, [3, 32, 32]);
    assert.deepEqual(info.normalize, { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
    assert.equal(info.architecture, "resnet18");
    assert.equal(info.featureDim, 512);
    assert.equal(info.torchvision.loadable, true);
    scope(() => {
      const x = randn([3, 3, 32, 32], { generator: new Generator(7) });
      const oracle = runOracle(oracleScript("export.py"), { x }, [out, "resnet18"], { timeoutMs: 300_000 });
      const run = openRun(runDir, 3);
      try {
        run.encoder.eval();
        const encoder = run.encoder as ResNet;
        const features = noGrad(() => encoder.forwardFeatures(x));
        assert.equal(oracle.loaded.item(), run.encoder.stateDict().size);
        assertClose(features, oracle.features, { rtol: 1e-4, atol: 1e-5, name: "exported features" });
      } finally {
        run.encoder.dispose();
      }
    });
  });

  test("a CIFAR-stem encoder is exported with what to change in torchvision's model; bad targets are refused", () => {
    const runDir = path.join(root, "run4");
    const r = loco(["train", "--data-dir", data, ...TRAIN, "--width", "4", ...QUICK, "--run-dir", runDir]);
    assert.equal(r.status, 0, r.stderr);
    const result = exportEncoder(runDir, path.join(root, "small.safetensors"));
    assert.equal(result.encoder.torchvision.loadable, false);
    assert.match(result.encoder.torchvision.note, /base width 4.*cifar stem: set model\.conv1/);
    assert.ok(fs.existsSync(path.join(root, "small.json")));
    const missing = loco(["export", path.join(root, "nope")]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /nope: no such run directory or checkpoint file/);
    const badOut = loco(["export", runDir, "--out", path.join(root, "no-dir", "e.safetensors")]);
    assert.equal(badOut.status, 2);
    assert.match(badOut.stderr, /does not exist/);
  });
});
