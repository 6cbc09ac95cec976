// Reliability, part two (docs/reliability.md): batch-norm buffers in the non-finite checks, a
// diverged readout, flags given with --resume, damaged config.json, full disks during results,
// eval and embed, stale temporaries, every checkpoint corrupt, user errors that crashed, the
// free-space arithmetic and run directories on pseudo file systems. Tiny data (test/helpers/runs.ts).
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { filesUnder, haveFashionMnist, loco, makeTinyFashionMnist, show, tinyFlags } from "./helpers/runs";
import { checkpointsOf as checkpointNames } from "./helpers/runs";
import { loadCheckpoint, removeStaleTemporaries } from "../src/learning/checkpoint";
import { TrainingError } from "../src/learning/errors";
import { embedRun, evaluateRun } from "../src/learning/evaluate";
import { writeJsonAtomic } from "../src/learning/rundir";
import { readRunConfig, resumeOptions } from "../src/learning/runs";
import { noGrad } from "../src/torch";

const checkpointsOf = (dir: string): string[] => checkpointNames(dir).map((f) => path.join(dir, "checkpoints", f));
const noStack = /\n\s+at .*\.js:\d+/;
const needData = haveFashionMnist ? false : "needs Fashion-MNIST in /usr/share/datasets/fashion-mnist";
let tmp = "";
let data = "";
/** A run whose --lr 1e6 overflowed batch-norm statistics (made once, shared by several tests). */
let diverged = "";
let divergedRun: Awaited<ReturnType<typeof loco>>;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loco-reliab-"));
  if (!haveFashionMnist) return;
  data = makeTinyFashionMnist(path.join(tmp, "data"));
  diverged = path.join(tmp, "diverged");
  divergedRun = await loco(["train", ...tinyFlags(data, { lr: 1e6, "checkpoint-every": 1 }), "--run-dir", diverged]);
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function allFinite(file: string): string[] {
  const c = loadCheckpoint(file);
  const bad = [...c.model].filter(([, t]) => noGrad(() => t.isfinite().all().item()) === 0).map(([k]) => k);
  for (const t of [...c.model.values(), ...c.optimizer.values()]) t.release();
  return bad;
}

function mountTmpfs(dir: string, size: string): boolean {
  fs.mkdirSync(dir, { recursive: true });
  return spawnSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir]).status === 0;
}
const umount = (dir: string): void => void spawnSync("umount", [dir]);

describe("non-finite batch-norm statistics and a diverged readout", { skip: needData }, () => {
  test("--lr 1e6 --checkpoint-every 1: stops on the overflowed buffer, every checkpoint finite, loco eval reports the readout as diverged", async () => {
    assert.equal(divergedRun.status, 3, show(divergedRun));
    assert.match(divergedRun.stderr, /training diverged at step \d+ .*(running_var|running_mean|weight|bias)/);
    const files = checkpointsOf(diverged);
    assert.ok(files.length > 0);
    for (const f of files) assert.deepEqual(allFinite(f), [], f);
    const r = await loco(["eval", diverged, "--baselines", "none"]);
    assert.equal(r.status, 0, show(r));
    assert.doesNotMatch(r.stderr, noStack);
    const report = JSON.parse(fs.readFileSync(path.join(diverged, r.stdout.match(/eval-step-\d+\.json/)![0]), "utf8"));
    assert.ok(report.linear.top1 === null ? /diverged/.test(report.linear.diverged) : report.linear.top1 >= 0);
  });

  test("--on-nonfinite skip: skipped steps leave no non-finite buffer in any checkpoint", async () => {
    const dir = path.join(tmp, "skip");
    const r = await loco([
      "train",
      ...tinyFlags(data, { lr: 1e6, "checkpoint-every": 1, "on-nonfinite": "skip" }),
      "--run-dir",
      dir,
    ]);
    assert.ok([0, 3].includes(r.status!), show(r));
    assert.doesNotMatch(r.stderr, noStack);
    assert.match(r.stderr, /skipped/);
    for (const f of checkpointsOf(dir)) assert.deepEqual(allFinite(f), [], f);
  });
});

