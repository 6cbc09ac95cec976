// The child processes of `npm run bench:parallel` (bench/parallel.ts): bench/parallel-rank.js
// started as 2 ranks of a process group, or as one process without a group (a method's
// one-process baseline, and the ceiling's processes), each with one libtorch thread.
import { type ChildProcessByStdio, spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import * as net from "node:net";
import * as path from "node:path";
import type { StageRankStats } from "../src/learning";
import type { Case } from "./parallel-predict";
import type { BenchModel } from "./parallel-model";
import type { RankRun } from "./parallel-rank";
import type { CpuPerStep } from "./thread-cpu";

/** What the child processes need of the bench's options. */
export interface RunOptions {
  model: BenchModel;
  warmup: number;
  steps: number;
  timeoutMs: number;
}

/**
 * Untimed steps a 2-rank run adds to --warmup: a rank ends step s waiting for its sends of step
 * s − 1 to be taken (Gloo hands a message over once the peer has posted its receive), so with GIM
 * (no message down) rank 0 runs up to 2 steps ahead of rank 1, and its timed window covers rank 1's
 * steps from warmup − 2 on. Without these, rank 1's first (cold) step fell into rank 0's window and
 * read as 37% wait on rank 0 at 2 warmup steps.
 */
const LEAD_STEPS = 2;

/** One rank of a 2-rank run (bench/parallel-rank.ts). */
export interface RankStats {
  stats: StageRankStats;
  /** The timed steps' wall time, optimizer steps included. */
  elapsedMs: number;
  updateMs: number;
  peakBytes: number;
  link: { tinyMs: number; bigMs: number; bytes: number } | null;
  cpu: CpuPerStep;
}

/** A one-process run (bench/parallel-rank.ts with `solo`). */
export interface Solo {
  imagesPerSecond: number;
  cpu: CpuPerStep;
}

export const fixed = (x: number, digits = 2): number => Number(x.toFixed(digits));

export const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/** The middle value (the mean of the two middle ones for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 === 1 ? s[h] : (s[h - 1] + s[h]) / 2;
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });

/** Runs bench/parallel-rank.js as `ranks` processes (a group unless `run.solo`); their RESULT lines. */
export function startRanks<T>(run: RankRun, ranks: number, timeoutMs: number): Promise<T[]> {
  const script = path.join(__dirname, "parallel-rank.js");
  const children: ChildProcessByStdio<Writable, Readable, Readable>[] = [];
  const isReady = Array.from({ length: ranks }, () => false);
  return freePort().then((port) =>
    Promise.all(
      Array.from(
        { length: ranks },
        (_, rank) =>
          new Promise<T>((resolve, reject) => {
            const child = spawn(process.execPath, [script, JSON.stringify(run)], {
              env: {
                ...process.env,
                OMP_NUM_THREADS: "1",
                LOCO_NUM_THREADS: "1",
                ...(run.solo === true
                  ? {}
                  : {
                      MASTER_ADDR: "127.0.0.1",
                      MASTER_PORT: String(port),
                      RANK: String(rank),
                      LOCAL_RANK: String(rank),
                      WORLD_SIZE: String(ranks),
                      LOCO_DIST_TIMEOUT_MS: String(timeoutMs),
                    }),
              },
              stdio: ["pipe", "pipe", "pipe"],
            });
            children.push(child);
            if (run.together !== true) child.stdin.end();
            let stdout = "";
            let stderr = "";
            child.stdout.on("data", (d: Buffer) => {
              stdout += d.toString();
              if (run.together === true && !isReady[rank] && stdout.includes("READY\n")) {
                isReady[rank] = true;
                // All warmed up: the timed steps start now in every process.
                if (isReady.every(Boolean)) for (const c of children) c.stdin.end("go\n");
              }
            });
            child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
            child.on("close", (code) => {
              if (code !== 0) for (const c of children) c.stdin.end(); // none waits for a go that won't come
              const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
              if (code !== 0 || line === undefined) reject(new Error(`rank ${rank} failed (${code}):\n${stderr}`));
              else resolve(JSON.parse(line.slice(7)) as T);
            });
          }),
      ),
    ),
  );
}

/** The case on 2 ranks (its warmup lengthened by LEAD_STEPS); with `pingBytes`, the link timed first. */
export const runRanks = (o: RunOptions, c: Case, split: number[], pingBytes?: number): Promise<RankStats[]> =>
  startRanks<RankStats>(
    {
      ...{ model: o.model, method: c.method, schedule: c.schedule, split },
      ...{ warmup: o.warmup + LEAD_STEPS, steps: o.steps, pingBytes },
    },
    2,
    o.timeoutMs,
  );

/**
 * The method in one process of one thread on the split, in a child process started as the ranks
 * are (not in the bench's own process: after the profile, the same run there was 20% slower than
 * the ceiling's fresh process, which made the 2-rank speedups look larger than the ceiling allows).
 * With `processes` > 1, that many at once, their timed steps started together once all have
 * warmed up (they time the same span).
 */
export async function runAlone(
  o: RunOptions,
  c: Pick<Case, "method">,
  split: number[],
  processes = 1,
): Promise<Solo[]> {
  const run: RankRun = {
    ...{ model: o.model, method: c.method, schedule: "sync", split },
    ...{ warmup: o.warmup, steps: o.steps, solo: true, together: processes > 1 },
  };
  return startRanks<Solo>(run, processes, o.timeoutMs);
}
