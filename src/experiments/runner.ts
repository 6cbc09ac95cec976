// `loco experiment`: a grid of runs (rows × seeds) under one protocol, each a normal run directory
// (EXP/runs/<row>/seed-<s>) trained by `loco train` in a child process. Resumable: a run with
// results.json is skipped, a run with a config.json is continued with --resume, the others start.
// --jobs runs several at once and gives each cores / jobs libtorch threads (never more in all).
// Then, if the grid asks for it, `loco finetune` on every finished run and from random init
// (src/experiments/jobs.ts). Afterwards: peak step memory per row, results.{json,md,csv}, and
// report.html.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { measureMethodMemory } from "../learning/memory";
import { readRun } from "../report/rundata";
import { writeReport } from "../report/report";
import { type ExperimentSpec, GridError, REFERENCE_TITLE, BASELINE_REFERENCES, flagArgs, slug } from "./grid";
import { writeResultTables } from "./tables";
import { type FinetuneCell, JobPool, planFinetune, runFinetuneCells } from "./jobs";

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
}

export interface ExperimentCell {
  row: string;
  seed: number;
  /** Relative to the experiment directory. */
  dir: string;
  wallSeconds?: number;
  status?: "finished" | "failed" | "interrupted" | "pending";
}

export interface ExperimentOutcome {
  finished: number;
  failed: ExperimentCell[];
  interrupted: boolean;
  skipped: number;
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  fs.renameSync(tmp, file);
}

/** The part of a spec that defines the experiment: a directory holds one. */
const identity = (spec: ExperimentSpec): string =>
  JSON.stringify({
    p: spec.protocolFlags,
    r: spec.rows.map((r) => [r.name, r.flags]),
    s: spec.seeds,
    b: spec.baselines,
  });

/** Threads per job so that jobs × threads ≤ cores. */
export function threadsPerJob(jobs: number, cores: number): number {
  if (!Number.isInteger(jobs) || jobs < 1) throw new GridError(`--jobs: expected a positive integer, got ${jobs}`);
  if (jobs > cores) throw new GridError(`--jobs ${jobs} exceeds the ${cores} cores (each job needs at least one)`);
  return Math.floor(cores / jobs);
}

