// `npm run bench:engine -- --paired N` (bench/engine.ts): loco and PyTorch take turns step by step.
//
// Rounds of whole runs cannot resolve a 5% difference on a machine whose speed drifts by a third
// within minutes. Here one persistent, warmed-up worker per side (loco in this process; PyTorch in
// `engine_pytorch.py --serve`, one process per variant) runs one step when asked; the others block
// on a pipe read meanwhile, so only one computes at a time. A turn is one step of every side; the
// side that goes first rotates from turn to turn (with loco and one PyTorch: it alternates). Steps
// of one turn are seconds apart, so the drift hardly differs between them, and the per-turn ratio
// loco / PyTorch cancels most of it; the median over N turns, with its 25–75% range and a
// distribution-free (sign-test) 95% interval, says how far apart the two are.
import { spawn, type ChildProcessByStdio } from "node:child_process";
import * as readline from "node:readline";
import type { Readable, Writable } from "node:stream";
import { locoStepper, median, type OneStep } from "./engine_loco";
import { pythonEnv, pythonScript, type Format, type ModelName, type Options, type PyVariant } from "./engine_options";

export type Side = "loco" | PyVariant;

/** One side's step in a turn, with the process that ran it (for checking that turns interleave). */
export type TurnStep = OneStep & { pid: number };

export interface Turn {
  /** The sides in the order they stepped. */
  order: Side[];
  steps: Partial<Record<Side, TurnStep>>;
}

/** The per-turn ratios loco / one PyTorch variant. */
export interface RatioStats {
  pairs: number;
  median: number;
  q25: number;
  q75: number;
  /** A distribution-free interval for the median (order statistics, sign test); null below 6 pairs. */
  ci95: [number, number] | null;
  /** The interval's exact coverage (≥ 0.95). */
  ciCoverage: number | null;
  /** Pairs in which loco's step was the faster. */
  locoFasterPairs: number;
}

export type Phase = "forward" | "backward" | "optimizer";
export const PHASES: readonly Phase[] = ["forward", "backward", "optimizer"];

/** Per phase, the medians of each side's time and of the per-turn ratios loco / PyTorch. */
export type PhaseStats = Record<Phase, { locoMs: number; pytorchMs: number; ratio: RatioStats }>;

export interface PairedRun {
  turns: Turn[];
  ratios: Partial<Record<PyVariant, RatioStats>>;
  /** The same per phase (forward with encoder, head and loss; backward; optimizer step). */
  phases: Partial<Record<PyVariant, PhaseStats>>;
  pids: Partial<Record<Side, number>>;
  locoPeakMB: number;
}

/** The q-quantile of `xs` (linear interpolation between order statistics, as numpy's default). */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const at = (s.length - 1) * q;
  const lo = Math.floor(at);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (at - lo);
}

/** [x_(k), x_(n+1-k)] with the largest k whose coverage 1 − 2·P(Binomial(n, ½) < k) is ≥ 0.95. */
function medianInterval(xs: number[]): { ci: [number, number]; coverage: number } | null {
  const n = xs.length;
  const s = [...xs].sort((a, b) => a - b);
  let below = 0; // P(B <= k-1)
  let pmf = 0.5 ** n; // P(B = 0)
  let best: { ci: [number, number]; coverage: number } | null = null;
  for (let k = 1; 2 * k <= n; k++) {
    below += pmf; // now P(B <= k-1)
    pmf = (pmf * (n - (k - 1))) / k; // P(B = k)
    const coverage = 1 - 2 * below;
    if (coverage < 0.95) break;
    best = { ci: [s[k - 1], s[n - k]], coverage };
  }
  return best;
}

export function ratioStats(ratios: number[]): RatioStats {
  const interval = medianInterval(ratios);
  return {
    pairs: ratios.length,
    median: median(ratios),
    q25: quantile(ratios, 0.25),
    q75: quantile(ratios, 0.75),
    ci95: interval?.ci ?? null,
    ciCoverage: interval?.coverage ?? null,
    locoFasterPairs: ratios.filter((r) => r < 1).length,
  };
}