describe("resume: flags given with --resume, config.json checked", { skip: needData }, () => {
  test("run-defining flags that differ are refused naming them; adjustable ones applied with a warning", async () => {
    const r = await loco([
      "train",
      "--resume",
      diverged,
      "--method",
      "loco",
      "--batch-size",
      "32",
      "--dataset",
      "cifar10",
    ]);
    assert.equal(r.status, 2, show(r));
    assert.match(r.stderr, /--resume .*: method, batchSize, dataset differ from the run's/);
    assert.doesNotMatch(r.stderr, noStack);
    const warnings: string[] = [];
    const o = resumeOptions({ resume: diverged, knnEvery: 3, batchSize: 64, epochs: 5 }, (m) => warnings.push(m));
    assert.equal(o.knnEvery, 3);
    assert.equal(o.epochs, 5);
    assert.equal(o.batchSize, 64, "the same value as the run's is no conflict");
    assert.ok(
      warnings.some((w) => /knnEvery changes from 0 to 3/.test(w)),
      warnings.join("\n"),
    );
    assert.throws(() => resumeOptions({ resume: diverged, knnEvery: -1 }), /knnEvery: expected an integer >= 0/);
  });

  const damaged: [string, (c: Record<string, unknown>) => unknown, RegExp][] = [
    ["epochs 0", (c) => void (c.epochs = 0), /epochs: expected an integer >= 1, got 0/],
    ['knnEvery "x"', (c) => void (c.knnEvery = "x"), /knnEvery: expected an integer >= 0, got "x"/],
    ["no resolved", (c) => void delete c.resolved, /resolved: expected .*missing/],
    ["empty resolved", (c) => void (c.resolved = {}), /resolved: expected the run's resolved options, got \{\}/],
    [
      'resolved.epochs "many"',
      (c) => void ((c.resolved as Record<string, unknown>).epochs = "many"),
      /resolved\.epochs: expected an integer >= 1, got "many"/,
    ],
  ];
  for (const [name, damage, expected] of damaged) {
    test(`config.json with ${name}: a usage error naming the file and field, on resume too`, async () => {
      const dir = path.join(tmp, `damaged-${name.replace(/\W+/g, "-")}`);
      fs.cpSync(diverged, dir, { recursive: true });
      const file = path.join(dir, "config.json");
      const config = JSON.parse(fs.readFileSync(file, "utf8"));
      fs.writeFileSync(file, JSON.stringify(damage(config) ?? config));
      assert.throws(
        () => readRunConfig(dir),
        (e: unknown) =>
          e instanceof TrainingError && e.exitCode === 2 && e.message.includes(file) && expected.test(e.message),
      );
      const r = await loco(["train", "--resume", dir]);
      assert.equal(r.status, 2, show(r));
      assert.match(r.stderr, expected);
      assert.doesNotMatch(r.stderr, noStack);
    });
  }
});

describe("full disk and temporaries", { skip: needData }, () => {
  test("results.json, loco eval and loco embed on a full disk: an error naming the file, no temporary left", async (t) => {
    const mnt = path.join(tmp, "full");
    if (!mountTmpfs(mnt, "64k")) return t.skip("cannot mount a tmpfs here (needs root)");
    try {
      const big = { x: "y".repeat(200_000) };
      assert.throws(
        () => writeJsonAtomic(path.join(mnt, "results.json"), big),
        (e: unknown) =>
          e instanceof TrainingError && /cannot write .*results\.json \(ENOSPC.*the disk is full/.test(e.message),
      );
      assert.deepEqual(fs.readdirSync(mnt), []);
      const out = path.join(mnt, "emb.safetensors");
      await assert.rejects(
        embedRun(diverged, { split: "train", out }),
        (e: unknown) => e instanceof TrainingError && e.message.includes(`cannot write ${out}`),
      );
      assert.deepEqual(fs.readdirSync(mnt), [], "no temporary left");
      const fd = fs.openSync(path.join(mnt, "filler"), "w");
      try {
        for (;;) fs.writeSync(fd, Buffer.alloc(512));
      } catch {
        // full to the last block
      }
      fs.closeSync(fd);
      const r = await loco(["eval", diverged, "--baselines", "none", "--out", path.join(mnt, "eval.json")]);
      assert.equal(r.status, 1, show(r));
      assert.match(r.stderr, /cannot write .*eval\.json/);
      assert.doesNotMatch(r.stderr, noStack);
      assert.deepEqual(fs.readdirSync(mnt), ["filler"]);
    } finally {
      umount(mnt);
    }
  });

  test("stale temporaries of any kind (dead writers) are cleaned by a later run; a live writer's are kept", () => {
    const dir = path.join(tmp, "stale");
    fs.mkdirSync(path.join(dir, "checkpoints"), { recursive: true });
    const dead = 2 ** 22 + 12345; // above the usual pid_max
    const names = [
      `results.json.tmp-${dead}`,
      `config.json.tmp-${dead}`,
      `.embeddings-test.safetensors.${dead}.abcdef.tmp`,
      `checkpoints/.step-000000001.safetensors.${dead}.0a1b.tmp`,
    ];
    for (const n of names) fs.writeFileSync(path.join(dir, n), "x");
    fs.writeFileSync(path.join(dir, `eval.json.tmp-${process.pid}`), "live");
    const removed = removeStaleTemporaries(dir).map((f) => path.relative(dir, f));
    assert.deepEqual(removed.sort(), [...names].sort());
    assert.deepEqual(filesUnder(dir), [`eval.json.tmp-${process.pid}`]);
  });
});

describe("user errors: exit 2, no stack trace, nothing that blocks a retry", { skip: needData }, () => {
  test("every checkpoint *.corrupt: loco eval says so, naming them", async () => {
    const dir = path.join(tmp, "all-corrupt");
    fs.cpSync(diverged, dir, { recursive: true });
    for (const f of checkpointsOf(dir)) fs.renameSync(f, `${f}.corrupt`);
    await assert.rejects(
      evaluateRun(dir),
      /no good checkpoint: every checkpoint failed its checks .*step-\d{9}\.safetensors\.corrupt/,
    );
  });

  const bad: [string[], RegExp][] = [
    [["--temperature", "0"], /--temperature: expected numbers > 0/],
    [["--loss-stages", "9"], /--loss-stages: stage 9 is not in 1\.\.4/],
    [["--loss-stages", "2,2"], /--loss-stages: stage 2 is listed twice/],
    [["--method", "loco", "--temperature", "0.1,0.2"], /--temperature: expected one number or an array of 4/],
    [["--epochs", "0"], /--epochs: expected an integer >= 1/],
  ];
  for (const [flags, expected] of bad) {
    test(`loco train ${flags.join(" ")}`, async () => {
      const dir = path.join(tmp, `bad-${flags.join("-").replace(/\W+/g, "_")}`);
      const r = await loco(["train", ...tinyFlags(data), ...flags, "--run-dir", dir]);
      assert.equal(r.status, 2, show(r));
      assert.match(r.stderr, expected);
      assert.doesNotMatch(r.stderr, noStack);
      assert.ok(!fs.existsSync(path.join(dir, "config.json")), "no config.json left");
    });
  }

  test("loco embed --out under a regular file: refused before any work", async () => {
    const file = path.join(tmp, "a-file");
    fs.writeFileSync(file, "");
    const started = performance.now();
    const r = await loco(["embed", diverged, "--out", path.join(file, "x.safetensors")]);
    assert.equal(r.status, 2, show(r));
    assert.match(
      r.stderr,
      /--out .*a-file\/x\.safetensors: .*is not writable \(ENOTDIR: .*a-file is not a directory\)/,
    );
    assert.doesNotMatch(r.stderr, noStack);
    assert.doesNotMatch(r.stderr, /evaluating|features of/);
    assert.ok(performance.now() - started < 30_000);
  });

  test("--run-dir under /proc: refused at once, no hang", async () => {
    const r = await loco(["train", ...tinyFlags(data), "--run-dir", "/proc/x/y"], { timeoutMs: 30_000 });
    assert.equal(r.status, 2, show(r));
    assert.match(r.stderr, /run directory \/proc\/x\/y is on a proc pseudo file system/);
  });

  test("the free-space message's arithmetic: N checkpoints of ~X plus ~1 MiB of logs need about N*X + 1 MiB", async (t) => {
    const mnt = path.join(tmp, "small");
    if (!mountTmpfs(mnt, "1m")) return t.skip("cannot mount a tmpfs here (needs root)");
    try {
      const r = await loco(["train", ...tinyFlags(data), "--run-dir", path.join(mnt, "run")]);
      assert.equal(r.status, 1, show(r));
      const m = /(\d+) more checkpoints of ~(\d+) KiB plus ~1 MiB of logs need about ([\d.]+) MiB/.exec(r.stderr);
      assert.ok(m !== null, r.stderr);
      const expected = (Number(m[1]) * Number(m[2]) * 1024 + 2 ** 20) / 2 ** 20;
      assert.ok(
        Math.abs(Number(m[3]) - expected) <= 0.05 + Number(m[1]) / 1024,
        `${m[0]} (expected ~${expected.toFixed(2)} MiB)`,
      );
    } finally {
      umount(mnt);
    }
  });
});
