// `loco experiment <preset | grid file>`: flags, validation of every run's flags, the part of the
// grid to run (--rows, --seeds, --max-runs, --max-minutes), and --list.
import * as fs from "node:fs";
import * as path from "node:path";
import {
  PRESET_NAMES,
  type PresetName,
  type ExperimentSpec,
  flagArgs,
  presetSpec,
  readGridFile,
  slug,
} from "../experiments/grid";
import { runExperiment } from "../experiments/runner";
import { type Selection, checkSameGrid, selectRows, selectSeeds } from "../experiments/selection";
import { type CellState, type GridStatus, formatDuration, gridStatus, readExperimentInfo } from "../experiments/status";
import { formatTable } from "./table";
import { type OptionSpec, UsageError, parseArgs } from "./options";
import { type TrainInput, resolveTrainOptions } from "../learning/options";
import { trainSpecs } from "./train";
import { finetuneSpecs } from "./finetune";

export const experimentSpecs: OptionSpec[] = [
  { flag: "dir", type: "string", description: "experiment directory", defaultText: "experiments/<name>" },
  {
    flag: "jobs",
    type: "int",
    min: 1,
    default: 1,
    description: "runs at once; each gets cores / jobs libtorch threads",
  },
  { flag: "cores", type: "int", min: 1, description: "cores to divide between jobs", defaultText: "the machine's" },
  {
    flag: "data-dir",
    type: "string",
    description: "dataset folder passed to every run",
    defaultText: "the protocol's",
  },
  {
    flag: "rows",
    type: "string",
    description:
      "run only these rows: comma-separated ids (1-12), ranges (2-4) or names as --list prints them (gim-2-layer-mlp); the tables cover every finished run",
    defaultText: "all",
  },
  { flag: "seeds", type: "int-list", min: 0, description: "run only these of the grid's seeds", defaultText: "all" },
  {
    flag: "max-runs",
    type: "int",
    min: 1,
    description: "start at most this many runs (a pretraining run or one encoder's fine-tuning each), then stop",
    defaultText: "no limit",
  },
  {
    flag: "max-minutes",
    type: "number",
    min: 0,
    description:
      "start no run that would end (by the finished runs' mean wall time) after this many minutes; running ones finish",
    defaultText: "no limit",
  },
  {
    flag: "list",
    type: "boolean",
    default: false,
    description: "print every row x seed as done, partial or pending and the time left, then exit (runs nothing)",
  },
];

function loadSpec(target: string): ExperimentSpec {
  if (PRESET_NAMES.includes(target as PresetName)) return presetSpec(target as PresetName);
  if (!fs.existsSync(target)) {
    throw new UsageError(
      `loco experiment: '${target}' is neither a preset (${PRESET_NAMES.join(", ")}) nor a grid file`,
    );
  }
  return readGridFile(target);
}

/** Every run's flags must be valid `loco train` flags: checked before anything starts. */
function checkRuns(spec: ExperimentSpec, extra: Record<string, string>): void {
  for (const row of spec.rows) {
    try {
      const parsed = parseArgs(flagArgs({ ...spec.protocolFlags, ...extra, ...row.flags }), trainSpecs, "train");
      resolveTrainOptions(parsed.values as TrainInput);
    } catch (error) {
      throw new UsageError(`row '${row.name}': ${(error as Error).message}`);
    }
  }
  if (spec.finetune !== undefined) {
    try {
      parseArgs(flagArgs(spec.finetune.flags), finetuneSpecs, "finetune");
    } catch (error) {
      throw new UsageError(`finetune flags: ${(error as Error).message}`);
    }
  }
}

/** A cell of the --list table. */
function cellText(c: CellState): string {
  if (c.status !== "partial") return c.status;
  if (c.runFinished) return `partial: fine-tune ${c.finetuneDone}/${c.finetuneTotal}`;
  return c.epochs === null ? "partial" : `partial: epoch ${c.epochsDone}/${c.epochs}`;
}

