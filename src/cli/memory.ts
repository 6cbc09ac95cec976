// `loco memory`: peak training-step memory of each method, measured with the engine's counting
// allocator, with ratios to end to end beside the paper's figure.
import { getNumThreads } from "../torch";
import { type MethodMemory, measureMethodMemory } from "../learning/memory";
import { METHOD_NAMES, type MethodName } from "../learning/methods";
import type { ResNetDepth } from "../models/resnet";
import { type OptionSpec, UsageError } from "./options";
import { formatTable } from "./table";

/** The paper's reported reduction of peak training memory for local learning. */
export const PAPER_MEMORY_RATIO = 2.76;

export const memorySpecs: OptionSpec[] = [
  {
    flag: "encoder",
    type: "enum",
    choices: ["resnet18", "resnet34", "resnet50"],
    default: "resnet18",
    description: "encoder",
  },
  { flag: "image-size", type: "int", min: 8, default: 32, description: "input height and width" },
  { flag: "batch-size", type: "int", min: 2, default: 256, description: "images per step (two views each)" },
  {
    flag: "stem",
    type: "enum",
    choices: ["cifar", "imagenet"],
    description: "ResNet stem",
    defaultText: "cifar below 96 px, else imagenet",
  },
  { flag: "width", type: "int", min: 1, default: 64, description: "ResNet base width" },
  { flag: "in-channels", type: "int", min: 1, default: 3, description: "input channels" },
  { flag: "methods", type: "string", default: "simclr,gim,loco", description: "comma-separated methods to measure" },
  { flag: "channels-last", type: "boolean", default: false, description: "run the encoder in channels-last layout" },
  { flag: "json", type: "boolean", default: false, description: "print a JSON array instead of the table" },
];

export function runMemory(values: Record<string, unknown>): void {
  const methods = String(values.methods)
    .split(",")
    .map((m) => m.trim());
  for (const m of methods) {
    if (!METHOD_NAMES.includes(m as MethodName))
      throw new UsageError(`--methods: unknown method '${m}' (expected ${METHOD_NAMES.join(", ")})`);
  }
  const imageSize = values.imageSize as number;
  const depth = Number(String(values.encoder).replace("resnet", "")) as ResNetDepth;
  const stem = (values.stem as "cifar" | "imagenet" | undefined) ?? (imageSize < 96 ? "cifar" : "imagenet");
  const batchSize = values.batchSize as number;
  const results: MethodMemory[] = [];
  for (const method of methods as MethodName[]) {
    if (!values.json) process.stderr.write(`measuring ${method} …\n`);
    results.push(
      measureMethodMemory(method, {
        depth,
        stem,
        imageSize,
        batchSize,
        width: values.width as number,
        inChannels: values.inChannels as number,
        channelsLast: values.channelsLast as boolean,
      }),
    );
  }
  if (values.json) {
    console.log(
      JSON.stringify(
        results.map((r) => ({ method: r.method, peakBytes: r.peakBytes, activationPeakBytes: r.activationPeakBytes })),
      ),
    );
    return;
  }
  const e2e = results.find((r) => r.method === "simclr");
  const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
  const ratio = (a: number | undefined, b: number): string => (a === undefined ? "-" : `${(a / b).toFixed(2)}x`);
  console.log(
    `${values.encoder} (${stem} stem), ${imageSize}x${imageSize}, batch ${batchSize} (${2 * batchSize} views), ${getNumThreads()} threads`,
  );
  console.log(
    formatTable(
      [
        "method",
        "peak MiB",
        "activation peak MiB",
        "end-to-end / method (peak)",
        "end-to-end / method (activations)",
        "step s",
      ],
      results.map((r) => [
        r.method,
        mib(r.peakBytes),
        mib(r.activationPeakBytes),
        ratio(e2e?.peakBytes, r.peakBytes),
        ratio(e2e?.activationPeakBytes, r.activationPeakBytes),
        r.stepSeconds.toFixed(1),
      ]),
    ),
  );
  console.log(`paper (ResNet-50, ImageNet): local learning's peak is ${PAPER_MEMORY_RATIO}x lower than end to end's.`);
}
