// The launcher (`loco launch`, src/parallel/launcher.ts): torchrun's variables per rank, cores
// divided among ranks, output prefixed per rank, a failed rank stops the others (SIGTERM, then
// SIGKILL after the grace), Ctrl-C forwarded once, and a real 2-rank process group launched by it.
import { after, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { PassThrough } from "node:stream";
import { LaunchError, launch, planRanks } from "../src/parallel/launcher";
import { MAIN } from "./helpers/runs";
import { freePort } from "./helpers/ranks";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loco-launch-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function script(name: string, body: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, body);
  return file;
}

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = "";
  stream.on("data", (d: Buffer) => (text += d.toString()));
  return { stream, text: () => text };
}

const printEnv = script(
  "env.js",
  `const e = process.env;
console.log(["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS", "LOCO_NUM_THREADS"].map((k) => k + "=" + e[k]).join(" "));
process.stdout.write("no newline at the end");`,
);

// Rank 1 fails once rank 0 has its SIGTERM handler (READY_FILE exists); rank 0 would run for a
// minute, and says when SIGTERM reaches it.
const failing = script(
  "failing.js",
  `const fs = require("node:fs");
if (process.env.RANK === "1") {
  setInterval(() => { if (fs.existsSync(process.env.READY_FILE)) { console.error("rank one gives up"); process.exit(3); } }, 20);
} else {
  process.on("SIGTERM", () => { console.log("stopping on SIGTERM"); process.exit(143); });
  fs.writeFileSync(process.env.READY_FILE, "");
  setTimeout(() => {}, 60000);
}`,
);

const stubborn = script(
  "stubborn.js",
  `const fs = require("node:fs");
if (process.env.RANK === "1") {
  setInterval(() => { if (fs.existsSync(process.env.READY_FILE)) process.exit(1); }, 20);
} else {
  process.on("SIGTERM", () => console.log("ignoring SIGTERM"));
  fs.writeFileSync(process.env.READY_FILE, "");
  setTimeout(() => {}, 60000);
}`,
);

const interruptible = script(
  "interruptible.js",
  `let count = 0;
process.on("SIGINT", () => { count++; console.log("SIGINT " + count); setTimeout(() => process.exit(130), 300); });
console.log("ready");
setTimeout(() => {}, 60000);`,
);

