// `loco experiment`: a grid of runs (rows × seeds) under one protocol, each a normal run directory
// (EXP/runs/<row>/seed-<s>) trained by `loco train` in a child process. Resumable: a run with
// results.json is skipped, a run with a config.json is continued with --resume, the others start.
// --jobs runs several at once and gives each cores / jobs libtorch threads (never more in all).
// Then, if the grid asks for it, `loco finetune` on every finished run and from random init
// (src/experiments/jobs.ts). Afterwards: peak step memory per row, results.{json,md,csv}, and
// report.html, from every finished run of the directory.
// A long grid runs in pieces: an invocation may run a selection of rows and seeds and stop between
// runs at a limit (src/experiments/selection.ts, status.ts); the directory holds one grid (its
// identity in experiment.json; another protocol is refused) and one invocation at a time (.lock).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { measureMethodMemory } from "../learning/memory";
import { lockDirectory } from "../learning/rundir";
import { readRun } from "../report/rundata";
import { writeReport } from "../report/report";
import { type ExperimentSpec, GridError, REFERENCE_TITLE, BASELINE_REFERENCES, flagArgs } from "./grid";
import { gridProgress, writeResultTables } from "./tables";
import { type FinetuneCell, JobPool, planFinetune, runFinetuneCells } from "./jobs";
import { type Selection, checkSameGrid, gridIdentity, legacyIdentity } from "./selection";
import { Estimator, type SavedCell, type SliceLimits, Slice, cellDir, readExperimentInfo } from "./status";

export interface ExperimentOptions {
  dir: string;
  jobs: number;
  /** Cores to divide between jobs (default: the machine's). */
  cores?: number;
  /** Flags added to every run (e.g. data-dir), after the protocol's. */
  extraFlags?: Record<string, string | number | boolean>;
  log?: (message: string) => void;
  /** Path of the `loco` CLI entry point that trains each run. */
  trainCommand?: string;
  /** The rows and seeds this invocation runs (default: all); the tables cover every finished run. */
  selection?: Selection;
  /** Limits on the runs this invocation starts (--max-runs, --max-minutes). */
  limits?: SliceLimits;
}

export type ExperimentCell = SavedCell;

export interface ExperimentOutcome {
  finished: number;
  failed: ExperimentCell[];
  interrupted: boolean;
  skipped: number;
  /** Why this invocation stopped starting runs before its selection was done (a limit), or null. */
  stopReason: string | null;
  /** Runs of the whole grid without results yet, and fine-tunings without their result files. */
  pendingRuns: number;
  pendingFinetunes: number;
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  fs.renameSync(tmp, file);
}

/** Threads per job so that jobs × threads ≤ cores. */
export function threadsPerJob(jobs: number, cores: number): number {
  if (!Number.isInteger(jobs) || jobs < 1) throw new GridError(`--jobs: expected a positive integer, got ${jobs}`);
  if (jobs > cores) throw new GridError(`--jobs ${jobs} exceeds the ${cores} cores (each job needs at least one)`);
  return Math.floor(cores / jobs);
}

/**
 * Takes DIR/.lock for this process (lockDirectory): two invocations in one directory would run the
 * same cells and overwrite each other's experiment.json.
 */
export function lockExperiment(dir: string): () => void {
  return lockDirectory(dir, {
    inUse: (pid) =>
      new GridError(
        `${dir}: another loco experiment (pid ${pid}) is running in this directory; wait for it, or follow it with --list (remove ${path.join(dir, ".lock")} if that process is not loco)`,
      ),
    unusable: (cause) => new GridError(`${dir}: cannot take the lock ${path.join(dir, ".lock")} (${cause.message})`),
  });
}

/** What experiment.json holds: the grid, its cells with their wall times and states. */
class ExperimentRecord {
  readonly cells: ExperimentCell[];
  finetune: FinetuneCell[];
  readonly reference: { title: string; values: Record<string, string> };

  constructor(
    private readonly spec: ExperimentSpec,
    private readonly dir: string,
    previous: Record<string, unknown> | null,
    private readonly run: { threads: number; jobs: number },
  ) {
    const before = (previous?.runs as ExperimentCell[] | undefined) ?? [];
    this.cells = spec.seeds.flatMap((seed) =>
      spec.rows.map((row) => {
        const dir = cellDir(row.name, seed);
        const saved = before.find((c) => c.dir === dir);
        const finished = fs.existsSync(path.join(this.dir, dir, "results.json"));
        return {
          row: row.name,
          seed,
          dir,
          wallSeconds: saved?.wallSeconds,
          status: finished ? "finished" : saved?.status,
        };
      }),
    );
    this.finetune = (previous?.finetune as FinetuneCell[] | undefined) ?? [];
    this.reference = {
      title: REFERENCE_TITLE,
      values: { ...Object.fromEntries(spec.rows.map((r) => [r.name, r.reference ?? "-"])), ...BASELINE_REFERENCES },
    };
  }