export async function runExperiment(spec: ExperimentSpec, options: ExperimentOptions): Promise<ExperimentOutcome> {
  const log = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const cores = options.cores ?? os.availableParallelism();
  const threads = threadsPerJob(options.jobs, cores);
  const dir = options.dir;
  fs.mkdirSync(path.join(dir, "runs"), { recursive: true });
  const infoFile = path.join(dir, "experiment.json");
  const previous = fs.existsSync(infoFile)
    ? (JSON.parse(fs.readFileSync(infoFile, "utf8")) as {
        identity?: string;
        runs?: ExperimentCell[];
        finetune?: FinetuneCell[];
      })
    : null;
  if (previous !== null && previous.identity !== identity(spec)) {
    throw new GridError(
      `${dir} holds another experiment (its grid or protocol differ): use another --dir, or remove ${infoFile} to start over`,
    );
  }
  const cells: ExperimentCell[] = spec.seeds.flatMap((seed) =>
    spec.rows.map((row) => {
      const rel = path.join("runs", slug(row.name), `seed-${seed}`);
      const before = previous?.runs?.find((c) => c.dir === rel);
      return { row: row.name, seed, dir: rel, wallSeconds: before?.wallSeconds, status: before?.status };
    }),
  );
  const reference = {
    title: REFERENCE_TITLE,
    values: { ...Object.fromEntries(spec.rows.map((r) => [r.name, r.reference ?? "-"])), ...BASELINE_REFERENCES },
  };
  let finetuneSaved: FinetuneCell[] = previous?.finetune ?? [];
  const save = (): void =>
    writeJsonAtomic(infoFile, {
      name: spec.name,
      protocol: spec.protocol,
      identity: identity(spec),
      threadsPerJob: threads,
      jobs: options.jobs,
      reference,
      note: "The reference column is the paper's ImageNet linear top-1 (ResNet-50, 100 epochs) from the authors' response: a different scale, for orientation only.",
      runs: cells,
      finetune: finetuneSaved,
    });
  save();

  const main = options.trainCommand ?? path.join(__dirname, "..", "cli", "main.js");
  const flagsOf = (cell: ExperimentCell): string[] => {
    const row = spec.rows.find((r) => r.name === cell.row)!;
    const firstRow = spec.rows[0].name === cell.row;
    return flagArgs({
      ...spec.protocolFlags,
      ...options.extraFlags,
      ...row.flags,
      seed: cell.seed,
      baselines: firstRow && spec.baselines.length > 0 ? spec.baselines.join(",") : "none",
      threads,
      "run-dir": path.join(dir, cell.dir),
    });
  };

  let skipped = 0;
  const queue: ExperimentCell[] = [];
  for (const cell of cells) {
    if (fs.existsSync(path.join(dir, cell.dir, "results.json"))) {
      cell.status = "finished";
      skipped++;
    } else {
      queue.push(cell);
    }
  }
  if (skipped > 0) log(`${skipped} of ${cells.length} runs already finished: skipped`);
  log(
    `loco experiment ${spec.name}: ${queue.length} runs to do, ${options.jobs} at a time with ${threads} thread${threads > 1 ? "s" : ""} each, in ${dir}`,
  );

  const jobs = new JobPool(options.jobs, threads, main, log);
  const failed: ExperimentCell[] = [];
  let done = 0;
  const total = queue.length;
  const runCell = async (cell: ExperimentCell): Promise<void> => {
    const runDir = path.join(dir, cell.dir);
    fs.mkdirSync(runDir, { recursive: true });
    const resume = fs.existsSync(path.join(runDir, "config.json"));
    log(`${cell.row} (seed ${cell.seed}): ${resume ? "resumed" : "started"} in ${runDir}`);
    const exit = await jobs.spawn(
      resume ? ["train", "--resume", runDir, "--threads", String(threads)] : ["train", ...flagsOf(cell)],
      path.join(runDir, "train.log"),
    );
    cell.wallSeconds = (cell.wallSeconds ?? 0) + exit.seconds;
    if (exit.code === 0) {
      cell.status = "finished";
      done++;
      const results = readRun(runDir).results;
      log(
        `[${done}/${total}] ${cell.row} (seed ${cell.seed}): finished in ${cell.wallSeconds.toFixed(0)} s` +
          (results?.linear && results.knn
            ? `, linear ${results.linear.top1 === null ? "diverged" : `${(results.linear.top1 * 100).toFixed(2)}%`}, kNN ${(results.knn.top1 * 100).toFixed(2)}%`
            : ""),
      );
    } else if (jobs.stopping || exit.code === 130) {
      cell.status = "interrupted";
    } else {
      cell.status = "failed";
      failed.push(cell);
      log(
        `${cell.row} (seed ${cell.seed}): failed (exit ${exit.code ?? exit.signal}); see ${path.join(runDir, "train.log")}`,
      );
    }
    save();
  };
  await jobs.run(queue, runCell);
  if (!jobs.stopping && spec.finetune !== undefined) {
    const finetuneCells = planFinetune(spec, dir, cells, previous?.finetune);
    finetuneSaved = finetuneCells;
    save();
    await runFinetuneCells(spec, dir, finetuneCells, jobs, { failed, save, log });
  }
  jobs.close();
  if (jobs.stopping) {
    save();
    return { finished: done, failed, interrupted: true, skipped };
  }

  measureRowMemory(spec, dir, cells, log);
  const rows = writeResultTables(dir, spec, cells, reference);
  const report = await writeReport(dir);
  log(`results: ${path.join(dir, "results.md")} (${rows} rows), report: ${report.html}`);
  return { finished: done, failed, interrupted: false, skipped };
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
