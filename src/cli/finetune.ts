// `loco finetune`: a run's encoder fine-tuned on 1%, 10% or 100% of the labels (or from random init).
import { finetune } from "../learning/finetune";
import { type OptionSpec, UsageError } from "./options";

export const finetuneSpecs: OptionSpec[] = [
  {
    flag: "fraction",
    type: "number-list",
    min: 0,
    default: [0.01, 0.1],
    description: "fractions of the labelled train images (class-balanced, seeded), one run each",
  },
  {
    flag: "from-random-init",
    type: "boolean",
    default: false,
    description: "start from a randomly initialised encoder (the random-init baseline)",
  },
  { flag: "epochs", type: "int", min: 1, description: "epochs", defaultText: "60 at <= 1% of the labels, else 30" },
  { flag: "batch-size", type: "int", min: 1, description: "images per step", defaultText: "the run's" },
  {
    flag: "lr",
    type: "number",
    min: 0,
    description: "peak learning rate (cosine decay)",
    defaultText: "0.05 x batch/256",
  },
  { flag: "momentum", type: "number", min: 0, max: 1, default: 0.9, description: "SGD momentum" },
  { flag: "nesterov", type: "boolean", default: true, description: "Nesterov momentum" },
  { flag: "weight-decay", type: "number", min: 0, default: 0, description: "weight decay" },
  { flag: "warmup-epochs", type: "int", min: 0, default: 0, description: "linear warmup epochs" },
  {
    flag: "crop-scale",
    type: "number-list",
    min: 0,
    default: [0.08, 1],
    description: "random resized crop area range",
  },
  { flag: "subset-seed", type: "int", min: 0, default: 0, description: "seed of the labelled subset" },
  { flag: "seed", type: "int", min: 0, description: "seed of order, augmentations and head", defaultText: "the run's" },
  { flag: "workers", type: "int", min: 0, default: 1, description: "data worker threads" },
];

export async function runFinetune(values: Record<string, unknown>, positionals: string[]): Promise<void> {
  if (positionals.length !== 1)
    throw new UsageError(`loco finetune: expected one run directory or checkpoint file, got ${positionals.length}`);
  const fractions = values.fraction as number[];
  for (const f of fractions)
    if (!(f > 0 && f <= 1)) throw new UsageError(`--fraction: each must be in (0, 1], got ${f}`);
  const crop = values.cropScale as number[];
  if (crop.length !== 2 || !(crop[0] > 0 && crop[0] <= crop[1] && crop[1] <= 1))
    throw new UsageError(`--crop-scale: expected two numbers 0 < low <= high <= 1, got ${crop.join(",")}`);
  for (const fraction of fractions) {
    let result: Awaited<ReturnType<typeof finetune>>;
    try {
      result = await finetune(positionals[0], {
        fraction,
        fromRandomInit: values.fromRandomInit as boolean,
        epochs: values.epochs as number | undefined,
        batchSize: values.batchSize as number | undefined,
        lr: values.lr as number | undefined,
        momentum: values.momentum as number,
        nesterov: values.nesterov as boolean,
        weightDecay: values.weightDecay as number,
        warmupEpochs: values.warmupEpochs as number,
        cropScale: [crop[0], crop[1]],
        subsetSeed: values.subsetSeed as number,
        seed: values.seed as number | undefined,
        workers: values.workers as number,
        log: (m) => void process.stderr.write(`${m}\n`),
      });
    } catch (error) {
      if (error instanceof RangeError || /no such run|not a loco run|no checkpoint/.test((error as Error).message))
        throw new UsageError((error as Error).message);
      throw error;
    }
    console.log(
      `${result.method} ${result.init === "random" ? "(random init)" : `(step ${result.step})`}, ` +
        `${(fraction * 100).toPrecision(3)}% of the labels (${result.labelledImages} images), ${result.settings.epochs} epochs: ` +
        `top-1 ${(result.top1 * 100).toFixed(2)}% on ${result.testImages} test images`,
    );
  }
}
