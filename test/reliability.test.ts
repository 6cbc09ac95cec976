// Runs that survive bad events and bad input (docs/reliability.md lists every case with what the
// user sees; each row is a test here or in resume.test.ts): kill -9 during checkpoint writes,
// non-finite losses and gradients (stop with a diagnosis, or skip), unwritable and full run
// directories, a run directory in use or already holding a run, bad flags and config files, bad
// dataset files, bad images in a folder and bad checkpoint files.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  CHECKPOINT_FORMAT,
  CheckpointError,
  listCheckpoints,
  loadCheckpoint,
  loadLatestCheckpoint,
  removeStaleTemporaries,
} from "../src/learning/checkpoint";
import { train } from "../src/learning/trainer";
import { DivergenceError, TrainingError } from "../src/learning/errors";
import { MAX_CONSECUTIVE_SKIPS } from "../src/learning/divergence";
import { checkFreeSpace } from "../src/learning/rundir";
import type { TrainInput } from "../src/learning/options";
import { openDataset } from "../src/data/datasets";
import { Progress } from "../src/learning/progress";
import { keep, noGrad, saveSafetensors, zeros } from "../src/torch";
import {
  ENV,
  type Run,
  checkpointsOf,
  filesUnder,
  haveFashionMnist,
  loco,
  makeTinyFashionMnist,
  show,
  startLoco,
  tinyFlags,
  tinyInput,
  trainStoppingAfter,
} from "./helpers/runs";

const WRITER = path.join(__dirname, "helpers", "checkpoint-writer.js");

/** Polls until a checkpoint of step >= `step` exists in `runDir`; fails after `timeoutMs`. */
async function waitForCheckpointStep(runDir: string, step: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const stepOf = (file: string): number => Number(/step-(\d+)\./.exec(path.basename(file))?.[1] ?? 0);
  while (!listCheckpoints(runDir).some((file) => stepOf(file) >= step)) {
    if (Date.now() > deadline) assert.fail(`no checkpoint of step ${step} in ${runDir} after ${timeoutMs} ms`);
    await sleep(20);
  }
}
const needData = haveFashionMnist ? false : "Fashion-MNIST is not installed at /usr/share/datasets/fashion-mnist";
const noStack = /\n\s+at .*\.js:\d+/;