/** A persistent `engine_pytorch.py --serve` process: one step per request, JSON lines back. */
class PyTorchWorker {
  private constructor(
    private readonly child: ChildProcessByStdio<Writable, Readable, null>,
    private readonly lines: AsyncIterator<string>,
    readonly pid: number,
  ) {}

  static async start(o: Options, variant: PyVariant, model: ModelName, format: Format, batch: number) {
    const args = [
      pythonScript(),
      "--serve",
      ...["--model", model, "--batch-size", String(batch), "--formats", format],
      ...["--threads", String(o.threads), "--warmup", String(o.warmup), "--clock", o.clock],
    ];
    const child = spawn(o.python, args, { env: pythonEnv(o, variant), stdio: ["pipe", "pipe", "inherit"] });
    const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const worker = new PyTorchWorker(child, lines, child.pid ?? -1);
    const ready = (await worker.read(`${variant} worker start`)) as { allocator: string; ready: boolean };
    const expected = variant === "pytorchTuned" ? "jemalloc" : "glibc";
    if (ready.allocator !== expected)
      throw new Error(`bench: PyTorch (${variant}) ran with allocator ${ready.allocator}, expected ${expected}`);
    return worker;
  }

  private async read(what: string): Promise<unknown> {
    const next = await this.lines.next();
    if (next.done)
      throw new Error(`bench: the PyTorch worker ended during ${what} (exit status ${this.child.exitCode})`);
    return JSON.parse(next.value);
  }

  async step(): Promise<TurnStep> {
    this.child.stdin.write("step\n");
    return (await this.read("a step")) as TurnStep;
  }

  async close(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    this.child.stdin.end();
    if (this.child.exitCode === null) await exited;
  }
}

/**
 * `turns` turns of one step per side, after each side's warm-up (`o.warmup` steps, one side at a
 * time), at one model, format and batch size.
 */
export async function measurePaired(
  o: Options,
  model: ModelName,
  format: Format,
  batch: number,
  clock: () => number,
  log: (s: string) => void,
): Promise<PairedRun> {
  const workers: Partial<Record<PyVariant, PyTorchWorker>> = {};
  const loco = locoStepper(model, format, batch, clock);
  try {
    for (const v of o.variants) workers[v] = await PyTorchWorker.start(o, v, model, format, batch);
    for (let i = 0; i < o.warmup; i++) await loco.step();
    const sides: Side[] = ["loco", ...o.variants];
    const turns: Turn[] = [];
    for (let t = 0; t < (o.paired ?? 0); t++) {
      const order = sides.map((_, i) => sides[(i + t) % sides.length]);
      const steps: Turn["steps"] = {};
      for (const side of order) {
        steps[side] = side === "loco" ? { ...(await loco.step()), pid: process.pid } : await workers[side]!.step();
      }
      turns.push({ order, steps });
      const ms = order.map((s) => `${s} ${steps[s]!.ms.toFixed(0)}`).join(", ");
      log(`bench: ${model} ${format} turn ${t + 1}/${o.paired}: ${ms} ms`);
    }
    const ratios: PairedRun["ratios"] = {};
    const phases: PairedRun["phases"] = {};
    for (const v of o.variants) {
      ratios[v] = ratioStats(turns.map((t) => t.steps.loco!.ms / t.steps[v]!.ms));
      phases[v] = phaseStats(turns, v);
    }
    const pids: PairedRun["pids"] = { loco: process.pid };
    for (const v of o.variants) pids[v] = workers[v]!.pid;
    return { turns, ratios, phases, pids, locoPeakMB: loco.peakMB() };
  } finally {
    loco.dispose();
    for (const w of Object.values(workers)) await w.close();
  }
}

