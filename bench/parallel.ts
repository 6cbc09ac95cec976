// `npm run bench:parallel`: stage parallelism on 2 ranks (one libtorch thread each) against one
// process with one thread, for end to end, GIM, LoCo synchronous and LoCo pipelined, each on its own
// 2-stage split; the machine's ceiling for 2 ranks; and the pipeline simulator's predictions for 2,
// 4, 8 and 16 ranks from per-block times measured here, its 2-rank figures beside the measured ones.
//
//   1. profile   per-block times (forward, backward with/without the input gradient, decoder,
//                update) of the model cut at every block, with conv decoders (LoCo) and MLP
//                decoders (GIM, end to end).
//   2. ceiling   LoCo in one process alone, then in two at once: the contention factor and the
//                best 2-rank speedup this machine allows.
//   3. splits    per case, the 2-stage cut that balances its work (decoders, messages and late
//                passes included) over the 2 ranks, by the simulator; then refined by measurement:
//                that cut and its neighbours on 2 ranks, the one whose ranks wait least (the
//                largest wait share smallest) is kept.
//   4. 1 rank    each method in one process on its split (LocalLearner.step), in a child process of
//                one thread started as the ranks are.
//   5. 2 ranks   each schedule with StageParallelWorker on 2 child processes: images/s (the
//                slower rank's), each rank's wait share and busy time (late messages, message
//                set-up, update), its CPU per thread group (thread-cpu.ts); the link between the
//                ranks, timed before the first.
//   6. simulate  stage-sim.ts per case on 2 ranks (measured link and contention, the profile scaled
//                to the measured one-process step) against the measured figures; K ranks of one
//                stage each for K = 2..16 (measured link, no contention).
//
// Options: --json, --depth 18|34 (34), --width N (8), --size N (32), --images N (32), --warmup N (2),
// --steps N (timed steps per run, 16), --repeats N (profile rounds, 3), --search N (cuts on each side
// of the profile's tried on 2 ranks, 1; 0: the profile's cut), --ranks-timeout-ms N.
import { spawn } from "node:child_process";
import * as net from "node:net";
import * as path from "node:path";
import { setNumThreads } from "../src/torch";
import {
  LOOPBACK_LINK,
  type Link,
  type MethodName,
  type StageCosts,
  type StageRankStats,
  profileStageCosts,
} from "../src/learning";
import { CASES, type Case, type Prediction, Predictor } from "./parallel-predict";
import { type BenchModel, benchOptimizer, benchViews, buildLearner } from "./parallel-model";
import type { RankRun } from "./parallel-rank";
import { type CpuPerStep, cpuSummary } from "./thread-cpu";
import { printTables } from "./parallel-tables";

interface Options {
  json: boolean;
  model: BenchModel;
  warmup: number;
  steps: number;
  repeats: number;
  /** Cuts on each side of the profile's that the split search measures (0: none). */
  search: number;
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

function parseArgs(argv: string[]): Options {
  const o: Options = {
    json: false,
    model: { depth: 34, width: 8, size: 32, images: 32 },
    warmup: 2,
    steps: 16,
    repeats: 3,
    search: 1,
    timeoutMs: 120000,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) throw new Error(`${flag}: expected a non-negative integer, got '${argv[i]}'`);
      return v;
    };
    if (flag === "--json") o.json = true;
    else if (flag === "--depth") {
      const d = value();
      if (d !== 18 && d !== 34) throw new Error(`--depth: expected 18 or 34, got ${d}`);
      o.model.depth = d;
    } else if (flag === "--width") o.model.width = value();
    else if (flag === "--size") o.model.size = value();
    else if (flag === "--images") o.model.images = value();
    else if (flag === "--warmup") o.warmup = value();
    else if (flag === "--steps") o.steps = value();
    else if (flag === "--repeats") o.repeats = value();
    else if (flag === "--search") o.search = value();
    else if (flag === "--ranks-timeout-ms") o.timeoutMs = value();
    else throw new Error(`unknown option ${flag}`);
  }
  return o;
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

/** Per-block costs of the model with the method's decoder kind (conv for LoCo, MLP otherwise). */
function profileBlocks(model: BenchModel, method: MethodName, repeats: number): StageCosts[] {
  const blockSplit = Array.from({ length: model.depth === 18 ? 8 : 16 }, (_, i) => i + 1);
  const { learner, dispose } = buildLearner(model, method === "loco" ? "loco" : "gim", blockSplit);
  const [views] = benchViews(model);
  try {
    return profileStageCosts(learner, views, benchOptimizer, repeats);
  } finally {
    views.dispose();
    dispose();
  }
}

interface RankStats {
  stats: StageRankStats;
  /** The timed steps' wall time, optimizer steps included. */
  elapsedMs: number;
  updateMs: number;
  peakBytes: number;
  link: { tinyMs: number; bigMs: number; bytes: number } | null;
  cpu: CpuPerStep;
}