describe("loco launch", () => {
  test("plans torchrun's variables and divides the cores among the ranks", () => {
    const { ranks, threadsPerRank } = planRanks({
      command: ["x"],
      nproc: 3,
      nnodes: 2,
      nodeRank: 1,
      masterAddr: "10.1.2.3",
      masterPort: 29400,
      cores: 8,
    });
    assert.equal(threadsPerRank, 2);
    assert.deepEqual(
      ranks.map((r) => [r.env.RANK, r.env.LOCAL_RANK, r.env.WORLD_SIZE, r.env.GROUP_RANK, r.env.OMP_NUM_THREADS]),
      [
        ["3", "0", "6", "1", "2"],
        ["4", "1", "6", "1", "2"],
        ["5", "2", "6", "1", "2"],
      ],
    );
    assert.equal(planRanks({ command: ["x"], nproc: 4, cores: 2 }).threadsPerRank, 1);
    assert.throws(() => planRanks({ command: ["x"], nproc: 2, nnodes: 2 }), /--master-addr is required/);
    assert.throws(
      () => planRanks({ command: ["x"], nproc: 2, nnodes: 2, nodeRank: 2, masterAddr: "h" }),
      (e: Error) => e instanceof LaunchError && /--node-rank must be below --nnodes \(2\), got 2/.test(e.message),
    );
    assert.throws(() => planRanks({ command: [], nproc: 1 }), /no command to launch/);
  });

  test("sets each rank's variables and prefixes its output lines", async () => {
    const out = capture();
    const result = await launch({
      command: [process.execPath, printEnv],
      nproc: 2,
      masterPort: 29411,
      cores: 2,
      stdout: out.stream,
    });
    assert.equal(result.exitCode, 0);
    const lines = out.text().trim().split("\n").sort();
    assert.deepEqual(lines, [
      "[rank 0] RANK=0 LOCAL_RANK=0 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29411 OMP_NUM_THREADS=1 LOCO_NUM_THREADS=1",
      "[rank 0] no newline at the end",
      "[rank 1] RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29411 OMP_NUM_THREADS=1 LOCO_NUM_THREADS=1",
      "[rank 1] no newline at the end",
    ]);
  });

  test("a failed rank stops the others and the launch exits with its status", async () => {
    const out = capture();
    const err = capture();
    const started = Date.now();
    const result = await launch({
      command: [process.execPath, failing],
      nproc: 2,
      cores: 2,
      env: { READY_FILE: path.join(tmp, "failing.ready") },
      stdout: out.stream,
      stderr: err.stream,
    });
    assert.ok(Date.now() - started < 30000);
    assert.equal(result.exitCode, 3);
    assert.equal(result.failedRank, 1);
    assert.deepEqual(result.ranks[0], { rank: 0, code: 143, signal: null });
    assert.match(out.text(), /\[rank 0\] stopping on SIGTERM/);
    assert.match(err.text(), /\[rank 1\] rank one gives up/);
    assert.match(err.text(), /\[launch\] rank 1 exited with status 3; stopping the other ranks/);
  });

  test("a rank that ignores SIGTERM is killed after the grace period", async () => {
    const out = capture();
    const result = await launch({
      command: [process.execPath, stubborn],
      nproc: 2,
      cores: 2,
      env: { READY_FILE: path.join(tmp, "stubborn.ready") },
      stopGraceMs: 1500,
      stdout: out.stream,
      stderr: capture().stream,
    });
    assert.equal(result.exitCode, 1);
    assert.deepEqual(result.ranks[0], { rank: 0, code: null, signal: "SIGKILL" });
  });

  test("the CLI forwards Ctrl-C to every rank once and exits 130", async () => {
    const child = spawn(process.execPath, [MAIN, "launch", "--nproc", "2", "--", process.execPath, interruptible], {
      env: { ...process.env, OMP_NUM_THREADS: "1", LOCO_NUM_THREADS: "1" },
    });
    let stdout = "";
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const ready = new Promise<void>((resolve) =>
      child.stdout.on("data", (d: Buffer) => {
        stdout += d.toString();
        if ((stdout.match(/ready/g) ?? []).length === 2) resolve();
      }),
    );
    await ready;
    child.kill("SIGINT");
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    assert.equal(code, 130, stderr);
    assert.match(stdout, /\[rank 0\] SIGINT 1/);
    assert.match(stdout, /\[rank 1\] SIGINT 1/);
    assert.doesNotMatch(stdout, /SIGINT 2/);
  });

  test("usage errors exit 2 with a message", async () => {
    const run = (args: string[]): Promise<{ code: number | null; stderr: string }> =>
      new Promise((resolve) => {
        const child = spawn(process.execPath, [MAIN, "launch", ...args]);
        let stderr = "";
        child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        child.on("close", (code) => resolve({ code, stderr }));
      });
    const missing = await run(["--", "node", "x.js"]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--nproc is required/);
    const nodes = await run(["--nproc", "2", "--nnodes", "2", "--", "node", "x.js"]);
    assert.equal(nodes.code, 2);
    assert.match(nodes.stderr, /--master-addr is required with --nnodes > 1/);
    assert.doesNotMatch(nodes.stderr, /at .*\.js/);
    const evaluate = await run(["--nproc", "2", "--", "eval", "runs/x"]);
    assert.equal(evaluate.code, 2);
    assert.match(
      evaluate.stderr,
      /`loco eval` does not run on several ranks \(`loco train --parallel data\|stages` does\)/,
    );
    // Every rank of a train that is not parallel refuses (N copies would write one run directory).
    const train = await run(["--nproc", "2", "--", "train", "--method", "simclr"]);
    assert.equal(train.code, 2);
    assert.match(train.stderr, /\[rank [01]\] loco: WORLD_SIZE is 2: .*pass --parallel data/);
  });

  test("two launchers as two nodes (--nnodes 2, one rank each) form one process group", async () => {
    const worker = path.join(__dirname, "helpers", "dist-worker.js");
    const port = await freePort();
    const outs = [capture(), capture()];
    const results = await Promise.all(
      [0, 1].map((nodeRank) =>
        launch({
          command: [process.execPath, worker, "operations"],
          nproc: 1,
          nnodes: 2,
          nodeRank,
          masterAddr: "127.0.0.1",
          masterPort: port,
          cores: 2,
          stdout: outs[nodeRank].stream,
          env: { LOCO_DIST_TIMEOUT_MS: "30000" },
        }),
      ),
    );
    assert.deepEqual(
      results.map((r) => r.exitCode),
      [0, 0],
      outs.map((o) => o.text()).join("\n"),
    );
    assert.match(outs[0].text(), /^\[rank 0\] RESULT \{"sum":\[0,3,6/m);
    assert.match(outs[1].text(), /^\[rank 1\] RESULT .*"recv":\[100\.5/m);
  });

  test("launches a real 2-rank process group", async () => {
    const worker = path.join(__dirname, "helpers", "dist-worker.js");
    const out = capture();
    const result = await launch({
      command: [process.execPath, worker, "operations"],
      nproc: 2,
      masterPort: await freePort(),
      cores: 2,
      stdout: out.stream,
      env: { LOCO_DIST_TIMEOUT_MS: "30000" },
    });
    assert.equal(result.exitCode, 0, out.text());
    assert.match(out.text(), /^\[rank 0\] RESULT \{"sum":\[0,3,6/m);
    assert.match(out.text(), /^\[rank 1\] RESULT \{"sum":\[0,3,6/m);
  });
});