function phaseStats(turns: Turn[], v: PyVariant): PhaseStats {
  const one = (phase: Phase) => ({
    locoMs: median(turns.map((t) => t.steps.loco!.phasesMs[phase])),
    pytorchMs: median(turns.map((t) => t.steps[v]!.phasesMs[phase])),
    ratio: ratioStats(turns.map((t) => t.steps.loco!.phasesMs[phase] / t.steps[v]!.phasesMs[phase])),
  });
  return { forward: one("forward"), backward: one("backward"), optimizer: one("optimizer") };
}

export type PairedRuns = Partial<Record<ModelName, PairedRun>>;

/**
 * Paired mode's headline: `pairedRatio.<model>Step.<variant>` (median, 25–75%, 95% interval of the
 * per-turn ratios loco / PyTorch) and `ratio.<model>StepPaired` (the median against the faster).
 */
export function addPaired(
  o: Options,
  result: Record<string, unknown>,
  runs: PairedRuns,
  fasterPyTorch: Record<string, PyVariant>,
): void {
  const ratio = result.ratio as Record<string, number>;
  const pairedRatio: Record<string, PairedRun["ratios"]> = {};
  const pairedPhases: Record<string, PairedRun["phases"]> = {};
  for (const model of o.models) {
    pairedRatio[`${model}Step`] = runs[model]!.ratios;
    pairedPhases[`${model}Step`] = runs[model]!.phases;
    ratio[`${model}StepPaired`] = runs[model]!.ratios[fasterPyTorch[model]]!.median;
  }
  result.pairedRatio = pairedRatio;
  result.pairedPhases = pairedPhases;
}

/** How the turns went: each turn's order and each side's step (time, monotonic start/end, pid). */
export function pairedSettings(o: Options, runs: PairedRuns): Record<string, unknown> {
  return {
    turns: o.paired,
    warmupStepsPerSide: o.warmup,
    format: o.formats[0],
    workerPids: Object.fromEntries(o.models.map((m) => [m, runs[m]!.pids])),
    turnsByModel: Object.fromEntries(
      o.models.map((m) => [
        m,
        runs[m]!.turns.map((t) => ({
          order: t.order,
          steps: Object.fromEntries(
            t.order.map((side) => {
              const s = t.steps[side]!;
              return [side, { ms: s.ms, phasesMs: s.phasesMs, startS: s.startS, endS: s.endS, pid: s.pid }];
            }),
          ),
        })),
      ]),
    ),
  };
}

/** Paired mode: each model's per-turn ratios against each PyTorch, with their intervals. */
export function printPaired(o: Options, result: Record<string, unknown>): void {
  const paired = result.pairedRatio as Record<string, PairedRun["ratios"]> | undefined;
  if (!paired) return;
  const name = { pytorch: "PyTorch", pytorchTuned: "PyTorch + jemalloc" } as const;
  for (const model of o.models) {
    for (const v of o.variants) {
      const q = paired[`${model}Step`][v]!;
      const ci = q.ci95
        ? `95% interval of the median ${q.ci95[0].toFixed(3)}–${q.ci95[1].toFixed(3)} (coverage ${(100 * q.ciCoverage!).toFixed(1)}%)`
        : "too few turns for a 95% interval";
      console.log(
        `paired ${model}: loco / ${name[v]} per turn: median ${q.median.toFixed(3)}, 25–75% ` +
          `${q.q25.toFixed(3)}–${q.q75.toFixed(3)}, ${ci}; loco faster in ${q.locoFasterPairs} of ${q.pairs} turns`,
      );
      const phases = (result.pairedPhases as Record<string, PairedRun["phases"]>)[`${model}Step`][v]!;
      for (const phase of PHASES) {
        const p = phases[phase];
        console.log(
          `  ${phase}: loco ${p.locoMs.toFixed(1)} ms, ${name[v]} ${p.pytorchMs.toFixed(1)} ms (medians); ` +
            `per turn median ${p.ratio.median.toFixed(3)}, 25–75% ${p.ratio.q25.toFixed(3)}–${p.ratio.q75.toFixed(3)}`,
        );
      }
    }
  }
}