  save(): void {
    writeJsonAtomic(path.join(this.dir, "experiment.json"), {
      name: this.spec.name,
      protocol: this.spec.protocol,
      grid: gridIdentity(this.spec),
      identity: legacyIdentity(this.spec),
      threadsPerJob: this.run.threads,
      jobs: this.run.jobs,
      reference: this.reference,
      note: "The reference column is the paper's ImageNet linear top-1 (ResNet-50, 100 epochs) from the authors' response: a different scale, for orientation only.",
      runs: this.cells,
      finetune: this.finetune,
    });
  }

  estimator(): Estimator {
    return new Estimator(this.cells, this.finetune, Math.max(1, this.spec.finetune?.fractions.length ?? 0));
  }
}

export async function runExperiment(spec: ExperimentSpec, options: ExperimentOptions): Promise<ExperimentOutcome> {
  const threads = threadsPerJob(options.jobs, options.cores ?? os.availableParallelism());
  const dir = options.dir;
  const previous = readExperimentInfo(dir);
  checkSameGrid(dir, previous, spec);
  fs.mkdirSync(path.join(dir, "runs"), { recursive: true });
  const unlock = lockExperiment(dir);
  try {
    const record = new ExperimentRecord(spec, dir, previous, { threads, jobs: options.jobs });
    record.save();
    return await runGrid(spec, options, record, threads);
  } finally {
    unlock();
  }
}

async function runGrid(
  spec: ExperimentSpec,
  options: ExperimentOptions,
  record: ExperimentRecord,
  threads: number,
): Promise<ExperimentOutcome> {
  const log = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const dir = options.dir;
  const selection = options.selection ?? { rows: spec.rows, seeds: spec.seeds };
  const selected = record.cells.filter(
    (c) => selection.rows.some((r) => r.name === c.row) && selection.seeds.includes(c.seed),
  );
  const queue = selected.filter((c) => c.status !== "finished");
  const skipped = selected.length - queue.length;
  if (skipped > 0) log(`${skipped} of ${selected.length} runs already finished: skipped`);
  const part =
    selected.length < record.cells.length ? ` (${selected.length} of the grid's ${record.cells.length})` : "";
  log(
    `loco experiment ${spec.name}: ${queue.length} runs to do${part}, ${options.jobs} at a time with ${threads} thread${threads > 1 ? "s" : ""} each, in ${dir}`,
  );

  const main = options.trainCommand ?? path.join(__dirname, "..", "cli", "main.js");
  const jobs = new JobPool(options.jobs, threads, main, log);
  const slice = new Slice(options.limits ?? {});
  const failed: ExperimentCell[] = [];
  const trained = { done: 0, total: queue.length };
  await jobs.run(queue, async (cell) => {
    if (!slice.admit(`${cell.row} (seed ${cell.seed})`, record.estimator().runSeconds(cell.row))) return;
    await trainCell(spec, options, cell, { jobs, threads, log, failed, trained, save: () => record.save() });
  });
  if (!jobs.stopping && spec.finetune !== undefined) {
    record.finetune = planFinetune(spec, dir, record.cells, record.finetune);
    record.save();
    const dirs = new Set(selected.map((c) => c.dir));
    await runFinetuneCells(
      spec,
      dir,
      record.finetune.filter((c) => dirs.has(c.dir)),
      jobs,
      {
        failed,
        save: () => record.save(),
        log,
        admit: (what, fractions) => slice.admit(what, record.estimator().finetuneSeconds(fractions)),
      },
    );
  }
  jobs.close();
  record.save();
  const outcome = { finished: trained.done, failed, skipped, stopReason: slice.stopReason };
  if (jobs.stopping) return { ...outcome, interrupted: true, ...pendingOf(spec, dir, record.cells) };
  if (slice.stopReason !== null) log(`stopped starting runs (${slice.stopReason})`);

  measureRowMemory(spec, dir, record.cells, log);
  const rows = writeResultTables(dir, spec, record.cells, record.reference);
  const report = await writeReport(dir);
  log(`results: ${path.join(dir, "results.md")} (${rows} rows), report: ${report.html}`);
  return { ...outcome, interrupted: false, ...pendingOf(spec, dir, record.cells) };
}

