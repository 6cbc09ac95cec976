// Several suites skip themselves when an optional dependency is missing (the PyTorch oracle, the
// Fashion-MNIST files, root for tmpfs mounts), so that `npm test` runs on a partial machine. In CI
// (CI=true) nothing may be missing: this file fails instead of letting those suites skip silently.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { PYTHON, oracleAvailable } from "./helpers/oracle";
import { CHROMIUM, chromiumAvailable } from "./helpers/browser";
import { DEFAULT_FASHION_MNIST_DIR } from "../src/data/mnist";

const inCI = process.env.CI !== undefined && process.env.CI !== "" && process.env.CI !== "false";

test("CI has everything the conditional suites need (no silent skips)", { skip: inCI ? false : "not in CI" }, () => {
  assert.ok(oracleAvailable(), `${PYTHON} cannot import torch: scripts/setup.sh must install python3-torch`);
  const vision = spawnSync(PYTHON, ["-c", "import torchvision"], { encoding: "utf8" });
  assert.equal(vision.status, 0, `${PYTHON} cannot import torchvision: ${vision.stderr}`);
  assert.ok(
    fs.existsSync(DEFAULT_FASHION_MNIST_DIR),
    `${DEFAULT_FASHION_MNIST_DIR} is missing (dataset-fashion-mnist)`,
  );
  assert.ok(chromiumAvailable(), `${CHROMIUM} is missing: scripts/setup.sh must install chromium (report test)`);
  assert.equal(process.getuid?.(), 0, "the full-disk tests mount a tmpfs and need root");
});