/** A one-process run (bench/parallel-rank.ts with `solo`). */
interface Solo {
  imagesPerSecond: number;
  cpu: CpuPerStep;
}

/** Runs bench/parallel-rank.js as `ranks` processes (a group unless `run.solo`); their RESULT lines. */
function startRanks<T>(run: RankRun, ranks: number, timeoutMs: number): Promise<T[]> {
  const script = path.join(__dirname, "parallel-rank.js");
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
              stdio: ["ignore", "pipe", "pipe"],
            });
            let stdout = "";
            let stderr = "";
            child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
            child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
            child.on("close", (code) => {
              const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
              if (code !== 0 || line === undefined) reject(new Error(`rank ${rank} failed (${code}):\n${stderr}`));
              else resolve(JSON.parse(line.slice(7)) as T);
            });
          }),
      ),
    ),
  );
}

const fixed = (x: number, digits = 2): number => Number(x.toFixed(digits));

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/**
 * The machine's ceiling for 2 ranks: LoCo in one process alone, then in two independent processes
 * at once (no messages). `contention` is how much slower a process computes beside a second busy
 * one; `ceilingSpeedup` the 2 processes' images/s together over one alone: the most 2 ranks of
 * one thread can reach on this machine.
 */
export async function measureCeiling(o: Options, split: number[]) {
  // The timed steps start at the same moment in both processes (after start-up and the warmup).
  const run = (): RankRun => ({
    ...{ model: o.model, method: "loco", schedule: "sync", split, warmup: o.warmup, steps: o.steps },
    solo: true,
    startAt: Date.now() + 3000,
  });
  const [alone] = await startRanks<Solo>(run(), 1, o.timeoutMs);
  const both = await startRanks<Solo>(run(), 2, o.timeoutMs);
  const concurrent = both.map((b) => b.imagesPerSecond);
  return {
    method: "loco",
    split,
    aloneImagesPerSecond: fixed(alone.imagesPerSecond),
    concurrentImagesPerSecond: concurrent.map((x) => fixed(x)),
    ceilingSpeedup: fixed(concurrent.reduce((a, b) => a + b, 0) / alone.imagesPerSecond),
    contention: fixed(alone.imagesPerSecond / mean(concurrent), 3),
    /** CPU milliseconds per step (see thread-cpu.ts) of the process alone and of each of the two. */
    aloneCpuMs: cpuSummary(alone.cpu),
    concurrentCpuMs: both.map((b) => cpuSummary(b.cpu)),
    /** CPU per step of a process beside a second busy one over alone: contention in CPU time. */
    cpuContention: fixed(mean(both.map((b) => b.cpu.totalMs)) / alone.cpu.totalMs, 3),
  };
}

/**
 * Images/s of the method in one process of one thread on the split, in a child process started as
 * the ranks are (not in this one: after the profile, the same run here was 20% slower than the
 * ceiling's fresh process, which made the 2-rank speedups look larger than the ceiling allows).
 */
async function oneRankInChild(o: Options, method: MethodName, split: number[]): Promise<Solo> {
  const run: RankRun = {
    model: o.model,
    method,
    schedule: "sync",
    split,
    warmup: o.warmup,
    steps: o.steps,
    solo: true,
  };
  const [alone] = await startRanks<Solo>(run, 1, o.timeoutMs);
  return alone;
}

export interface Measured {
  name: string;
  method: MethodName;
  schedule: string;
  split: number[];
  imagesPerSecond: number;
  oneRankImagesPerSecond: number;
  speedup: number;
  waitShare: number[];
  peakMiB: number[];
  /** Per rank, milliseconds per step: busy (wall − wait, the update included) and parts of it. */
  busyMs: number[];
  lateMs: number[];
  messageMs: number[];
  forwardMs: number[];
  updateMs: number[];
  /** Busy time over half the one-process step: 1 when the 2 ranks split the work perfectly. */
  busyOverHalf: number[];
  /**
   * CPU milliseconds per step of each rank (the compute thread, the other threads: Gloo's, the
   * promise waiters', V8's; the kernel's share), and of the one-process run: unlike busy time,
   * these do not count time spent off the CPU, so a loaded machine changes them far less.
   */
  cpuMs: ReturnType<typeof cpuSummary>[];
  oneRankCpuMs: ReturnType<typeof cpuSummary>;
  /** Both ranks' CPU per step over the one-process run's (1: the 2 ranks add no work). */
  cpuOverOneRank: number;
}

