// `loco eval`: the readout report of a run's checkpoint; `loco embed`: its features of a dataset
// split, written as safetensors for downstream use.
import * as path from "node:path";
import { saveSafetensors } from "../torch";
import { type DatasetSpec, openDataset } from "../data/datasets";
import { evalBatches, readoutReport } from "../learning/readout";
import { buildRunEncoder, openRun, readRunConfig, runDirOf } from "../learning/runs";
import type { TrainOptions } from "../learning/trainer";
import { writeJsonAtomic } from "../learning/trainer";
import { extractFeatures, extractStageFeatures } from "../eval/features";
import { type OptionSpec, UsageError } from "./options";
import { formatReport, parseBaselines } from "./report";

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
  const warn = (m: string): void => void process.stderr.write(`${m}\n`);
  const where = target(positionals, "eval");
  const config = readRunConfig(runDirOf(where));
  const train = await openSplit(config, "train");
  const test = await openSplit(config, "test");
  const run = openRun(where, train.channels, warn);
  const o = run.options;
  process.stderr.write(`evaluating ${run.checkpoint} (step ${run.step}) …\n`);
  const report = (await readoutReport(run.encoder, train, test, {
    normalize: o.normalize,
    readoutEpochs: (values.readoutEpochs as number | undefined) ?? o.readoutEpochs,
    readoutTrainSize: (values.readoutTrainSize as number | undefined) ?? o.readoutTrainSize,
    baselines: parseBaselines(values.baselines as string | undefined),
    perStage: values.perStage as boolean,
    supervisedEpochs: values.supervisedEpochs as number,
    batchSize: o.batchSize,
    seed: o.seed,
    freshEncoder: () => buildRunEncoder(o, train.channels),
  }))!;
  const out = (values.out as string | undefined) ?? path.join(run.runDir, `eval-step-${run.step}.json`);
  const result = { method: o.method, dataset: o.trainData.name, checkpoint: run.checkpoint, step: run.step, ...report };
  writeJsonAtomic(out, result);
  console.log(formatReport(`${o.method} (step ${run.step})`, o.trainData.name, report));
  console.log(`report in ${out}`);
  run.encoder.dispose();
}

export async function runEmbed(values: Record<string, unknown>, positionals: string[]): Promise<void> {
  const warn = (m: string): void => void process.stderr.write(`${m}\n`);
  const where = target(positionals, "embed");
  const split = values.split as "train" | "test";
  const dataset = await openSplit(readRunConfig(runDirOf(where)), split);
  const run = openRun(where, dataset.channels, warn);
  const stage = (values.stage as number | undefined) ?? 4;
  const batches = (): ReturnType<typeof evalBatches> => evalBatches(dataset, 256, run.options.normalize);
  const set =
    stage === 4
      ? await extractFeatures((x) => run.encoder.forwardFeatures(x), batches(), { module: run.encoder })
      : (await extractStageFeatures(run.encoder.stages(), batches(), [stage - 1], { module: run.encoder }))[0];
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
