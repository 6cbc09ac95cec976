// The child processes of `loco experiment`: a pool that runs at most `jobs` `loco` commands at once
// (each with its share of the cores), stops them all on SIGINT/SIGTERM (each checkpoints and
// exits) and makes them stop when the experiment itself dies, even by SIGKILL (the child watches
// its parent: src/torch/signals.ts); and the fine-tuning cells of a grid (`loco finetune` on every
// finished run, and from random init beside the first row's runs, one set per seed).
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { finetuneResultFile } from "../learning/finetune";
import { STOP_WITH_PARENT_ENV } from "../torch/signals";
import { type ExperimentSpec, flagArgs, percentLabel } from "./grid";

export interface JobExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  seconds: number;
}

export class JobPool {
  stopping = false;
  private readonly running = new Set<ChildProcess>();
  private readonly onSignal = (): void => {
    if (this.stopping) return;
    this.stopping = true;
    this.log("stopping: each running job checkpoints and exits; rerun the same command to continue");
    for (const child of this.running) child.kill("SIGTERM");
  };

  constructor(
    readonly jobs: number,
    readonly threads: number,
    /** Path of the `loco` CLI entry point. */
    private readonly main: string,
    private readonly log: (message: string) => void,
  ) {
    process.on("SIGINT", this.onSignal);
    process.on("SIGTERM", this.onSignal);
  }

  /** Runs `loco ARGS` with its output appended to logFile; resolves when it exits. */
  spawn(args: string[], logFile: string): Promise<JobExit> {
    return new Promise((resolve) => {
      const fd = fs.openSync(logFile, "a");
      const started = Date.now();
      const child = spawn(process.execPath, [this.main, ...args], {
        stdio: ["ignore", fd, fd],
        env: {
          ...process.env,
          OMP_NUM_THREADS: String(this.threads),
          LOCO_NUM_THREADS: String(this.threads),
          // The child stops (a training run checkpoints first) when this process dies, even by SIGKILL.
          [STOP_WITH_PARENT_ENV]: String(process.pid),
        },
      });
      this.running.add(child);
      child.on("exit", (code, signal) => {
        this.running.delete(child);
        fs.closeSync(fd);
        resolve({ code, signal, seconds: (Date.now() - started) / 1000 });
      });
    });
  }

  /** Runs work(item) for each item, at most `jobs` at once; starts no more once stopping. */
  async run<T>(items: T[], work: (item: T) => Promise<void>): Promise<void> {
    const active = new Set<Promise<void>>();
    for (const item of items) {
      while (active.size >= this.jobs) await Promise.race(active);
      if (this.stopping) break;
      const p = work(item).then(() => {
        active.delete(p);
      });
      active.add(p);
    }
    await Promise.all(active);
  }

  /** Removes the signal listeners. */
  close(): void {
    process.off("SIGINT", this.onSignal);
    process.off("SIGTERM", this.onSignal);
  }
}

/** One `loco finetune` invocation: a run's encoder (or random init) on the label fractions of the grid. */
export interface FinetuneCell {
  row: string;
  seed: number;
  /** The run directory, relative to the experiment directory (random init: the first row's run). */
  dir: string;
  init: "pretrained" | "random";
  wallSeconds?: number;
  status?: "finished" | "failed" | "interrupted" | "pending";
}

/**
 * The fine-tuning cells: every finished run, and random init beside each seed's first-row run.
 * Wall seconds of earlier invocations are kept.
 */
export function planFinetune(
  spec: ExperimentSpec,
  dir: string,
  cells: { row: string; seed: number; dir: string; status?: string }[],
  previous: FinetuneCell[] | undefined,
): FinetuneCell[] {
  const out: FinetuneCell[] = [];
  const firstRow = spec.rows[0].name;
  for (const cell of cells) {
    if (!fs.existsSync(path.join(dir, cell.dir, "results.json"))) continue;
    const inits: FinetuneCell["init"][] = cell.row === firstRow ? ["pretrained", "random"] : ["pretrained"];
    for (const init of inits) {
      const before = previous?.find((c) => c.dir === cell.dir && c.init === init);
      out.push({
        row: init === "random" ? "random init" : cell.row,
        seed: cell.seed,
        dir: cell.dir,
        init,
        wallSeconds: before?.wallSeconds,
        status: before?.status,
      });
    }
  }
  return out;
}

/**
 * Runs the fine-tuning cells whose result files are missing (only the missing fractions); a cell
 * starts only if hooks.admit (given what it is and how many fractions it fine-tunes) allows it.
 */
export async function runFinetuneCells(
  spec: ExperimentSpec,
  dir: string,
  cells: FinetuneCell[],
  jobs: JobPool,
  hooks: {
    failed: Omit<FinetuneCell, "init">[];
    save: () => void;
    log: (m: string) => void;
    admit?: (what: string, fractions: number) => boolean;
  },
): Promise<void> {
  const finetune = spec.finetune!;
  const missingOf = (c: FinetuneCell): number[] =>
    finetune.fractions.filter((f) => !fs.existsSync(finetuneResultFile(path.join(dir, c.dir), f, c.init === "random")));
  const todo = cells.filter((c) => missingOf(c).length > 0);
  for (const c of cells) if (!todo.includes(c)) c.status = "finished";
  const labels = finetune.fractions.map(percentLabel).join(", ");
  if (todo.length < cells.length) hooks.log(`${cells.length - todo.length} fine-tunings already finished: skipped`);
  if (todo.length === 0) return;
  hooks.log(`fine-tuning: ${todo.length} encoders on ${labels} of the labels`);
  let done = 0;
  await jobs.run(todo, async (cell) => {
    const runDir = path.join(dir, cell.dir);
    const missing = missingOf(cell);
    const what = `${cell.row} (seed ${cell.seed}), fine-tuning on ${missing.map(percentLabel).join(", ")} of the labels`;
    if (hooks.admit !== undefined && !hooks.admit(what, missing.length)) return;
    hooks.log(`${what}: started`);
    const exit = await jobs.spawn(
      [
        "finetune",
        runDir,
        "--fraction",
        missing.join(","),
        ...(cell.init === "random" ? ["--from-random-init"] : []),
        ...flagArgs(finetune.flags),
      ],
      path.join(runDir, "finetune.log"),
    );
    cell.wallSeconds = (cell.wallSeconds ?? 0) + exit.seconds;
    if (exit.code === 0) {
      cell.status = "finished";
      done++;
      hooks.log(`[${done}/${todo.length}] ${what}: finished in ${exit.seconds.toFixed(0)} s`);
    } else if (jobs.stopping) {
      cell.status = "interrupted";
    } else {
      cell.status = "failed";
      hooks.failed.push(cell);
      hooks.log(`${what}: failed (exit ${exit.code ?? exit.signal}); see ${path.join(runDir, "finetune.log")}`);
    }
    hooks.save();
  });
}