/** The case on 2 ranks (its warmup lengthened by LEAD_STEPS); with `pingBytes`, the link timed first. */
const runRanks = (o: Options, c: Case, split: number[], pingBytes?: number): Promise<RankStats[]> =>
  startRanks<RankStats>(
    {
      ...{ model: o.model, method: c.method, schedule: c.schedule, split },
      ...{ warmup: o.warmup + LEAD_STEPS, steps: o.steps, pingBytes },
    },
    2,
    o.timeoutMs,
  );

export interface Candidate {
  split: number[];
  imagesPerSecond: number;
  waitShare: number[];
  busyMs: number[];
}

/**
 * The split chosen by measurement: the profile's cut and up to `o.search` cuts on each side, each
 * on 2 ranks (one run each); the one whose largest wait share is smallest (its ranks' measured
 * busy times the most even; ties: the faster). The profile's block times miss what a whole step
 * costs per rank (small blocks timed alone are dearer, kept graphs and shared passes differ), so
 * its balanced cut can leave one rank waiting; the chosen split is then measured again afresh.
 */
export async function searchSplit(o: Options, c: Case, profiled: number[], blockCount: number) {
  const candidates: Candidate[] = [];
  for (let cut = profiled[0] - o.search; cut <= profiled[0] + o.search; cut++) {
    if (cut < 1 || cut >= blockCount) continue;
    const ranks = await runRanks(o, c, [cut]);
    candidates.push({
      split: [cut],
      imagesPerSecond: fixed(Math.min(...ranks.map((r) => (r.stats.images * 1000) / r.elapsedMs))),
      waitShare: ranks.map((r) => fixed(r.stats.waitMs / r.elapsedMs, 3)),
      busyMs: ranks.map((r) => fixed((r.elapsedMs - r.stats.waitMs) / r.stats.steps)),
    });
  }
  const worst = (x: Candidate): number => Math.max(...x.waitShare);
  const chosen = candidates.reduce((best, x) =>
    worst(x) < worst(best) || (worst(x) === worst(best) && x.imagesPerSecond > best.imagesPerSecond) ? x : best,
  );
  return { name: c.name, profiledSplit: profiled, candidates, split: chosen.split };
}

/** The case on 2 ranks; with `pingBytes`, the link measured between them before training. */
async function measureCase(
  o: Options,
  c: Case,
  split: number[],
  oneRank: Solo,
  pingBytes?: number,
): Promise<{ measured: Measured; link: Link | null }> {
  const oneRankIps = oneRank.imagesPerSecond;
  const ranks = await runRanks(o, c, split, pingBytes);
  const perStep = (f: (r: RankStats) => number): number[] => ranks.map((r) => fixed(f(r) / r.stats.steps, 2));
  const halfStepMs = (500 * o.model.images) / oneRankIps;
  const busy = (r: RankStats): number => r.elapsedMs - r.stats.waitMs;
  const imagesPerSecond = Math.min(...ranks.map((r) => (r.stats.images * 1000) / r.elapsedMs));
  const ping = ranks[0].link;
  return {
    measured: {
      name: c.name,
      method: c.method,
      schedule: c.schedule,
      split,
      imagesPerSecond: fixed(imagesPerSecond),
      oneRankImagesPerSecond: fixed(oneRankIps),
      speedup: fixed(imagesPerSecond / oneRankIps),
      waitShare: ranks.map((r) => fixed(r.stats.waitMs / r.elapsedMs, 3)),
      peakMiB: ranks.map((r) => fixed(r.peakBytes / 2 ** 20, 1)),
      busyMs: perStep(busy),
      lateMs: perStep((r) => r.stats.lateMs),
      messageMs: perStep((r) => r.stats.messageMs),
      forwardMs: perStep((r) => r.stats.forwardMs),
      updateMs: perStep((r) => r.updateMs),
      busyOverHalf: ranks.map((r) => fixed(busy(r) / r.stats.steps / halfStepMs, 3)),
      cpuMs: ranks.map((r) => cpuSummary(r.cpu)),
      oneRankCpuMs: cpuSummary(oneRank.cpu),
      cpuOverOneRank: fixed((ranks[0].cpu.totalMs + ranks[1].cpu.totalMs) / oneRank.cpu.totalMs, 3),
    },
    link:
      ping === null
        ? null
        : {
            latencyMs: fixed(ping.tinyMs, 4),
            bytesPerMs: Math.round(ping.bytes / Math.max(1e-3, ping.bigMs - ping.tinyMs)),
          },
  };
}

