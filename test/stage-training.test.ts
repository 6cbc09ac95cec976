// `loco train --parallel stages` on 2 local ranks (child processes, one thread each, the variables
// `loco launch` sets): LoCo synchronous for 3 steps writes the checkpoint one process writes
// (weights, batch-norm statistics, optimizer state) and logs its losses, plus every rank's
// stage-rank records; the run resumes on 2 ranks as the single-process run does, and not on one;
// the pipelined schedule trains, reads out on rank 0 and leaves a checkpoint `loco eval` reads; a
// rank killed mid-training under `loco launch` stops the other with a clear error within the
// timeout, the last checkpoint is intact and the run resumes from it.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { loadCheckpoint } from "../src/learning/checkpoint";
import { readMetrics } from "../src/learning/metrics";
import {
  assertCheckpointsWithin,
  checkpointsOf,
  haveFashionMnist,
  lastCheckpoint,
  loco,
  makeTinyFashionMnist,
  show,
  startLoco,
  tinyFlags,
} from "./helpers/runs";
import { freePort, showAll, trainOnRanks } from "./helpers/ranks";

/** Every model and optimizer tensor of two checkpoints agrees to float rounding (1e-6 of its scale). */
const assertSameCheckpoint = (fileA: string, fileB: string): void =>
  assertCheckpointsWithin(fileA, fileB, { tolerance: 1e-6, minScale: 1e-6, meta: ["step", "schedule", "position"] });

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loco-stages-"));
// 48 images: 3 steps of batch 16 an epoch.
const data = haveFashionMnist ? makeTinyFashionMnist(path.join(tmp, "data"), 48, 64) : "";

/** The pid of the launcher's child that runs rank `rank` (Linux: its parent and environment in /proc). */
function rankPid(launcherPid: number, rank: number): number | null {
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // /proc/PID/stat: "pid (name) state ppid ...": the name may hold spaces, so parse after ")".
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== launcherPid) continue;
      const environ = fs.readFileSync(`/proc/${entry}/environ`, "utf8").split("\0");
      if (environ.includes(`RANK=${rank}`)) return Number(entry);
    } catch {
      // The process ended while we looked.
    }
  }
  return null;
}

const stepLoss = (runDir: string, step: number): number[] => {
  const record = readMetrics(path.join(runDir, "metrics.jsonl")).find((m) => m.type === "step" && m.step === step);
  assert.ok(record !== undefined, `${runDir}: no step record ${step}`);
  return (record as unknown as { loss: number[] }).loss;
};

