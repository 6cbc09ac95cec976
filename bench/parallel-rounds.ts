// The measurement rounds of `npm run bench:parallel` (bench/parallel.ts), once each case's split is
// chosen. On a shared or throttled machine the same run moves by 10-30% from minute to minute, so a
// ratio of two runs measured minutes apart mostly measures the machine. Each round therefore runs,
// back to back, the ceiling's pair (LoCo alone, two independent processes at once) and then per case
// its pair (the method in one process, the method on 2 ranks), the order within every pair flipped
// from one round to the next; a round's ratio compares runs a few seconds apart, and the headline
// figures are the medians of the rounds' (the rounds beside them).
import { LOOPBACK_LINK, type Link } from "../src/learning";
import type { Case } from "./parallel-predict";
import { type RankStats, type RunOptions, type Solo, fixed, mean, median, runAlone, runRanks } from "./parallel-runs";
import { cpuSummary } from "./thread-cpu";

/** Field by field (element by element for arrays) median of records of one shape; non-numbers: the first's. */
export function medianOf<T>(records: T[]): T {
  const first: unknown = records[0];
  if (typeof first === "number") return fixed(median(records as number[]), 4) as T;
  if (Array.isArray(first)) return first.map((_, i) => medianOf(records.map((r) => (r as unknown[])[i]))) as T;
  if (first !== null && typeof first === "object") {
    const at = (k: string): unknown[] => records.map((r) => (r as Record<string, unknown>)[k]);
    return Object.fromEntries(Object.keys(first).map((k) => [k, medianOf(at(k))])) as T;
  }
  return first as T;
}

const range = (xs: number[]): [number, number] => [Math.min(...xs), Math.max(...xs)];

/** Runs `a` then `b`, or `b` then `a`; the results in the order [a, b]. */
async function inOrder<A, B>(aFirst: boolean, a: () => Promise<A>, b: () => Promise<B>): Promise<[A, B]> {
  if (aFirst) {
    const x = await a();
    return [x, await b()];
  }
  const y = await b();
  return [await a(), y];
}

/**
 * One round of the machine's ceiling for 2 ranks: LoCo in one process alone and in two independent
 * processes at once (no messages). `contention` is how much slower a process computes beside a second
 * busy one; `ceilingSpeedup` the 2 processes' images/s together over one alone: the most 2 ranks of
 * one thread can reach on this machine.
 */
