// `loco eval`: the readout report of a run's checkpoint; `loco embed`: its features of a dataset
// split, written as safetensors for downstream use.
import { embedRun, evaluateRun } from "../learning/evaluate";
import { parseBaselines } from "../learning/options";
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
    flag: "readout-weight-decays",
    type: "number-list",
    min: 0,
    description: "linear readout L2 weight decay: one value, or a grid to select from on held-out train features",
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

export async function runEval(values: Record<string, unknown>, positionals: string[]): Promise<void> {
  const where = target(positionals, "eval");
  const { evaluation, file } = await evaluateRun(where, {
    readoutEpochs: values.readoutEpochs as number | undefined,
    readoutWeightDecays: values.readoutWeightDecays as number[] | undefined,
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
  const done = await embedRun(target(positionals, "embed"), {
    split: values.split as "train" | "test",
    stage: values.stage as number | undefined,
    out: values.out as string | undefined,
    log: (m) => void process.stderr.write(`${m}\n`),
  });
  console.log(`${done.count} x ${done.dim} features of ${done.dataset} (stage ${done.stage}) written to ${done.file}`);
}