/** Runs of the grid without results, and fine-tunings without result files. */
function pendingOf(
  spec: ExperimentSpec,
  dir: string,
  cells: ExperimentCell[],
): { pendingRuns: number; pendingFinetunes: number } {
  const p = gridProgress(spec, dir, cells);
  return { pendingRuns: p.runs.total - p.runs.finished, pendingFinetunes: p.finetunes.total - p.finetunes.finished };
}

/** Trains (or resumes) one cell's run in a child `loco train`, and records how it ended. */
async function trainCell(
  spec: ExperimentSpec,
  options: ExperimentOptions,
  cell: ExperimentCell,
  ctx: {
    jobs: JobPool;
    threads: number;
    log: (m: string) => void;
    failed: ExperimentCell[];
    trained: { done: number; total: number };
    save: () => void;
  },
): Promise<void> {
  const runDir = path.join(options.dir, cell.dir);
  fs.mkdirSync(runDir, { recursive: true });
  const resume = fs.existsSync(path.join(runDir, "config.json"));
  ctx.log(`${cell.row} (seed ${cell.seed}): ${resume ? "resumed" : "started"} in ${runDir}`);
  const row = spec.rows.find((r) => r.name === cell.row)!;
  const firstRow = spec.rows[0].name === cell.row;
  const flags = flagArgs({
    ...spec.protocolFlags,
    ...options.extraFlags,
    ...row.flags,
    seed: cell.seed,
    baselines: firstRow && spec.baselines.length > 0 ? spec.baselines.join(",") : "none",
    threads: ctx.threads,
    "run-dir": runDir,
  });
  const exit = await ctx.jobs.spawn(
    resume ? ["train", "--resume", runDir, "--threads", String(ctx.threads)] : ["train", ...flags],
    path.join(runDir, "train.log"),
  );
  cell.wallSeconds = (cell.wallSeconds ?? 0) + exit.seconds;
  if (exit.code === 0) {
    cell.status = "finished";
    ctx.trained.done++;
    const results = readRun(runDir).results;
    ctx.log(
      `[${ctx.trained.done}/${ctx.trained.total}] ${cell.row} (seed ${cell.seed}): finished in ${cell.wallSeconds.toFixed(0)} s` +
        (results?.linear && results.knn
          ? `, linear ${results.linear.top1 === null ? "diverged" : `${(results.linear.top1 * 100).toFixed(2)}%`}, kNN ${(results.knn.top1 * 100).toFixed(2)}%`
          : ""),
    );
  } else if (ctx.jobs.stopping || exit.code === 130) {
    cell.status = "interrupted";
  } else {
    cell.status = "failed";
    ctx.failed.push(cell);
    ctx.log(
      `${cell.row} (seed ${cell.seed}): failed (exit ${exit.code ?? exit.signal}); see ${path.join(runDir, "train.log")}`,
    );
  }
  ctx.save();
}

/**
 * Peak training-step memory of each row's configuration (its first finished run's resolved
 * options), written as memory.json into every run of the row. Memory does not depend on the seed.
 */
function measureRowMemory(spec: ExperimentSpec, dir: string, cells: ExperimentCell[], log: (m: string) => void): void {
  for (const row of spec.rows) {
    const runs = cells.filter((c) => c.row === row.name && c.status === "finished").map((c) => path.join(dir, c.dir));
    const missing = runs.filter((r) => !fs.existsSync(path.join(r, "memory.json")));
    if (missing.length === 0) continue;
    const config = readRun(runs[0]).config;
    if (config === null) continue;
    const gray = config.trainData.name === "fashion-mnist" || config.trainData.name === "mnist";
    const size = config.augment.size;
    const m = measureMethodMemory(config.method, {
      depth: config.encoder.depth,
      stem: config.encoder.stem,
      width: config.encoder.width,
      inChannels: gray ? 1 : 3,
      imageSize: typeof size === "number" ? size : size[0],
      batchSize: config.batchSize,
      channelsLast: config.channelsLast,
      overrides: config.learning,
    });
    for (const r of missing) writeJsonAtomic(path.join(r, "memory.json"), m);
    log(`${row.name}: peak step memory ${(m.peakBytes / 2 ** 20).toFixed(1)} MiB`);
  }
}
