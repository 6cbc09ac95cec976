// Exact resume and interruption, through the CLI as a user runs it (child processes of
// dist/src/cli/main.js, one libtorch thread): 2 epochs straight and 1 epoch + stop + --resume +
// 1 epoch give byte-identical weights, optimizer state and run state; SIGINT/SIGTERM finish the
// step, checkpoint, exit 130 and say how to resume; a second Ctrl-C ends the process at once,
// mid-step, leaving the last checkpoint intact; corrupted or truncated checkpoints are detected by
// their checksum and --resume falls back to the previous good one, saying so.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { loadCheckpoint, loadLatestCheckpoint } from "../src/learning/checkpoint";
import {
  type Run,
  checkpointDifferences,
  checkpointsOf,
  haveFashionMnist,
  loco,
  makeTinyFashionMnist,
  show,
  startLoco,
  tinyFlags,
  tinyInput,
  trainStoppingAfter,
} from "./helpers/runs";

const skip = haveFashionMnist ? false : "Fashion-MNIST is not installed at /usr/share/datasets/fashion-mnist";
const ckpt = (dir: string, step: number): string =>
  path.join(dir, "checkpoints", `step-${String(step).padStart(9, "0")}.safetensors`);

describe("exact resume and interruption", { skip }, () => {
  let tmp = "";
  let data = "";
  let straightDir = "";
  let straight: Promise<Run>;

  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loco-resume-"));
    data = makeTinyFashionMnist(path.join(tmp, "data"));
    // The reference: 2 epochs (16 steps) without interruption, shared by the tests below.
    straightDir = path.join(tmp, "straight");
    straight = loco(["train", ...tinyFlags(data), "--run-dir", straightDir]);
  });
  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  test("2 epochs straight = 1 epoch, stop, --resume, 1 epoch: byte-identical weights, optimizer and run state", async () => {
    const dir = path.join(tmp, "split");
    // In this process, through the library: a stop requested during step 8, the last of epoch 1
    // (as a Ctrl-C would); the CLI's --resume continues it.
    const first = await trainStoppingAfter(tinyInput(data, { runDir: dir }), 8);
    assert.equal(first.outcome.interrupted, true, first.log);
    assert.match(first.log, /stopped at step 8/);
    assert.deepEqual(checkpointsOf(dir), ["step-000000008.safetensors"]);
    const stopped = loadCheckpoint(ckpt(dir, 8));
    assert.deepEqual(stopped.meta.position, { epoch: 1, batch: 0 });
    assert.deepEqual(stopped.meta.schedule?.step, 8);
    assert.equal(
      (stopped.meta.config as { epochs: number }).epochs,
      2,
      "the resolved config travels in the checkpoint",
    );
    for (const t of [...stopped.model.values(), ...stopped.optimizer.values()]) t.release();

    const second = await loco(["train", "--resume", dir]);
    assert.equal(second.status, 0, show(second));
    assert.match(second.stderr, /resumed from .*step-000000008\.safetensors at step 8 \(epoch 2, batch 0\)/);

    const ref = await straight;
    assert.equal(ref.status, 0, show(ref));
    assert.deepEqual(checkpointDifferences(ckpt(straightDir, 16), ckpt(dir, 16)), [], "final checkpoints differ");
    // The readout of identical weights is identical too (timings aside).
    const results = (d: string): { linear: unknown; knn: unknown; training: { steps: number; finalLoss: number[] } } =>
      JSON.parse(fs.readFileSync(path.join(d, "results.json"), "utf8"));
    assert.deepEqual(results(dir).linear, results(straightDir).linear);
    assert.deepEqual(results(dir).knn, results(straightDir).knn);
    assert.deepEqual(results(dir).training.finalLoss, results(straightDir).training.finalLoss);
  });

  test("SIGINT after the first step: finishes the step, checkpoints, exits 130 with the --resume command; resuming matches the straight run", async () => {
    const dir = path.join(tmp, "sigint");
    // workers 0: batches are made on the main thread, so the loader never waits on I/O.
    const run = startLoco(["train", ...tinyFlags(data, { workers: 0, "checkpoint-every": 3 }), "--run-dir", dir]);
    await run.waitFor(/step 1\/8/);
    run.child.kill("SIGINT");
    const r = await run.done;
    assert.equal(r.status, 130, show(r));
    assert.match(r.stderr, /SIGINT: finishing the current step and writing a checkpoint/);
    assert.match(r.stderr, new RegExp(`interrupted; continue with: loco train --resume ${dir}`));
    const stoppedAt = Number(/stopped at step (\d+)/.exec(r.stderr)?.[1]);
    assert.ok(stoppedAt >= 1 && stoppedAt < 16, `stopped mid-run (step ${stoppedAt})`);
    const latest = loadLatestCheckpoint(dir);
    assert.ok(latest !== null, "a loadable checkpoint");
    assert.equal(latest.meta.step, stoppedAt);
    for (const t of [...latest.model.values(), ...latest.optimizer.values()]) t.release();
    assert.ok(!fs.existsSync(path.join(dir, "results.json")), "no results for an interrupted run");

    const resumed = await loco(["train", "--resume", dir]);
    assert.equal(resumed.status, 0, show(resumed));
    assert.match(resumed.stderr, new RegExp(`resumed from .* at step ${stoppedAt}`));
    assert.equal((await straight).status, 0);
    assert.deepEqual(checkpointDifferences(ckpt(straightDir, 16), ckpt(dir, 16)), [], "final checkpoints differ");
  });

  test("SIGTERM is handled as SIGINT", async () => {
    const dir = path.join(tmp, "sigterm");
    const run = startLoco(["train", ...tinyFlags(data, { epochs: 1 }), "--run-dir", dir]);
    await run.waitFor(/step 1\/8/);
    run.child.kill("SIGTERM");
    const r = await run.done;
    assert.equal(r.status, 130, show(r));
    assert.match(r.stderr, /SIGTERM: finishing the current step and writing a checkpoint/);
    assert.match(r.stderr, /continue with: loco train --resume/);
    assert.ok(loadLatestCheckpoint(dir) !== null);
  });

  test("a second Ctrl-C exits at once, mid-step, and the last checkpoint stays loadable", async () => {
    const dir = path.join(tmp, "twice");
    // Width 32: a step takes about a second, long enough to be interrupted in the middle.
    const run = startLoco(["train", ...tinyFlags(data, { width: 32, "checkpoint-every": 1 }), "--run-dir", dir]);
    await run.waitFor(/step 1\/8/);
    // The progress line comes before step 1's checkpoint is written: wait for the file, so the
    // signals land in step 2 (a checkpoint interrupted mid-write is the kill -9 test's subject).
    const stepOne = path.join(dir, "checkpoints", "step-000000001.safetensors");
    for (let waited = 0; !fs.existsSync(stepOne) && waited < 20_000; waited += 20) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await new Promise((resolve) => setTimeout(resolve, 150)); // into step 2
    run.child.kill("SIGINT");
    await run.waitFor(/SIGINT: finishing the current step/, 5000); // printed at once, mid-step
    const second = Date.now();
    run.child.kill("SIGINT");
    const r = await run.done;
    const exitMs = Date.now() - second;
    assert.equal(r.status, 130, show(r));
    assert.match(r.stderr, /SIGINT: exiting now; the last complete checkpoint in .* is intact/);
    assert.doesNotMatch(r.stderr, /stopped at step/, "it did not wait for the step to end");
    assert.ok(exitMs < 500, `exited ${exitMs} ms after the second SIGINT`);
    const latest = loadLatestCheckpoint(dir, (m) => assert.fail(`a checkpoint failed to load: ${m}`));
    assert.ok(latest !== null, "the step-1 checkpoint is still there");
    assert.equal(latest.meta.step, 1);
    for (const t of [...latest.model.values(), ...latest.optimizer.values()]) t.release();
  });

  test("corrupted and truncated checkpoints are caught by the checksum; --resume falls back to the previous good one and still matches", async () => {
    const dir = path.join(tmp, "corrupt");
    const first = await trainStoppingAfter(tinyInput(data, { checkpointEvery: 3, keepCheckpoints: 3, runDir: dir }), 8);
    assert.equal(first.outcome.interrupted, true, first.log);
    assert.deepEqual(checkpointsOf(dir), [
      "step-000000003.safetensors",
      "step-000000006.safetensors",
      "step-000000008.safetensors",
    ]);
    // Step 8: one byte of tensor data flipped (the file still parses). Step 6: cut short.
    const eight = fs.readFileSync(ckpt(dir, 8));
    eight[eight.length - 100] ^= 0x40;
    fs.writeFileSync(ckpt(dir, 8), eight);
    const six = fs.readFileSync(ckpt(dir, 6));
    fs.writeFileSync(ckpt(dir, 6), six.subarray(0, Math.floor(six.length / 2)));
    assert.throws(() => loadCheckpoint(ckpt(dir, 8)), /checksum mismatch \(the file is corrupted/);
    assert.throws(() => loadCheckpoint(ckpt(dir, 6)), /not a readable checkpoint/);

    const resumed = await loco(["train", "--resume", dir]);
    assert.equal(resumed.status, 0, show(resumed));
    assert.match(
      resumed.stderr,
      /step-000000008\.safetensors: checksum mismatch .*falling back to the previous checkpoint .*step-000000006/,
    );
    assert.match(
      resumed.stderr,
      /step-000000006\.safetensors: not a readable checkpoint .*falling back to the previous checkpoint .*step-000000003/,
    );
    assert.match(resumed.stderr, /resumed from .*step-000000003\.safetensors at step 3/);
    // The bad files are kept aside for inspection and no longer count among the newest K.
    assert.ok(fs.existsSync(`${ckpt(dir, 8)}.corrupt`) && fs.existsSync(`${ckpt(dir, 6)}.corrupt`));
    assert.equal((await straight).status, 0);
    assert.deepEqual(checkpointDifferences(ckpt(straightDir, 16), ckpt(dir, 16)), [], "final checkpoints differ");
  });

  test("--resume refuses a run whose config.json no longer matches its checkpoints, naming the setting", async () => {
    const dir = path.join(tmp, "changed");
    const first = await trainStoppingAfter(tinyInput(data, { epochs: 1, runDir: dir }), 2);
    assert.equal(first.outcome.interrupted, true, first.log);
    const configFile = path.join(dir, "config.json");
    const config = JSON.parse(fs.readFileSync(configFile, "utf8"));
    config.resolved.seed = 7;
    config.resolved.lr = 0.01;
    fs.writeFileSync(configFile, JSON.stringify(config));
    const r = await loco(["train", "--resume", dir]);
    assert.equal(r.status, 1, show(r));
    assert.match(r.stderr, /the run was started with other settings \(seed 0 → 7\)/);
    assert.doesNotMatch(r.stderr, /at Object|\.js:\d+/, "a message, not a stack trace");
    assert.deepEqual(checkpointsOf(dir), ["step-000000002.safetensors"], "nothing was written");
  });

  test("checkpoints record the split; --resume refuses another split but takes another overlap mode", async () => {
    const dir = path.join(tmp, "split-stages");
    const splitFlags = ["--method", "loco", "--stages", "8", "--split", "balanced-memory"];
    const first = await loco(["train", ...tinyFlags(data, { epochs: 1 }), ...splitFlags, "--run-dir", dir], {
      env: { LOCO_TEST_STOP_AFTER_STEP: "2" },
    });
    assert.equal(first.status, 130, show(first));
    const saved = loadCheckpoint(ckpt(dir, 2));
    assert.equal(saved.meta.split?.length, 7, `eight stages: ${JSON.stringify(saved.meta.split)}`);
    for (const t of [...saved.model.values(), ...saved.optimizer.values()]) t.release();
    const configFile = path.join(dir, "config.json");
    const original = fs.readFileSync(configFile, "utf8");
    const config = JSON.parse(original);
    config.resolved.learning.split = "balanced-compute";
    fs.writeFileSync(configFile, JSON.stringify(config));
    const refused = await loco(["train", "--resume", dir]);
    assert.equal(refused.status, 1, show(refused));
    assert.match(refused.stderr, /other settings \(learning\.split "balanced-memory" → "balanced-compute"\)/);
    assert.deepEqual(checkpointsOf(dir), ["step-000000002.safetensors"], "nothing was written");
    // Recompute computes the same gradients: a run may continue in the other mode.
    const recompute = JSON.parse(original);
    recompute.resolved.learning.overlap = "recompute";
    fs.writeFileSync(configFile, JSON.stringify(recompute));
    const resumed = await loco(["train", "--resume", dir]);
    assert.equal(resumed.status, 0, show(resumed));
    assert.match(resumed.stderr, /stages: 8 \(split "balanced-memory", blocks .*\), overlap recompute/);
  });
});
