// `loco experiment <preset | grid file>`: flags, validation of every run's flags, progress.
import * as fs from "node:fs";
import * as path from "node:path";
import {
  PRESET_NAMES,
  type PresetName,
  type ExperimentSpec,
  flagArgs,
  presetSpec,
  readGridFile,
} from "../experiments/grid";
import { runExperiment } from "../experiments/runner";
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

export async function runExperimentCommand(values: Record<string, unknown>, positionals: string[]): Promise<void> {
  if (positionals.length !== 1) {
    throw new UsageError(
      `loco experiment: expected one preset (${PRESET_NAMES.join(", ")}) or grid file, got ${positionals.length}`,
    );
  }
  const spec = loadSpec(positionals[0]);
  const extra: Record<string, string> = values.dataDir !== undefined ? { "data-dir": values.dataDir as string } : {};
  checkRuns(spec, extra);
  const dir = (values.dir as string | undefined) ?? path.join("experiments", spec.name);
  const outcome = await runExperiment(spec, {
    dir,
    jobs: values.jobs as number,
    cores: values.cores as number | undefined,
    extraFlags: extra,
  });
  if (outcome.interrupted) {
    process.stderr.write(`interrupted; continue with the same command (finished runs are kept)\n`);
    process.exitCode = 130;
    return;
  }
  console.log(fs.readFileSync(path.join(dir, "results.md"), "utf8"));
  if (outcome.failed.length > 0) {
    process.stderr.write(
      `${outcome.failed.length} runs failed (see their train.log); rerun the command to retry them\n`,
    );
    process.exitCode = 1;
  }
}