let tmp = "";
let data = "";
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loco-reliability-"));
  if (haveFashionMnist) data = makeTinyFashionMnist(path.join(tmp, "data"));
});
after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe("kill -9 during checkpoint writes", () => {
  test("12 kills at random points: every checkpoint file left loads and verifies, the newest never goes back", async (t) => {
    const dir = path.join(tmp, "killed");
    let lastStep = 0;
    let midWrite = 0;
    for (let round = 0; round < 12; round++) {
      const child = spawn(process.execPath, [WRITER], {
        env: {
          ...ENV,
          LOCO_CHECKPOINT_WRITER_DIR: dir,
          LOCO_CHECKPOINT_WRITER_START: String(lastStep),
          LOCO_CHECKPOINT_WRITER_KEEP: "2",
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<void>((resolve) => child.on("close", () => resolve()));
      await new Promise<void>((resolve, reject) => {
        child.stdout.once("data", () => resolve());
        child.once("close", (code) => reject(new Error(`the writer exited (${code}) before it was ready:\n${stderr}`)));
      });
      // The first writer runs until two checkpoints exist, whatever the machine's load, so the
      // later kills hit a loop that has been writing; then each kill comes at a random moment.
      if (round === 0) await waitForCheckpointStep(dir, 2, 60_000);
      await sleep(Math.random() * 200);
      child.kill("SIGKILL");
      await exited;

      const dirFiles = fs.readdirSync(path.join(dir, "checkpoints"));
      if (dirFiles.some((f) => f.endsWith(".tmp"))) midWrite++;
      // Atomic writes: whatever bears a checkpoint's name is complete, whatever the kill interrupted.
      const files = listCheckpoints(dir);
      assert.ok(files.length >= 1, `round ${round}: a checkpoint exists (${dirFiles.join(", ")})`);
      for (const file of files) {
        const c = loadCheckpoint(file);
        const values = c.model.get("encoder.conv.weight")!.data();
        assert.equal(values[0], c.meta.step, `${file}: its tensors belong to its run state`);
        assert.equal(values[values.length - 1], c.meta.step);
        for (const t of [...c.model.values(), ...c.optimizer.values()]) t.release();
      }
      const latest = loadLatestCheckpoint(dir, (m) => assert.fail(m));
      assert.ok(latest !== null);
      assert.ok(
        latest.meta.step >= lastStep,
        `round ${round}: the newest checkpoint went back from ${lastStep} to ${latest.meta.step}`,
      );
      lastStep = latest.meta.step;
      for (const t of [...latest.model.values(), ...latest.optimizer.values()]) t.release();
      // Leftover temporaries of the dead writer are recognised and removed.
      removeStaleTemporaries(dir);
      assert.deepEqual(
        fs.readdirSync(path.join(dir, "checkpoints")).filter((f) => f.endsWith(".tmp")),
        [],
      );
    }
    t.diagnostic(`${midWrite} of 12 kills landed mid-write; ${lastStep} checkpoints written in all`);
    assert.ok(lastStep >= 2, `the writers made progress (${lastStep} checkpoints)`);
    assert.ok(midWrite >= 1, `at least one kill landed mid-write (${midWrite} of 12 did)`);
  });
});

describe("non-finite losses and gradients", { skip: needData }, () => {
  const optionsFor = (dir: string, extra: TrainInput = {}): TrainInput =>
    tinyInput(data, { epochs: 1, runDir: dir, ...extra });
  const quiet = (): { log: (m: string) => void; logs: string[]; progress: Progress } => {
    const logs: string[] = [];
    const sink = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;
    return { log: (m) => logs.push(m), logs, progress: new Progress(sink) };
  };
  const poison =
    (name: string, steps: number[]) =>
    (info: { step: number; parameters: [string, import("../src/torch").Tensor][] }) => {
      if (!steps.includes(info.step)) return;
      const entry = info.parameters.find(([n]) => n === name);
      assert.ok(entry, `no parameter ${name}`);
      noGrad(() => {
        const grad = entry[1].grad!;
        grad.fill_(NaN);
        grad.release();
      });
    };

  test("a NaN loss (--lr 1e30) stops with the stage, the step, the last finite losses; the last good checkpoint is left as it was", async () => {
    const dir = path.join(tmp, "nan-loss");
    const r = await loco(["train", ...tinyFlags(data, { lr: 1e30, "checkpoint-every": 1 }), "--run-dir", dir]);
    assert.equal(r.status, 3, show(r));
    const m = /training diverged at step (\d+) \(epoch 1\): the loss at stage 4 is NaN/.exec(r.stderr);
    assert.ok(m, show(r));
    const step = Number(m[1]);
    assert.match(r.stderr, new RegExp(`last finite losses: stage 4 \\d\\.\\d+ \\(step ${step - 1}\\)`));
    assert.match(
      r.stderr,
      new RegExp(
        `the last good checkpoint is .*step-${String(step - 1).padStart(9, "0")}\\.safetensors; it is left as it was`,
      ),
    );
    assert.match(r.stderr, /--on-nonfinite skip/);
    assert.doesNotMatch(r.stderr, noStack);
    const latest = loadLatestCheckpoint(dir, (msg) => assert.fail(msg));
    assert.equal(latest?.meta.step, step - 1, "nothing was written after the bad step");
    for (const t of [...latest!.model.values(), ...latest!.optimizer.values()]) t.release();
  });

  test("a NaN gradient with finite losses names the parameter and its stage (in-process hook)", async () => {
    const dir = path.join(tmp, "nan-grad");
    const { log, logs, progress } = quiet();
    await assert.rejects(
      train(optionsFor(dir, { checkpointEvery: 2 }), {
        log,
        progress,
        afterBackward: poison("encoder.layer2.0.conv1.weight", [3]),
      }),
      (e: unknown) => {
        assert.ok(e instanceof DivergenceError, String(e));
        assert.equal(e.exitCode, 3);
        assert.deepEqual(
          {
            step: e.divergence.step,
            stage: e.divergence.stage,
            kind: e.divergence.kind,
            parameter: e.divergence.parameter,
          },
          { step: 3, stage: 2, kind: "gradient", parameter: "encoder.layer2.0.conv1.weight" },
        );
        assert.match(
          e.message,
          /the gradient of encoder\.layer2\.0\.conv1\.weight \(stage 2\) is non-finite, while every loss is finite/,
        );
        assert.match(e.message, /last finite losses: stage 4 \d\.\d+ \(step 2\)/);
        assert.match(e.message, /step-000000002\.safetensors; it is left as it was/);
        return true;
      },
      logs.join("\n"),
    );
    assert.deepEqual(checkpointsOf(dir), ["step-000000002.safetensors"]);
  });

  test("--on-nonfinite skip: bad steps are dropped with a warning and counted; the run completes", async () => {
    const dir = path.join(tmp, "skip");
    const { log, logs, progress } = quiet();
    const outcome = await train(optionsFor(dir, { onNonfinite: "skip", method: "loco" }), {
      log,
      progress,
      afterBackward: poison("decoders.2.head.0.weight", [2, 5]),
    });
    assert.ok(outcome.results !== null, logs.join("\n"));
    const warnings = logs.filter((l) => l.startsWith("warning: step"));
    assert.equal(warnings.length, 2, logs.join("\n"));
    assert.match(
      warnings[0],
      /step 2 skipped \(--on-nonfinite skip\): the gradient of decoders\.2\.head\.0\.weight \(the decoder of stage 3\) is non-finite/,
    );
    assert.match(warnings[1], /step 5 skipped .*2 skipped so far/);
    const metrics = fs
      .readFileSync(path.join(dir, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      metrics.filter((r) => r.type === "skip").map((r) => r.step),
      [2, 5],
    );
    assert.equal(metrics.find((r) => r.type === "epoch").skippedSteps, 2);
    const latest = loadLatestCheckpoint(dir)!;
    assert.equal(latest.meta.extra?.skippedSteps, 2);
    for (const t of [...latest.model.values(), ...latest.optimizer.values()]) t.release();
  });

  test(`--on-nonfinite skip stops after ${MAX_CONSECUTIVE_SKIPS} bad steps in a row (the weights themselves diverged)`, async () => {
    const dir = path.join(tmp, "skip-forever");
    const r = await loco([
      "train",
      ...tinyFlags(data, { lr: 1e30, "warmup-epochs": 0, "on-nonfinite": "skip" }),
      "--run-dir",
      dir,
    ]);
    assert.equal(r.status, 3, show(r));
    assert.match(r.stderr, /warning: step 2 skipped \(--on-nonfinite skip\): the loss at stage 4 is NaN/);
    assert.match(
      r.stderr,
      new RegExp(
        `training diverged at step ${MAX_CONSECUTIVE_SKIPS + 1} \\(epoch 2\\): ${MAX_CONSECUTIVE_SKIPS} steps in a row were non-finite and skipped`,
      ),
    );
    assert.match(r.stderr, /skipping steps cannot help/);
  });
});

describe("run directories", { skip: needData }, () => {
  test("an unwritable run directory is refused before anything is loaded or written", async () => {
    const blocker = path.join(tmp, "a-file");
    fs.writeFileSync(blocker, "not a directory");
    const r = await loco(["train", ...tinyFlags(data), "--run-dir", path.join(blocker, "run")]);
    assert.equal(r.status, 2, show(r));
    assert.match(r.stderr, /loco: run directory .*a-file\/run is not writable \(ENOTDIR/);
    assert.equal(fs.readFileSync(blocker, "utf8"), "not a directory");
  });

  test("a run directory that already holds a run is refused, pointing at --resume; nothing in it changes", async () => {
    const dir = path.join(tmp, "taken");
    fs.mkdirSync(path.join(dir, "checkpoints"), { recursive: true });
    fs.writeFileSync(path.join(dir, "config.json"), "{}");
    fs.writeFileSync(path.join(dir, "checkpoints", "step-000000008.safetensors"), "a checkpoint");
    const before = filesUnder(dir);
    const r = await loco(["train", ...tinyFlags(data), "--run-dir", dir]);
    assert.equal(r.status, 2, show(r));
    assert.match(
      r.stderr,
      new RegExp(`${dir} already holds a run \\(use --resume ${dir} to continue it, or another --run-dir\\)`),
    );
    assert.deepEqual(filesUnder(dir), before);
    assert.equal(fs.readFileSync(path.join(dir, "config.json"), "utf8"), "{}");
  });

  test("a run directory in use by another live process is refused; a stale lock is taken over", async () => {
    const dir = path.join(tmp, "locked");
    const first = await trainStoppingAfter(tinyInput(data, { epochs: 1, runDir: dir }), 1);
    assert.equal(first.outcome.interrupted, true, first.log);
    fs.writeFileSync(path.join(dir, ".lock"), `${process.pid}\n`); // this test process is alive
    const busy = await loco(["train", "--resume", dir]);
    assert.equal(busy.status, 1, show(busy));
    assert.match(busy.stderr, new RegExp(`${dir} is in use by another loco process \\(pid ${process.pid}\\)`));
    // A pid that is not running: the lock is stale.
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
    fs.writeFileSync(path.join(dir, ".lock"), `${dead.stdout}\n`);
    const resumed = await loco(["train", "--resume", dir]);
    assert.equal(resumed.status, 0, show(resumed));
    assert.ok(!fs.existsSync(path.join(dir, ".lock")), "the lock is released at the end");
  });

  test("a failed start writes nothing and can be retried; a run directory without a checkpoint starts over (fresh or --resume)", async () => {
    const dir = path.join(tmp, "no-checkpoint");
    // Options and data are checked before the run directory is made: a failed start leaves nothing.
    const gone = path.join(tmp, "gone-data");
    fs.cpSync(data, gone, { recursive: true });
    fs.rmSync(path.join(gone, "t10k-images-idx3-ubyte"));
    const failed = await loco(["train", ...tinyFlags(gone, { epochs: 1 }), "--run-dir", dir]);
    assert.equal(failed.status, 1, show(failed));
    assert.match(failed.stderr, /t10k-images-idx3-ubyte/);
    assert.ok(!fs.existsSync(dir), "no run directory after a failed start");
    const tooMany = await loco(["train", ...tinyFlags(data, { epochs: 1, "train-subset": 100000 }), "--run-dir", dir]);
    assert.equal(tooMany.status, 2, show(tooMany));
    assert.match(
      tooMany.stderr,
      /loco: a pretraining subset of 100000 images \(trainSubset, --train-subset\) exceeds the 512 images/,
    );
    assert.ok(!fs.existsSync(dir), "no run directory after a refused --train-subset");

    // A run that died before its first checkpoint (killed in its first step) leaves config.json only.
    const donor = path.join(tmp, "donor");
    const stopped = await trainStoppingAfter(tinyInput(data, { epochs: 1, runDir: donor }), 1);
    assert.equal(stopped.outcome.interrupted, true, stopped.log);
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(donor, "config.json"), path.join(dir, "config.json"));
    fs.writeFileSync(path.join(dir, "metrics.jsonl"), "{}\n");
    const resumed = await loco(["train", "--resume", dir]);
    assert.equal(resumed.status, 0, show(resumed));
    assert.match(resumed.stderr, /has no checkpoint yet: the run starts again from step 0/);
    // A fresh start into such a directory is allowed too (nothing of value is in it).
    const again = path.join(tmp, "no-checkpoint-fresh");
    fs.mkdirSync(again);
    fs.copyFileSync(path.join(donor, "config.json"), path.join(again, "config.json"));
    fs.writeFileSync(path.join(again, "metrics.jsonl"), "stale\n");
    const fresh = await loco(["train", ...tinyFlags(data, { epochs: 1 }), "--run-dir", again]);
    assert.equal(fresh.status, 0, show(fresh));
    assert.match(fresh.stderr, /holds a run that never wrote a checkpoint: it starts again/);
    assert.doesNotMatch(fs.readFileSync(path.join(again, "metrics.jsonl"), "utf8"), /stale/);

    const notARun = await loco(["train", "--resume", path.join(tmp, "nothing-here")]);
    assert.equal(notARun.status, 2, show(notARun));
    assert.match(notARun.stderr, /--resume: .*nothing-here\/config\.json does not exist \(not a loco run directory\)/);
  });
});

/** A small tmpfs for disk-full tests (root with CAP_SYS_ADMIN only; skipped elsewhere). */
function mountTmpfs(dir: string, size: string): boolean {
  fs.mkdirSync(dir, { recursive: true });
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir], { encoding: "utf8" });
  return r.status === 0;
}
const umount = (dir: string): void => void spawnSync("umount", [dir]);

describe("full disk", { skip: needData }, () => {
  test("checkFreeSpace names the directory, what is free and what is needed", () => {
    assert.throws(
      () => checkFreeSpace(tmp, Number.MAX_SAFE_INTEGER, "3 more checkpoints of ~1 MiB"),
      (e: unknown) =>
        e instanceof TrainingError &&
        /only .* free on its file system, but 3 more checkpoints of ~1 MiB need about/.test(e.message),
    );
    checkFreeSpace(tmp, 1, "a byte");
  });

  test("too little space for the checkpoints: a clear error before training, no checkpoint files", async (t) => {
    const mnt = path.join(tmp, "small-disk");
    if (!mountTmpfs(mnt, "1m")) return t.skip("cannot mount a tmpfs here (needs root)");
    try {
      const dir = path.join(mnt, "run");
      const r = await loco(["train", ...tinyFlags(data), "--run-dir", dir]);
      assert.equal(r.status, 1, show(r));
      assert.match(
        r.stderr,
        /run: only \d+ KiB free on its file system, but 4 more checkpoints of ~\d+ KiB plus ~1 MiB of logs need about [\d.]+ MiB; nothing was trained/,
      );
      assert.doesNotMatch(r.stderr, noStack);
      assert.doesNotMatch(r.stderr, /step 1\//, "no step ran");
      assert.deepEqual(filesUnder(dir), ["config.json"]);
    } finally {
      umount(mnt);
    }
  });

  test("the disk fills up mid-run: the failed checkpoint leaves no file behind, the previous one is intact, the message says so", async (t) => {
    const mnt = path.join(tmp, "filling-disk");
    if (!mountTmpfs(mnt, "3m")) return t.skip("cannot mount a tmpfs here (needs root)");
    try {
      const dir = path.join(mnt, "run");
      const run = startLoco([
        "train",
        ...tinyFlags(data, { "checkpoint-every": 1, "keep-checkpoints": 1 }),
        "--run-dir",
        dir,
      ]);
      await run.waitFor(/step 1\/8/);
      const ckdir = path.join(dir, "checkpoints");
      while (!(fs.existsSync(ckdir) && fs.readdirSync(ckdir).some((f) => /^step-\d{9}\.safetensors$/.test(f))))
        await sleep(5);
      // Fill the file system to the last byte.
      const fd = fs.openSync(path.join(mnt, "filler"), "w");
      const chunk = Buffer.alloc(64 * 1024);
      try {
        for (;;) fs.writeSync(fd, chunk);
      } catch (error) {
        assert.equal((error as NodeJS.ErrnoException).code, "ENOSPC");
      }
      try {
        for (;;) fs.writeSync(fd, chunk.subarray(0, 512));
      } catch {
        // full
      }
      fs.closeSync(fd);
      const r = await run.done;
      assert.equal(r.status, 1, show(r));
      assert.match(
        r.stderr,
        /(could not write the checkpoint of step \d+ to .*checkpoints \(ENOSPC: no space left on device.*\); the previous checkpoint .*step-\d{9}\.safetensors is intact|cannot append to .*metrics\.jsonl \(ENOSPC)/,
      );
      assert.doesNotMatch(r.stderr, noStack);
      const left = fs.readdirSync(path.join(dir, "checkpoints"));
      assert.deepEqual(
        left.filter((f) => !/^step-\d{9}\.safetensors$/.test(f)),
        [],
        "no temporary or partial file",
      );
      const latest = loadLatestCheckpoint(dir, (m) => assert.fail(m));
      assert.ok(latest !== null, "the previous checkpoint loads");
      for (const c of [...latest.model.values(), ...latest.optimizer.values()]) c.release();
    } finally {
      umount(mnt);
    }
  });
});

describe("flags and config files", { skip: needData }, () => {
  const write = (name: string, text: string): string => {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, text);
    return file;
  };
  const cases: [string, () => string[], RegExp][] = [
    ["unknown flag", () => ["--epoch", "2"], /loco: unknown option --epoch for `loco train`/],
    ["ill-typed flag value", () => ["--lr", "fast"], /loco: --lr: expected a number >= 0, got 'fast'/],
    ["out-of-range flag value", () => ["--batch-size", "1"], /loco: --batch-size: expected an integer >= 2, got '1'/],
    [
      "bad enum value",
      () => ["--on-nonfinite", "ignore"],
      /loco: --on-nonfinite: expected one of stop, skip, got 'ignore'/,
    ],
    ["flag without its value", () => ["--epochs"], /loco: --epochs: expected a value/],
    [
      "unknown config field",
      () => ["--config", write("unknown.json", '{"epochz": 3}')],
      /loco: unknown\.json: unknown field 'epochz' for `loco train`/,
    ],
    [
      "ill-typed config field",
      () => ["--config", write("typed.yaml", "epochs: many\n")],
      /loco: typed\.yaml: field 'epochs': expected an integer >= 1, got 'many'/,
    ],
    [
      "YAML syntax error",
      () => ["--config", write("broken.yaml", "epochs: [1, 2\nlr: 0.1\n")],
      /loco: .*broken\.yaml: not valid YAML \(/,
    ],
    [
      "JSON syntax error",
      () => ["--config", write("broken.json", '{"epochs": 2,}')],
      /loco: .*broken\.json: not valid JSON \(/,
    ],
    [
      "missing config file",
      () => ["--config", path.join(tmp, "absent.yaml")],
      /loco: .*absent\.yaml: cannot read config file \(ENOENT/,
    ],
    [
      "unknown baseline",
      () => ["--baselines", "random-init,imagenet"],
      /loco: --baselines: unknown baseline 'imagenet'/,
    ],
  ];
  // All the runs start at once (each is a short-lived process); each case is its own test.
  const runs = new Map<string, Promise<{ dir: string; r: Run }>>();
  before(() => {
    for (const [what, args] of cases) {
      const dir = path.join(tmp, `flags-${what.replace(/\W+/g, "-")}`);
      runs.set(
        what,
        loco(["train", "--data-dir", data, "--run-dir", dir, ...args()]).then((r) => ({ dir, r })),
      );
    }
  });
  for (const [what, , expected] of cases) {
    test(`${what}: exit 2, a message naming it, nothing written`, async () => {
      const { dir, r } = await runs.get(what)!;
      assert.equal(r.status, 2, show(r));
      assert.match(r.stderr, expected, show(r));
      assert.doesNotMatch(r.stderr, noStack);
      assert.ok(!fs.existsSync(dir), "the run directory was created");
    });
  }
});

describe("dataset files", { skip: needData }, () => {
  test("a missing data folder is reported with its path", async () => {
    const missing = await loco([
      "train",
      ...tinyFlags(path.join(tmp, "no-such-data")),
      "--run-dir",
      path.join(tmp, "run-missing"),
    ]);
    assert.equal(missing.status, 1, show(missing));
    assert.match(
      missing.stderr,
      /loco: (pretraining|readout train|test) data \(fashion-mnist\): .*no-such-data: missing (train|t10k)-images-idx3-ubyte \(or (train|t10k)-images-idx3-ubyte\.gz\)/,
    );
    assert.doesNotMatch(missing.stderr, noStack);
  });

  test("a truncated IDX file is reported with its path, what its header declares and what it holds", async () => {
    const cut = path.join(tmp, "cut-data");
    fs.cpSync(data, cut, { recursive: true });
    const file = path.join(cut, "train-images-idx3-ubyte");
    fs.truncateSync(file, fs.statSync(file).size - 1000);
    const truncated = await loco(["train", ...tinyFlags(cut), "--run-dir", path.join(tmp, "run-cut")]);
    assert.equal(truncated.status, 1, show(truncated));
    assert.ok(truncated.stderr.includes(`${file}: IDX header declares shape [512, 28, 28]`), show(truncated));
    assert.match(truncated.stderr, /\(truncated\)/);
    assert.doesNotMatch(truncated.stderr, noStack);
  });
});

describe("image folders", () => {
  let root = "";
  before(async () => {
    const sharp = (await import("sharp")).default;
    root = path.join(tmp, "images");
    for (const split of ["train", "test"]) {
      for (const cls of ["cat", "dog"]) {
        const dir = path.join(root, split, cls);
        fs.mkdirSync(dir, { recursive: true });
        for (let i = 0; i < 4; i++) {
          const pixels = Buffer.alloc(12 * 12 * 3, (i * 50 + (cls === "cat" ? 0 : 120)) % 256);
          await sharp(pixels, { raw: { width: 12, height: 12, channels: 3 } })
            .png()
            .toFile(path.join(dir, `${i}.png`));
        }
      }
    }
    // A JPEG cut off after its first bytes.
    const jpeg = await sharp(Buffer.alloc(12 * 12 * 3, 90), { raw: { width: 12, height: 12, channels: 3 } })
      .jpeg()
      .toBuffer();
    fs.writeFileSync(path.join(root, "train", "dog", "broken.jpg"), jpeg.subarray(0, 40));
  });

  test("a bad JPEG is reported with its path: fatal by default, skipped with onBadImage: skip", async () => {
    const bad = path.join(root, "train", "dog", "broken.jpg");
    await assert.rejects(openDataset({ name: "folder", dir: root, split: "train", size: 8 }), (e: unknown) => {
      assert.ok((e as Error).message.startsWith(`${bad}: cannot decode image`), (e as Error).message);
      return true;
    });
    const skipped = await openDataset({ name: "folder", dir: root, split: "train", size: 8, onBadImage: "skip" });
    assert.equal(skipped.count, 8);
    assert.deepEqual(
      (skipped as unknown as { skipped: { file: string }[] }).skipped.map((s) => s.file),
      [bad],
    );
  });

  test("loco train on the folder stops with the bad file's path", { skip: needData }, async () => {
    const r = await loco([
      "train",
      "--dataset",
      "folder",
      "--data-dir",
      root,
      "--image-size",
      "8",
      "--batch-size",
      "4",
      "--width",
      "4",
      "--epochs",
      "1",
      "--knn-every",
      "0",
      "--baselines",
      "none",
      "--run-dir",
      path.join(tmp, "run-folder"),
    ]);
    assert.equal(r.status, 1, show(r));
    assert.ok(r.stderr.includes(`${path.join(root, "train", "dog", "broken.jpg")}: cannot decode image`), show(r));
    assert.doesNotMatch(r.stderr, noStack);
  });
});

describe("checkpoint files", () => {
  test("a file that is not a checkpoint, and a safetensors file without loco's run state, are rejected naming the file", () => {
    const dir = path.join(tmp, "not-checkpoints");
    fs.mkdirSync(dir, { recursive: true });
    const garbage = path.join(dir, "garbage.safetensors");
    fs.writeFileSync(garbage, "this is not a safetensors file at all");
    assert.throws(
      () => loadCheckpoint(garbage),
      (e: unknown) => e instanceof CheckpointError && e.message.startsWith(`${garbage}: not a readable checkpoint`),
    );
    const plain = path.join(dir, "plain.safetensors");
    const t = keep(zeros([2, 2]));
    saveSafetensors(plain, { w: t });
    t.release();
    assert.throws(
      () => loadCheckpoint(plain),
      /plain\.safetensors: not a loco checkpoint \(no run state or checksum in its metadata\)/,
    );
    const wrongState = path.join(dir, "wrong-state.safetensors");
    const u = keep(zeros([2]));
    saveSafetensors(
      wrongState,
      { "model.w": u },
      { loco: JSON.stringify({ format: CHECKPOINT_FORMAT }), sha256: "0".repeat(64) },
    );
    u.release();
    assert.throws(() => loadCheckpoint(wrongState), /wrong-state\.safetensors: checksum mismatch/);
  });
});
