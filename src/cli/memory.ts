// `loco memory`: peak training-step memory of each method, split and overlap mode, measured with
// the engine's counting allocator, with ratios to end to end beside the paper's figure; per-block
// activation bytes (--blocks); the largest batch and image size under a budget (--budget).
import { getNumThreads } from "../torch";
import {
  type MemoryMeasureOptions,
  type MemorySetting,
  budgetSearch,
  measureBlocks,
  measureMethodMemory,
  overlapMatters,
  parseBytes,
  settingCuts,
  settingOverrides,
  stageBytes,
} from "../learning/memory";
import { METHOD_NAMES, type MethodName, SPLIT_NAMES, type SplitName, methodPreset } from "../learning/methods";
import { OVERLAP_MODES, type Overlap } from "../learning/router";
import { type BlockProfile, describeSplit } from "../learning/split";
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
  {
    flag: "splits",
    type: "string",
    default: "resnet,balanced-memory",
    description: `comma-separated splits to measure (${SPLIT_NAMES.join(", ")})`,
  },
  { flag: "stages", type: "int-list", min: 1, default: [4, 8], description: "stage counts K of the balanced splits" },
  {
    flag: "overlaps",
    type: "string",
    default: "retain,recompute,recompute-all,recompute-min",
    description:
      "comma-separated overlap modes (GIM has no late messages: recompute is left out for it, recompute-all and recompute-min are not)",
  },
  { flag: "blocks", type: "boolean", default: false, description: "print each block's activation bytes and FLOPs" },
  {
    flag: "budget",
    type: "string",
    description:
      "a memory budget (e.g. 8GiB): per setting, the largest batch at --image-size and the largest image size at batch 2 (measured searches)",
  },
  {
    flag: "channels-last",
    type: "boolean",
    default: false,
    description: "run the encoder in channels-last layout (a ResNet's layer4 stays NCHW, faster at its small maps)",
  },
  {
    flag: "preallocate-gradients",
    type: "boolean",
    default: false,
    description:
      "allocate every gradient buffer before the measured step (as zero_grad without set_to_none keeps them); by default the step starts without gradients, as loco train's steps do",
  },
  { flag: "json", type: "boolean", default: false, description: "print JSON instead of tables" },
];

function listOf<T extends string>(flag: string, value: unknown, allowed: readonly T[]): T[] {
  const items = String(value)
    .split(",")
    .map((m) => m.trim());
  for (const m of items) {
    if (!allowed.includes(m as T))
      throw new UsageError(`--${flag}: unknown value '${m}' (expected ${allowed.join(", ")})`);
  }
  return items as T[];
}

/**
 * The settings to measure: first each method with ResNet's stages and retained graphs (the rows
 * `loco memory` always had), then per method every other (split, K, overlap).
 */
export function memorySettings(
  methods: MethodName[],
  splits: SplitName[],
  stageCounts: number[],
  overlaps: Overlap[],
): MemorySetting[] {
  const first: MemorySetting[] = [];
  const rest: MemorySetting[] = [];
  for (const method of methods) {
    const preset = methodPreset(method, 4);
    const modes = overlaps.filter((o, i) => i === 0 || overlapMatters(preset, o));
    for (const split of splits) {
      for (const stages of split === "resnet" ? [undefined] : stageCounts) {
        for (const overlap of modes) {
          const setting = { method, split, stages, overlap };
          (split === "resnet" && overlap === modes[0] ? first : rest).push(setting);
        }
      }
    }
  }
  // Ratios are to plain end to end: measured whenever simclr is listed, whatever the filters.
  const reference: MemorySetting = { method: "simclr", split: "resnet", overlap: "retain" };
  const isReference = (s: MemorySetting): boolean =>
    s.method === "simclr" && s.split === "resnet" && s.overlap === "retain";
  const all = [...first, ...rest];
  return methods.includes("simclr") && !all.some(isReference) ? [reference, ...all] : all;
}

/** The JSON fields that name a setting, shared by the measured rows and the budget's. */
function settingFields(
  setting: MemorySetting,
  cuts: number[],
): { method: MethodName; split: MemorySetting["split"]; stages: number; overlap: Overlap; cuts: number[] } {
  return { method: setting.method, split: setting.split, stages: cuts.length + 1, overlap: setting.overlap, cuts };
}

const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
const label = (s: MemorySetting, cuts: number[]): string =>
  `${s.method} ${s.split === "resnet" ? "resnet" : `${String(s.split)} K=${cuts.length + 1}`} ${s.overlap}`;

