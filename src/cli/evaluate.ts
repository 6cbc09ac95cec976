// `loco eval`: the readout report of a run's checkpoint; `loco embed`: its features of a dataset
// split, written as safetensors for downstream use.
import * as path from "node:path";
import { noGrad, saveSafetensors } from "../torch";
import { type DatasetSpec, openDataset } from "../data/datasets";
import { evalBatches } from "../learning/readout";
import { openRun, readRunConfig, runDirOf } from "../learning/runs";
import { encoderFeatures } from "../learning/encoders";
import { evaluateRun } from "../learning/evaluate";
import { type TrainOptions, parseBaselines } from "../learning/options";
import { extractFeatures, extractStageFeatures } from "../eval/features";
import { type OptionSpec, UsageError, withFlagNames } from "./options";
import { formatReport } from "./report";

export const evalSpecs: OptionSpec[] = [
  {
    flag: "readout-epochs",
    type: "int",
    min: 1,
    description: "linear readout: epochs over the cached features",
    defaultText: "the run's",
  },
  {
    flag: "readout-train-size",
    type: "int",
    min: 0,
    description: "linear readout: train images (0: all)",
    defaultText: "the run's",
  },
  {
    flag: "readout-test-size",
    type: "int",
    min: 0,
    description: "linear readout: test images (0: all)",
    defaultText: "the run's",
  },
  {
    flag: "baselines",
    type: "string",
    description: "comma-separated: random-init, supervised, raw-pixels (or none)",
    defaultText: "none",
  },
  { flag: "supervised-epochs", type: "int", min: 1, default: 10, description: "epochs of the supervised baseline" },
  { flag: "per-stage", type: "boolean", default: false, description: "also read out every stage's features" },
  { flag: "out", type: "string", description: "write the report here", defaultText: "RUN/eval-step-N.json" },
];

export const embedSpecs: OptionSpec[] = [
  { flag: "split", type: "enum", choices: ["train", "test"], default: "test", description: "dataset split to embed" },
  {
    flag: "stage",
    type: "int",
    min: 1,
    max: 4,
    description: "pooled features of this stage (1-4)",
    defaultText: "4, the encoder's output",
  },
  {
    flag: "out",
    type: "string",
    description: "safetensors file to write",
    defaultText: "RUN/embeddings-<split>.safetensors",
  },
];

function target(positionals: string[], command: string): string {
  if (positionals.length !== 1)
    throw new UsageError(`loco ${command}: expected one run directory or checkpoint file, got ${positionals.length}`);
  return positionals[0];
}

async function openSplit(options: TrainOptions, split: "train" | "test"): Promise<ReturnType<typeof openDataset>> {
  const spec: DatasetSpec = split === "train" ? options.trainData : options.testData;
  return openDataset(spec);
}

export async function runEval(values: Record<string, unknown>, positionals: string[]): Promise<void> {
  const where = target(positionals, "eval");
  const { evaluation, file } = await evaluateRun(where, {
    readoutEpochs: values.readoutEpochs as number | undefined,
    readoutTrainSize: values.readoutTrainSize as number | undefined,
    readoutTestSize: values.readoutTestSize as number | undefined,
    baselines: withFlagNames(() => parseBaselines(values.baselines as string | undefined)),
    perStage: values.perStage as boolean,
    supervisedEpochs: values.supervisedEpochs as number,
    out: values.out as string | undefined,
    log: (m) => void process.stderr.write(`${m}\n`),
  });
  console.log(formatReport(`${evaluation.methodSettings}, step ${evaluation.step}`, evaluation.dataset, evaluation));
  console.log(`report in ${file}`);
}

export async function runEmbed(values: Record<string, unknown>, positionals: string[]): Promise<void> {
  const warn = (m: string): void => void process.stderr.write(`${m}\n`);
  const where = target(positionals, "embed");
  const split = values.split as "train" | "test";
  const dataset = await openSplit(readRunConfig(runDirOf(where)), split);
  const run = openRun(where, dataset.channels, warn);
  const stage = (values.stage as number | undefined) ?? 4;
  const batches = (): ReturnType<typeof evalBatches> => evalBatches(dataset, 256, run.options.normalize);
  const set = noGrad(() => {
    run.encoder.eval();
    return stage === 4
      ? extractFeatures(encoderFeatures(run.encoder), batches(), {})
      : extractStageFeatures(run.encoder.stages(), batches(), [stage - 1])[0];
  });
  const out =
    (values.out as string | undefined) ??
    path.join(run.runDir, `embeddings-${split}${stage === 4 ? "" : `-stage${stage}`}.safetensors`);
  saveSafetensors(
    out,
    { features: set.features, labels: set.labels },
    {
      checkpoint: run.checkpoint,
      step: String(run.step),
      dataset: dataset.name,
      stage: String(stage),
      features: "global average pool of the stage output, frozen encoder in eval mode, no augmentation",
    },
  );
  console.log(
    `${set.features.shape[0]} x ${set.features.shape[1]} features of ${dataset.name} (stage ${stage}) written to ${out}`,
  );
  set.features.dispose();
  set.labels.dispose();
  run.encoder.dispose();
}