/** `--list`: the grid's rows × seeds with their state, and the time left for the selection. */
function printStatus(spec: ExperimentSpec, dir: string, selection: Selection, jobs: number | undefined): void {
  checkSameGrid(dir, readExperimentInfo(dir), spec);
  const status = gridStatus(spec, dir, selection);
  const cellOf = (rowId: number, seed: number): CellState =>
    status.cells.find((c) => c.rowId === rowId && c.seed === seed)!;
  console.log(`loco experiment ${spec.name} in ${dir}\nprotocol: ${spec.protocol}\n`);
  console.log(
    formatTable(
      ["id", "row", "--rows name", ...spec.seeds.map((s) => `seed ${s}`)],
      spec.rows.map((row, i) => [
        String(i + 1),
        row.name,
        slug(row.name),
        ...spec.seeds.map((seed) => cellText(cellOf(i + 1, seed))),
      ]),
    ),
  );
  const selected = status.cells.filter((c) => c.selected).length;
  const of = selected < status.cells.length ? `of the ${selected} selected` : `of ${selected}`;
  const n = status.counts;
  console.log(
    `\nruns ${of}: ${n.done} done, ${n.partial} partial, ${n.pending} pending${n.failed > 0 ? `, ${n.failed} failed` : ""}` +
      (status.finetune.total > 0 ? `; fine-tunings: ${status.finetune.done} of ${status.finetune.total} done` : ""),
  );
  console.log(timeLeftLine(status, jobs));
}

function timeLeftLine(status: GridStatus, jobs: number | undefined): string {
  const { runSecondsLeft: runs, finetuneSecondsLeft: finetunes, basis } = status;
  if (runs === null) return "time left: unknown until a run has finished in this directory";
  const perJob = runs + (finetunes ?? 0);
  if (perJob === 0) return "time left: none (the selection is done)";
  const j = jobs ?? status.measuredJobs ?? 1;
  const measured = status.measuredJobs === null ? "" : `, measured with --jobs ${status.measuredJobs}`;
  return (
    `time left: about ${formatDuration(perJob / j)} with --jobs ${j} (${formatDuration(runs)} of runs` +
    (finetunes === null
      ? ", fine-tuning not estimated: none finished yet"
      : ` and ${formatDuration(finetunes)} of fine-tuning`) +
    ` one after another; from the wall times of ${basis.runs} finished runs and ${basis.finetunes} fine-tunings${measured})`
  );
}

export async function runExperimentCommand(
  values: Record<string, unknown>,
  positionals: string[],
  given: ReadonlySet<string> = new Set(),
): Promise<void> {
  if (positionals.length !== 1) {
    throw new UsageError(
      `loco experiment: expected one preset (${PRESET_NAMES.join(", ")}) or grid file, got ${positionals.length}`,
    );
  }
  const spec = loadSpec(positionals[0]);
  const selection: Selection = {
    rows: selectRows(spec, values.rows as string | undefined),
    seeds: selectSeeds(spec, values.seeds as number[] | undefined),
  };
  const dir = (values.dir as string | undefined) ?? path.join("experiments", spec.name);
  if (values.list === true) {
    printStatus(spec, dir, selection, given.has("jobs") ? (values.jobs as number) : undefined);
    return;
  }
  const extra: Record<string, string> = values.dataDir !== undefined ? { "data-dir": values.dataDir as string } : {};
  checkRuns(spec, extra);
  const outcome = await runExperiment(spec, {
    dir,
    jobs: values.jobs as number,
    cores: values.cores as number | undefined,
    extraFlags: extra,
    selection,
    limits: { maxRuns: values.maxRuns as number | undefined, maxMinutes: values.maxMinutes as number | undefined },
  });
  if (outcome.interrupted) {
    process.stderr.write(`interrupted; continue with the same command (finished runs are kept)\n`);
    process.exitCode = 130;
    return;
  }
  console.log(fs.readFileSync(path.join(dir, "results.md"), "utf8"));
  const partial = selection.rows.length < spec.rows.length || selection.seeds.length < spec.seeds.length;
  if ((outcome.stopReason !== null || partial) && outcome.pendingRuns + outcome.pendingFinetunes > 0) {
    process.stderr.write(
      `${outcome.stopReason === null ? "" : `stopped (${outcome.stopReason}): `}` +
        `${outcome.pendingRuns} runs and ${outcome.pendingFinetunes} fine-tunings of the grid are left; ` +
        `${outcome.stopReason === null ? "run them with other --rows/--seeds, or without them" : "rerun the same command to continue"}` +
        ` (--list shows where the grid stands)\n`,
    );
  }
  if (outcome.failed.length > 0) {
    process.stderr.write(
      `${outcome.failed.length} runs failed (see their train.log); rerun the command to retry them\n`,
    );
    process.exitCode = 1;
  }
}