async function ceilingRound(o: RunOptions, split: number[], aloneFirst: boolean) {
  // Two at once: their timed steps start together, once both have warmed up (runAlone).
  const run = (processes: number): Promise<Solo[]> => runAlone(o, { method: "loco" }, split, processes);
  const [[alone], both] = await inOrder(
    aloneFirst,
    () => run(1),
    () => run(2),
  );
  const concurrent = both.map((b) => b.imagesPerSecond);
  return {
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

type CeilingRound = Awaited<ReturnType<typeof ceilingRound>>;

/** The ceiling's medians over the rounds, and each round's pair (`aloneFirst`: the order it ran in). */
function ceilingOf(rounds: { aloneFirst: boolean; figures: CeilingRound }[], split: number[]) {
  const speedups = rounds.map((r) => r.figures.ceilingSpeedup);
  return {
    method: "loco",
    split,
    ...medianOf(rounds.map((r) => r.figures)),
    ceilingSpeedupRange: range(speedups),
    rounds: rounds.map(({ aloneFirst, figures: f }) => ({
      aloneFirst,
      ...{ aloneImagesPerSecond: f.aloneImagesPerSecond, concurrentImagesPerSecond: f.concurrentImagesPerSecond },
      ...{ ceilingSpeedup: f.ceilingSpeedup, contention: f.contention },
    })),
  };
}

export type Ceiling = ReturnType<typeof ceilingOf>;

/** One round of a case on 2 ranks beside the same learner in one process (see Measured). */
function caseFigures(o: RunOptions, c: Case, split: number[], oneRank: Solo, ranks: RankStats[]) {
  const oneRankIps = oneRank.imagesPerSecond;
  const perStep = (f: (r: RankStats) => number): number[] => ranks.map((r) => fixed(f(r) / r.stats.steps, 2));
  const halfStepMs = (500 * o.model.images) / oneRankIps;
  const busy = (r: RankStats): number => r.elapsedMs - r.stats.waitMs;
  const imagesPerSecond = Math.min(...ranks.map((r) => (r.stats.images * 1000) / r.elapsedMs));
  return {
    ...{ name: c.name, method: c.method, schedule: c.schedule, split },
    imagesPerSecond: fixed(imagesPerSecond),
    oneRankImagesPerSecond: fixed(oneRankIps),
    speedup: fixed(imagesPerSecond / oneRankIps),
    waitShare: ranks.map((r) => fixed(r.stats.waitMs / r.elapsedMs, 3)),
    peakMiB: ranks.map((r) => fixed(r.peakBytes / 2 ** 20, 1)),
    /** Per rank, milliseconds per step: busy (wall − wait, the update included) and parts of it. */
    busyMs: perStep(busy),
    lateMs: perStep((r) => r.stats.lateMs),
    messageMs: perStep((r) => r.stats.messageMs),
    forwardMs: perStep((r) => r.stats.forwardMs),
    updateMs: perStep((r) => r.updateMs),
    /** Busy time over half the one-process step: 1 when the 2 ranks split the work perfectly. */
    busyOverHalf: ranks.map((r) => fixed(busy(r) / r.stats.steps / halfStepMs, 3)),
    /**
     * CPU milliseconds per step of each rank (the compute thread, the other threads: Gloo's, the
     * promise waiters', V8's; the kernel's share), and of the one-process run: unlike busy time,
     * these do not count time spent off the CPU, so a loaded machine changes them far less.
     */
    cpuMs: ranks.map((r) => cpuSummary(r.cpu)),
    oneRankCpuMs: cpuSummary(oneRank.cpu),
    /** Both ranks' CPU per step over the one-process run's (1: the 2 ranks add no work). */
    cpuOverOneRank: fixed((ranks[0].cpu.totalMs + ranks[1].cpu.totalMs) / oneRank.cpu.totalMs, 3),
  };
}

type CaseRound = ReturnType<typeof caseFigures>;

/** A round's headline figures (`oneRankFirst`: the one-process run ran before the 2-rank run). */
export interface RoundFigures {
  oneRankFirst: boolean;
  imagesPerSecond: number;
  oneRankImagesPerSecond: number;
  /** The 2-rank images/s over the same round's one-process images/s. */
  speedup: number;
  waitShare: number[];
}

/**
 * A case measured over the rounds: every figure the median of the rounds' (per rank for per-rank
 * figures), `speedup` the median of the rounds' speedups (not the ratio of the medians), with the
 * rounds' smallest and largest speedup and each round's headline figures.
 */
export type Measured = CaseRound & { speedupRange: [number, number]; rounds: RoundFigures[] };

function measuredOf(rounds: { oneRankFirst: boolean; figures: CaseRound }[]): Measured {
  return {
    ...medianOf(rounds.map((r) => r.figures)),
    speedupRange: range(rounds.map((r) => r.figures.speedup)),
    rounds: rounds.map(({ oneRankFirst, figures: f }) => ({
      oneRankFirst,
      ...{ imagesPerSecond: f.imagesPerSecond, oneRankImagesPerSecond: f.oneRankImagesPerSecond },
      ...{ speedup: f.speedup, waitShare: f.waitShare },
    })),
  };
}

/** The link a 2-rank run timed before training (ping-pong of 16 bytes, then of `bytes`). */
const linkOf = (ping: NonNullable<RankStats["link"]>): Link => ({
  latencyMs: fixed(ping.tinyMs, 4),
  bytesPerMs: Math.round(ping.bytes / Math.max(1e-3, ping.bigMs - ping.tinyMs)),
});

/**
 * `rounds` rounds of the ceiling (LoCo at `ceilingSplit`) and of every case on its split, the
 * order within each pair flipped every round (the first round: one process first); the link timed
 * before the first case's 2-rank run of every round (`pingBytes`: the activation at its cut).
 */
export async function measureRounds(
  o: RunOptions & { rounds: number },
  cases: { c: Case; split: number[] }[],
  ceilingSplit: number[],
  pingBytes: number,
  log: (text: string) => void,
): Promise<{ ceiling: Ceiling; measured: Measured[]; link: Link }> {
  const ceilingRounds: { aloneFirst: boolean; figures: CeilingRound }[] = [];
  const caseRounds: { oneRankFirst: boolean; figures: CaseRound }[][] = cases.map(() => []);
  const links: Link[] = [];
  for (let r = 0; r < o.rounds; r++) {
    const first = r % 2 === 0;
    const round = `round ${r + 1}/${o.rounds}`;
    log(`${round}: ceiling, LoCo ${first ? "alone, then two at once" : "two at once, then alone"} ...`);
    ceilingRounds.push({ aloneFirst: first, figures: await ceilingRound(o, ceilingSplit, first) });
    for (const [i, { c, split }] of cases.entries()) {
      log(
        `${round}: ${c.name}, split at block ${split.join(",")}, ${first ? "1 rank, then 2" : "2 ranks, then 1"} ...`,
      );
      const [[oneRank], ranks] = await inOrder(
        first,
        () => runAlone(o, c, split),
        () => runRanks(o, c, split, i === 0 ? pingBytes : undefined),
      );
      caseRounds[i].push({ oneRankFirst: first, figures: caseFigures(o, c, split, oneRank, ranks) });
      if (ranks[0].link !== null) links.push(linkOf(ranks[0].link));
    }
  }
  return {
    ceiling: ceilingOf(ceilingRounds, ceilingSplit),
    measured: caseRounds.map(measuredOf),
    link: links.length > 0 ? medianOf(links) : { ...LOOPBACK_LINK },
  };
}