/** The simulator's 2-rank figures for a measured case, with and without the run's corrections. */
export function checkCase(m: Measured, raw: Predictor, tuned: Predictor, contention: number) {
  const c = CASES.find((x) => x.name === m.name)!;
  // The profile's block times, scaled so that the simulated one-process step of this learner
  // matches the measured one (the blocks timed alone miss what a whole step costs or saves).
  const oneRank = tuned.simulate(c, m.split, 1);
  const scale = oneRank.imagesPerSecond / m.oneRankImagesPerSecond;
  const predicted = tuned.simulate(c, m.split, 2, { scale, contention });
  const uncorrected = raw.simulate(c, m.split, 2);
  return {
    name: m.name,
    split: m.split,
    measuredImagesPerSecond: m.imagesPerSecond,
    predictedImagesPerSecond: fixed(predicted.imagesPerSecond),
    error: fixed(predicted.imagesPerSecond / m.imagesPerSecond - 1, 3),
    /** The simulator without the corrections (assumed link, no contention, raw block times). */
    uncorrectedImagesPerSecond: fixed(uncorrected.imagesPerSecond),
    uncorrectedError: fixed(uncorrected.imagesPerSecond / m.imagesPerSecond - 1, 3),
    scale: fixed(scale, 3),
    slowdown: predicted.slowdown.map((x) => fixed(x, 3)),
    measuredOneRankImagesPerSecond: m.oneRankImagesPerSecond,
    predictedOneRankImagesPerSecond: fixed(oneRank.imagesPerSecond),
    measuredSpeedup: m.speedup,
    predictedSpeedup: fixed(predicted.imagesPerSecond / m.oneRankImagesPerSecond),
    measuredWaitShare: m.waitShare,
    predictedWaitShare: predicted.waitShare.map((w) => fixed(w, 3)),
    measuredBusyMs: m.busyMs,
    predictedBusyMs: predicted.busyMs.map((x) => fixed(x)),
    measuredForwardMs: m.forwardMs,
    /** The profile's forward of each rank's stages, scaled (contention left out). */
    profiledForwardMs: [m.split[0], tuned.costsOf(m.method).length].map((end, r) =>
      fixed(
        tuned
          .costsOf(m.method)
          .slice(r === 0 ? 0 : m.split[0], end)
          .reduce((a, b) => a + b.forwardMs * scale, 0),
      ),
    ),
  };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  setNumThreads(1);
  const started = performance.now();
  const log = (text: string): void => void (o.json || process.stderr.write(`${text}\n`));

  log("profiling the blocks (conv decoders, MLP decoders) ...");
  const blocks = {
    conv: profileBlocks(o.model, "loco", o.repeats),
    mlp: profileBlocks(o.model, "gim", o.repeats),
  };
  const raw = new Predictor(blocks, o.model.images);
  log("ceiling: LoCo in one process alone, then in two at once ...");
  const ceiling = await measureCeiling(o, raw.balancedSplit(CASES[3]));
  // Each case's split: the one that balances its work (its decoders, messages and late passes
  // included) over the 2 ranks by the profile, then refined by measurement on 2 ranks.
  const profiled = CASES.map((c) => raw.balancedSplit(c));
  const search: Awaited<ReturnType<typeof searchSplit>>[] = [];
  for (const [i, c] of CASES.entries()) {
    if (o.search === 0) break;
    log(`split search: ${c.name}, cuts around block ${profiled[i][0]} on 2 ranks ...`);
    search.push(await searchSplit(o, c, profiled[i], raw.costsOf(c.method).length));
  }
  const splits = o.search === 0 ? profiled : search.map((x) => x.split);

  const single = new Map<string, Solo>();
  for (const [i, c] of CASES.entries()) {
    const key = `${c.method} ${splits[i].join(",")}`;
    if (single.has(key)) continue;
    log(`1 rank: ${c.method}, split at block ${splits[i].join(",")} ...`);
    single.set(key, await oneRankInChild(o, c.method, splits[i]));
  }

  const measured: Measured[] = [];
  let link: Link = { ...LOOPBACK_LINK };
  for (const [i, c] of CASES.entries()) {
    log(`2 ranks: ${c.name}, split at block ${splits[i].join(",")} ...`);
    const cut = blocks.conv[splits[i][0] - 1].outputBytes;
    const oneRank = single.get(`${c.method} ${splits[i].join(",")}`)!;
    const result = await measureCase(o, c, splits[i], oneRank, i === 0 ? cut : undefined);
    measured.push(result.measured);
    if (result.link !== null) link = result.link;
  }

  const tuned = new Predictor(blocks, o.model.images, link);
  const check = measured.map((m) => checkCase(m, raw, tuned, ceiling.contention));
  const simulated: Prediction[] = [];
  for (const c of CASES) {
    for (const k of [2, 4, 8, 16]) if (k <= tuned.costsOf(c.method).length) simulated.push(tuned.predict(c, k));
  }
  const result = {
    model: o.model,
    warmup: o.warmup,
    steps: o.steps,
    seconds: fixed((performance.now() - started) / 1000, 1),
    ceiling,
    link,
    search,
    measured,
    check,
    simulated,
    blocks,
  };
  if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else printTables(result);
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(1);
});