export function runMemory(values: Record<string, unknown>): void {
  const methods = String(values.methods)
    .split(",")
    .map((m) => m.trim());
  for (const m of methods) {
    if (!METHOD_NAMES.includes(m as MethodName))
      throw new UsageError(`--methods: unknown method '${m}' (expected ${METHOD_NAMES.join(", ")})`);
  }
  const splits = listOf("splits", values.splits, SPLIT_NAMES);
  const overlaps = listOf("overlaps", values.overlaps, OVERLAP_MODES);
  let budget: number | null = null;
  if (values.budget !== undefined) {
    try {
      budget = parseBytes(String(values.budget));
    } catch (error) {
      throw new UsageError(`--budget: ${(error as Error).message}`);
    }
  }
  const imageSize = values.imageSize as number;
  const depth = Number(String(values.encoder).replace("resnet", "")) as ResNetDepth;
  const stem = (values.stem as "cifar" | "imagenet" | undefined) ?? (imageSize < 96 ? "cifar" : "imagenet");
  const batchSize = values.batchSize as number;
  const options: MemoryMeasureOptions = {
    depth,
    stem,
    imageSize,
    batchSize,
    width: values.width as number,
    inChannels: values.inChannels as number,
    channelsLast: values.channelsLast as boolean,
    preallocateGradients: values.preallocateGradients as boolean,
  };
  const progress = (m: string): void => {
    if (!values.json) process.stderr.write(`${m}\n`);
  };
  // One forward per block at the measured batch: the per-stage bytes and the balanced splits' costs.
  progress("measuring blocks …");
  // A budget search measures other batches anyway: profile one image's views (bytes scale with the batch).
  const { profiles, naturalSplit: natural } = measureBlocks(budget === null ? options : { ...options, batchSize: 1 });
  const settings = memorySettings(methods as MethodName[], splits, values.stages as number[], overlaps);
  for (const s of settings) {
    if (s.stages !== undefined && s.stages > profiles.length)
      throw new UsageError(
        `--stages: ${s.stages} stages need ${s.stages} blocks, resnet${depth} has ${profiles.length}`,
      );
  }
  // A budget search chooses its own batches: --batch-size plays no part there.
  const batchText = budget === null ? `, batch ${batchSize} (${2 * batchSize} views)` : "";
  const header = `${values.encoder} (${stem} stem), ${imageSize}x${imageSize}${batchText}, ${getNumThreads()} threads`;

  if (values.blocks) {
    if (values.json) console.log(JSON.stringify(profiles));
    else {
      console.log(header);
      console.log(
        formatTable(
          ["block", "index", "activation MiB", "GFLOPs", "output"],
          profiles.map((p, i) => [
            p.name,
            String(i),
            mib(p.activationBytes),
            (p.flops / 1e9).toFixed(2),
            p.shape.join("x"),
          ]),
        ),
      );
    }
    return;
  }
  if (budget !== null) {
    runBudget(settings, options, budget, profiles, natural, header, Boolean(values.json), progress);
    return;
  }
  const rows = settings.map((s) => {
    const cuts = settingCuts(s, profiles, natural);
    progress(`measuring ${label(s, cuts)} …`);
    const r = measureMethodMemory(s.method, { ...options, overrides: settingOverrides(s, cuts) });
    return { setting: s, cuts, result: r, stages: stageBytes(profiles, cuts) };
  });
  const e2e = rows.find(
    (r) => r.setting.method === "simclr" && r.setting.split === "resnet" && r.setting.overlap === "retain",
  );
  if (values.json) {
    console.log(
      JSON.stringify(
        rows.map((r) => ({
          ...settingFields(r.setting, r.cuts),
          peakBytes: r.result.peakBytes,
          activationPeakBytes: r.result.activationPeakBytes,
          stageBytes: r.stages,
          stepSeconds: r.result.stepSeconds,
          stepRatio: e2e === undefined ? null : r.result.stepSeconds / e2e.result.stepSeconds,
        })),
      ),
    );
    return;
  }
  const ratio = (a: number | undefined, b: number): string => (a === undefined ? "-" : `${(a / b).toFixed(2)}x`);
  console.log(header);
  console.log(
    formatTable(
      [
        "setting",
        "blocks per stage",
        "largest stage MiB",
        "peak MiB",
        "activation peak MiB",
        "e2e / peak",
        "e2e / activations",
        "step / e2e step",
      ],
      rows.map((r) => [
        label(r.setting, r.cuts),
        describeSplit(r.cuts, profiles.length),
        mib(Math.max(...r.stages)),
        mib(r.result.peakBytes),
        mib(r.result.activationPeakBytes),
        ratio(e2e?.result.peakBytes, r.result.peakBytes),
        ratio(e2e?.result.activationPeakBytes, r.result.activationPeakBytes),
        e2e === undefined ? "-" : `${(r.result.stepSeconds / e2e.result.stepSeconds).toFixed(2)}x`,
      ]),
    ),
  );
  console.log(`paper (ResNet-50, ImageNet): local learning's peak is ${PAPER_MEMORY_RATIO}x lower than end to end's.`);
}

function runBudget(
  settings: MemorySetting[],
  options: MemoryMeasureOptions,
  budget: number,
  profiles: readonly BlockProfile[],
  natural: number[],
  header: string,
  json: boolean,
  progress: (m: string) => void,
): void {
  const rows = settings.map((s) => {
    const cuts = settingCuts(s, profiles, natural);
    progress(`searching ${label(s, cuts)} …`);
    const opts = { ...options, overrides: settingOverrides(s, cuts) };
    const found = budgetSearch(s.method, opts, budget, 32, (what, bytes) => progress(`  ${what}: ${mib(bytes)} MiB`));
    return { setting: s, cuts, found };
  });
  if (json) {
    console.log(
      JSON.stringify(
        rows.map((r) => ({
          ...settingFields(r.setting, r.cuts),
          budgetBytes: budget,
          batchSize: r.found.batchSize,
          imageSize: r.found.imageSize,
        })),
      ),
    );
    return;
  }
  console.log(`${header}; budget ${mib(budget)} MiB (weights, gradients, activations; no optimizer state)`);
  console.log(
    formatTable(
      ["setting", "blocks per stage", `largest batch at ${options.imageSize} px`, "largest image at batch 2"],
      rows.map((r) => [
        label(r.setting, r.cuts),
        describeSplit(r.cuts, profiles.length),
        String(r.found.batchSize ?? "none"),
        r.found.imageSize === null ? "none" : `${r.found.imageSize} px`,
      ]),
    ),
  );
}