describe("loco train --parallel stages", { skip: !haveFashionMnist && "Fashion-MNIST is not installed" }, () => {
  const common = {
    method: "loco",
    epochs: 1,
    "batch-size": 16,
    readout: "none",
    optimizer: "sgd",
    lr: 0.05,
    "warmup-epochs": 0,
  };
  const singleDir = path.join(tmp, "single");
  const stagesDir = path.join(tmp, "stages");

  test("LoCo sync on 2 ranks writes the checkpoint and losses of one process after 3 steps", async () => {
    const [single, ranks] = await Promise.all([
      loco(["train", ...tinyFlags(data, { ...common, "run-dir": singleDir })]),
      trainOnRanks([...tinyFlags(data, { ...common, "run-dir": stagesDir }), "--parallel", "stages"], 2),
    ]);
    assert.equal(single.status, 0, show(single));
    for (const r of ranks) assert.equal(r.status, 0, showAll(ranks));
    assert.match(ranks[0].stderr, /stage parallel \(sync\): rank 0 stages 1-2, rank 1 stages 3-4/);
    assert.doesNotMatch(ranks[1].stderr, /loco train:|epoch 1\/1/, showAll(ranks));
    assert.deepEqual(checkpointsOf(stagesDir), ["step-000000003.safetensors"]);
    assertSameCheckpoint(lastCheckpoint(stagesDir), lastCheckpoint(singleDir));
    const { meta, optimizer } = loadCheckpoint(lastCheckpoint(stagesDir));
    assert.equal(meta.worldSize, 2);
    assert.deepEqual(meta.stageLayout, [
      [0, 1],
      [2, 3],
    ]);
    // Both ranks trained: momentum in the stem (rank 0) and in the last decoder (rank 1).
    const momentum = (prefix: number): number =>
      Math.max(...optimizer.get(`state.${prefix}.momentum_buffer`)!.toArray().map(Math.abs));
    const count = optimizer.size;
    assert.ok(momentum(0) > 0 && momentum(count - 1) > 0, "a rank's parameters were not updated");
    const single3 = stepLoss(singleDir, 3);
    stepLoss(stagesDir, 3).forEach((l, i) => assert.ok(Math.abs(l - single3[i]) <= 1e-6 * Math.abs(single3[i])));
    const records = readMetrics(path.join(stagesDir, "metrics.jsonl")).filter((m) => m.type === "stage-rank");
    assert.deepEqual(
      records.map((r) => [r.rank, r.stages]),
      [
        [0, [1, 2]],
        [1, [3, 4]],
      ],
    );
    for (const r of records) assert.ok(r.steps === 3 && r.busySeconds > 0 && r.peakBytes > 0, JSON.stringify(r));
    const config = JSON.parse(fs.readFileSync(path.join(stagesDir, "config.json"), "utf8")).resolved;
    assert.equal(config.parallel, "stages");
    assert.equal(config.stageSchedule, "sync");
  });

  test("the run resumes on 2 ranks as the single-process run does, and is refused on one", async () => {
    assert.ok(fs.existsSync(lastCheckpoint(stagesDir)), "needs the runs of the first test");
    const [one] = await trainOnRanks(["--resume", stagesDir, "--epochs", "2"], 1);
    assert.equal(one.status, 2, show(one));
    assert.match(one.stderr, /was written by a run on 2 ranks \(stage parallel\), this resume runs on one process/);
    assert.doesNotMatch(one.stderr, /\n\s+at .*\.js/);
    const [single, ranks] = await Promise.all([
      loco(["train", "--resume", singleDir, "--epochs", "2"]),
      trainOnRanks(["--resume", stagesDir, "--epochs", "2"], 2),
    ]);
    assert.equal(single.status, 0, show(single));
    for (const r of ranks) assert.equal(r.status, 0, showAll(ranks));
    assert.match(ranks[0].stderr, /resumed from .*step-000000003\.safetensors at step 3/);
    assert.equal(loadCheckpoint(lastCheckpoint(stagesDir)).meta.step, 6);
    assertSameCheckpoint(lastCheckpoint(stagesDir), lastCheckpoint(singleDir));
  });

  test("a rank killed mid-training under loco launch stops the other with an error naming it; the checkpoint is intact and the run resumes", async () => {
    const runDir = path.join(tmp, "killed");
    const launch = async (args: string[]) =>
      startLoco(
        [
          "launch",
          "--nproc",
          "2",
          "--master-port",
          String(await freePort()),
          "--stop-grace",
          "30",
          "--",
          "train",
          ...args,
        ],
        {
          env: { LOCO_DIST_TIMEOUT_MS: "8000" },
        },
      );
    const flags = tinyFlags(data, { ...common, epochs: 100, "checkpoint-every": 2, "run-dir": runDir });
    const running = await launch([...flags, "--parallel", "stages", "--stage-schedule", "pipelined"]);
    const deadline = Date.now() + 60_000;
    while (checkpointsOf(runDir).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(checkpointsOf(runDir).length > 0, "no checkpoint within 60 s");
    const victim = rankPid(running.child.pid!, 1);
    assert.ok(victim !== null, "rank 1's process not found");
    const killedAt = Date.now();
    process.kill(victim, "SIGKILL");
    const launcher = await running.done;
    const after = Date.now() - killedAt;
    // The launcher exits with the killed rank's status; rank 0 stopped on its own error, well
    // inside the timeout (8 s) and the launcher's grace (30 s).
    assert.equal(launcher.status, 128 + 9, show(launcher));
    assert.ok(after < 8000 + 5000, `the ranks took ${after} ms to stop (timeout 8 s)`);
    assert.match(launcher.stderr, /\[launch\] rank 1 was killed by SIGKILL/, show(launcher));
    assert.match(
      launcher.stderr,
      /\[rank 0\] .*stage-parallel training stopped in step \d+ on rank 0 of 2: /,
      show(launcher),
    );
    assert.match(launcher.stderr, /rank 1 is not responding/);
    assert.match(launcher.stderr, /the last checkpoint .*step-\d+\.safetensors is intact/);
    assert.doesNotMatch(launcher.stderr, /\n\[rank 0\]\s+at .*\.js/);
    // The newest checkpoint loads (its checksums hold) and the run continues from it on 2 ranks to
    // the end of the next epoch (3 steps an epoch).
    const last = lastCheckpoint(runDir);
    const { step } = loadCheckpoint(last).meta;
    const epochs = Math.floor(step / 3) + 2;
    const resumed = await (await launch(["--resume", runDir, "--epochs", String(epochs)])).done;
    assert.equal(resumed.status, 0, show(resumed));
    assert.match(resumed.stderr, new RegExp(`resumed from .*${path.basename(last)} at step ${step}`));
    assert.ok(readMetrics(path.join(runDir, "metrics.jsonl")).some((m) => m.type === "resume" && m.step === step));
    assert.equal(loadCheckpoint(lastCheckpoint(runDir)).meta.step, 3 * epochs);
  });

  test("LoCo pipelined trains, reads out on rank 0 and writes a checkpoint loco eval reads", async () => {
    const runDir = path.join(tmp, "pipelined");
    const flags = tinyFlags(data, { ...common, readout: "linear", "readout-train-size": 48, "run-dir": runDir });
    const ranks = await trainOnRanks([...flags, "--parallel", "stages", "--stage-schedule", "pipelined"], 2);
    for (const r of ranks) assert.equal(r.status, 0, showAll(ranks));
    assert.match(ranks[0].stdout, /linear top-1/);
    assert.ok(fs.existsSync(path.join(runDir, "results.json")));
    const records = readMetrics(path.join(runDir, "metrics.jsonl")).filter((m) => m.type === "stage-rank");
    assert.equal(records.length, 2);
    const { meta } = loadCheckpoint(lastCheckpoint(runDir));
    assert.equal(meta.step, 3);
    // Rank 0's updates missed the message about the current batch: the run is not the synchronous one.
    assert.notDeepEqual(stepLoss(runDir, 3), stepLoss(singleDir, 3));
    const evaluated = await loco(["eval", runDir, "--readout-epochs", "1", "--readout-train-size", "48"]);
    assert.equal(evaluated.status, 0, show(evaluated));
    assert.match(evaluated.stdout, /step 3\s+\d+\.\d+%/);
  });
});
