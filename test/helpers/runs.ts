// Shared by the reliability tests: a tiny Fashion-MNIST copy (so that runs and readouts take
// seconds), `loco` as a child process with hooks on its output, and byte-for-byte comparison of
// checkpoints. Importing this file has no side effects.
import { type ChildProcess, spawn } from "node:child_process";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { readIdx, writeIdx } from "../../src/data/idx";
import { loadCheckpoint } from "../../src/learning/checkpoint";
import type { TrainInput } from "../../src/learning/options";
import { type TrainOutcome, train } from "../../src/learning/trainer";
import { Progress } from "../../src/learning/progress";

export const MAIN = path.join(__dirname, "..", "..", "src", "cli", "main.js");
export const FASHION_MNIST = "/usr/share/datasets/fashion-mnist";
export const haveFashionMnist =
  fs.existsSync(path.join(FASHION_MNIST, "train-images-idx3-ubyte.gz")) ||
  fs.existsSync(path.join(FASHION_MNIST, "train-images-idx3-ubyte"));
export const ENV: NodeJS.ProcessEnv = { ...process.env, LOCO_NUM_THREADS: "1", OMP_NUM_THREADS: "1" };

/**
 * Writes the first `train` and `test` images of Fashion-MNIST (uncompressed IDX) into dir, so a
 * run reads, trains and reads out in seconds.
 */
export function makeTinyFashionMnist(dir: string, train = 512, test = 256): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const [prefix, n] of [
    ["train", train],
    ["t10k", test],
  ] as const) {
    const find = (stem: string): string =>
      [stem, `${stem}.gz`].map((f) => path.join(FASHION_MNIST, f)).find((f) => fs.existsSync(f)) ??
      path.join(FASHION_MNIST, stem);
    const images = readIdx(find(`${prefix}-images-idx3-ubyte`), 3);
    const labels = readIdx(find(`${prefix}-labels-idx1-ubyte`), 1);
    const [, h, w] = images.shape;
    writeIdx(path.join(dir, `${prefix}-images-idx3-ubyte`), [n, h, w], images.data.subarray(0, n * h * w));
    writeIdx(path.join(dir, `${prefix}-labels-idx1-ubyte`), [n], labels.data.subarray(0, n));
  }
  return dir;
}

/** Flags of a tiny run: 512 images, batch 64 (8 steps an epoch), ResNet-18 of width 4, 1 thread. */
export function tinyFlags(dataDir: string, extra: Record<string, string | number> = {}): string[] {
  const flags: Record<string, string | number> = {
    dataset: "fashion-mnist",
    "data-dir": dataDir,
    "train-subset": 0,
    "batch-size": 64,
    width: 4,
    epochs: 2,
    "knn-every": 0,
    "readout-epochs": 1,
    "readout-train-size": 256,
    baselines: "none",
    threads: 1,
    workers: 1,
    ...extra,
  };
  return Object.entries(flags).flatMap(([k, v]) => [`--${k}`, String(v)]);
}

/** The library input of the same tiny run (for in-process runs through `train`). */
export function tinyInput(dataDir: string, extra: TrainInput = {}): TrainInput {
  return {
    dataset: "fashion-mnist",
    dataDir,
    trainSubset: 0,
    batchSize: 64,
    width: 4,
    epochs: 2,
    knnEvery: 0,
    readoutEpochs: 1,
    readoutTrainSize: 256,
    baselines: "none",
    threads: 1,
    workers: 1,
    ...extra,
  };
}

/**
 * Trains in this process through the library, asking it to stop (as a Ctrl-C would) once `step`
 * steps are done. Returns the outcome and the log lines.
 */
export async function trainStoppingAfter(
  input: TrainInput,
  step: number,
): Promise<{ outcome: TrainOutcome; log: string }> {
  const logs: string[] = [];
  const sink = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;
  const outcome = await train(input, {
    shouldStop: (info) => info.step >= step,
    log: (m) => logs.push(m),
    progress: new Progress(sink),
  });
  return { outcome, log: logs.join("\n") };
}

export interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Milliseconds from spawn to exit. */
  ms: number;
}

export interface Running {
  child: ChildProcess;
  /** Resolves with the stderr so far once it matches `pattern` (rejects if the process ends first). */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  done: Promise<Run>;
}

/** `loco ...args` as a child process. */
export function startLoco(args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Running {
  const started = Date.now();
  const child = spawn(process.execPath, [MAIN, ...args], {
    env: { ...ENV, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  const watchers: { pattern: RegExp; resolve: (s: string) => void }[] = [];
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => {
    stderr += d.toString();
    for (const w of [...watchers]) {
      if (w.pattern.test(stderr)) {
        watchers.splice(watchers.indexOf(w), 1);
        w.resolve(stderr);
      }
    }
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
  const done = new Promise<Run>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
  const waitFor = (pattern: RegExp, timeoutMs = 60_000): Promise<string> =>
    new Promise((resolve, reject) => {
      if (pattern.test(stderr)) return resolve(stderr);
      const t = setTimeout(
        () => reject(new Error(`timed out waiting for ${pattern}; stderr so far:\n${stderr}`)),
        timeoutMs,
      );
      watchers.push({
        pattern,
        resolve: (s) => {
          clearTimeout(t);
          resolve(s);
        },
      });
      void done.then((r) => {
        clearTimeout(t);
        if (!pattern.test(r.stderr))
          reject(new Error(`loco exited (${r.status ?? r.signal}) before printing ${pattern}:\n${show(r)}`));
      });
    });
  return { child, waitFor, done };
}

export function loco(args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return startLoco(args, options).done;
}

export const show = (r: Run): string =>
  `exit ${r.status ?? r.signal} after ${r.ms} ms\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;

/**
 * Compares two checkpoint files tensor by tensor, byte for byte (model and optimizer state), and
 * their run state (step, loader position, schedule, generator). Returns the differences.
 */
export function checkpointDifferences(fileA: string, fileB: string): string[] {
  const a = loadCheckpoint(fileA);
  const b = loadCheckpoint(fileB);
  const diffs: string[] = [];
  try {
    for (const kind of ["model", "optimizer"] as const) {
      const keys = new Set([...a[kind].keys(), ...b[kind].keys()]);
      for (const key of keys) {
        const x = a[kind].get(key);
        const y = b[kind].get(key);
        if (x === undefined || y === undefined) {
          diffs.push(`${kind}.${key}: only in ${x === undefined ? fileB : fileA}`);
          continue;
        }
        const bx = x.data();
        const by = y.data();
        const same =
          x.dtype === y.dtype &&
          Buffer.from(bx.buffer, bx.byteOffset, bx.byteLength).equals(
            Buffer.from(by.buffer, by.byteOffset, by.byteLength),
          );
        if (!same) diffs.push(`${kind}.${key}`);
      }
    }
    for (const field of ["step", "position", "phase", "optimizer", "generatorState", "schedule"] as const) {
      if (JSON.stringify(a.meta[field]) !== JSON.stringify(b.meta[field])) diffs.push(`meta.${field}`);
    }
  } finally {
    for (const t of [...a.model.values(), ...a.optimizer.values(), ...b.model.values(), ...b.optimizer.values()])
      t.release();
  }
  return diffs;
}

export const checkpointsOf = (runDir: string): string[] =>
  fs.existsSync(path.join(runDir, "checkpoints")) ? fs.readdirSync(path.join(runDir, "checkpoints")).sort() : [];

/** The newest checkpoint file of a run directory. */
export const lastCheckpoint = (runDir: string): string =>
  path.join(runDir, "checkpoints", checkpointsOf(runDir).at(-1)!);

/**
 * Every model and optimizer tensor of two checkpoints agrees to `tolerance` of its tensor's largest
 * magnitude (at least `minScale`), the same keys on both sides, and the listed meta fields equal.
 */
export function assertCheckpointsWithin(
  fileA: string,
  fileB: string,
  options: { tolerance: number; minScale: number; meta: ("step" | "schedule" | "position")[] },
): void {
  const a = loadCheckpoint(fileA);
  const b = loadCheckpoint(fileB);
  try {
    for (const kind of ["model", "optimizer"] as const) {
      assert.deepEqual([...a[kind].keys()].sort(), [...b[kind].keys()].sort(), `${kind} keys`);
      for (const [key, x] of a[kind]) {
        const actual = x.toArray();
        const expected = b[kind].get(key)!.toArray();
        const bound = options.tolerance * Math.max(options.minScale, ...expected.map(Math.abs));
        actual.forEach((v, i) =>
          assert.ok(Math.abs(v - expected[i]) <= bound, `${kind}.${key}[${i}]: ${v} vs ${expected[i]}`),
        );
      }
    }
    for (const field of options.meta) assert.deepEqual(a.meta[field], b.meta[field], `meta.${field}`);
  } finally {
    for (const t of [...a.model.values(), ...a.optimizer.values(), ...b.model.values(), ...b.optimizer.values()])
      t.release();
  }
}

/** Every file under dir (relative paths), for "nothing was written" checks. */
export function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}
