// Exporting a run's encoder for use elsewhere: its state dict alone (no decoders, projection heads
// or optimizer state) under torchvision's ResNet parameter names, as safetensors, and a small JSON
// beside it that says how to feed it (input size, channels, normalisation) and how to build it.
//
// loco's ResNet uses torchvision's module structure and names (conv1, bn1, layer1.0.conv1, …,
// downsample.0/1, BN running_mean/running_var/num_batches_tracked), so the names need no mapping:
// `torchvision.models.resnet50().load_state_dict(load_file(path), strict=False)` reports only
// fc.weight and fc.bias missing, when the encoder has torchvision's shape (base width 64 and the
// "imagenet" stem). A "cifar"-stem encoder (3×3 stride-1 conv1, no max pool) or another width has
// the same names but other shapes: the JSON says so and what to change in torchvision's model.
import * as fs from "node:fs";
import * as path from "node:path";
import { saveSafetensors } from "../torch";
import { ResNet } from "../models/resnet";
import { openRun, runDirOf } from "./runs";

export interface EncoderInfo {
  format: "loco-encoder/1";
  architecture: string;
  depth: number;
  width: number;
  stem: "imagenet" | "cifar";
  inChannels: number;
  /** Size of the pooled features (the input of torchvision's fc). */
  featureDim: number;
  /** [channels, height, width] the encoder was trained on. */
  inputSize: [number, number, number];
  /** Per-channel normalisation applied to [0, 1] pixels before the encoder, or null. */
  normalize: { mean: number[]; std: number[] } | null;
  torchvision: {
    /** True when torchvision's constructor builds exactly this shape. */
    loadable: boolean;
    constructor: string;
    /** Keys of torchvision's model that the file does not hold (the classifier). */
    missingKeys: string[];
    /** What to change in torchvision's model when it is not loadable as is. */
    note: string;
  };
  source: { run: string; checkpoint: string; step: number; method: string; dataset: string };
}

export interface ExportResult {
  weights: string;
  info: string;
  tensors: number;
  encoder: EncoderInfo;
}

/** The JSON's path for a weights path: encoder.safetensors → encoder.json. */
export function infoPathFor(weights: string): string {
  return weights.replace(/\.safetensors$/i, "") + ".json";
}

/**
 * Writes the encoder of a run (its newest good checkpoint, or the given checkpoint file) to `out`
 * (safetensors, torchvision's names) and its description to infoPathFor(out). Both atomically.
 */
export function exportEncoder(target: string, out: string, warn?: (m: string) => void): ExportResult {
  const probeOptions = openRunOptions(target);
  const dir = path.dirname(path.resolve(out));
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory())
    throw new Error(`${out}: its folder ${dir} does not exist (create it first)`);
  if (!/\.safetensors$/i.test(out)) throw new Error(`${out}: the encoder file must end in .safetensors`);
  const run = openRun(target, probeOptions.inChannels, warn);
  try {
    const o = run.options;
    if (!(run.encoder instanceof ResNet)) throw new Error(`${target}: export writes ResNet encoders only`);
    const e = run.encoder;
    const state = e.stateDict();
    const size = o.augment.size;
    const [height, width] = typeof size === "number" ? [size, size] : size;
    const architecture = `resnet${e.depth}`;
    const shapeLike = e.width === 64 && e.stem === "imagenet" && e.inChannels === 3;
    const notes: string[] = [];
    if (e.width !== 64) notes.push(`base width ${e.width} (torchvision's is 64): every layer is narrower`);
    if (e.stem === "cifar")
      notes.push(
        "cifar stem: set model.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False) and model.maxpool = nn.Identity()",
      );
    if (e.inChannels !== 3) notes.push(`${e.inChannels} input channels: conv1 takes ${e.inChannels}, not 3`);
    const info: EncoderInfo = {
      format: "loco-encoder/1",
      architecture,
      depth: e.depth,
      width: e.width,
      stem: e.stem,
      inChannels: e.inChannels,
      featureDim: e.featureDim,
      inputSize: [e.inChannels, height, width],
      normalize: o.normalize ?? null,
      torchvision: {
        loadable: shapeLike,
        constructor: `torchvision.models.${architecture}()`,
        missingKeys: ["fc.weight", "fc.bias"],
        note: shapeLike
          ? "load_state_dict(weights, strict=False) leaves only fc missing; replace fc (e.g. nn.Identity() for features)"
          : `same parameter names, other shapes: ${notes.join("; ")}`,
      },
      source: {
        run: run.runDir,
        checkpoint: run.checkpoint,
        step: run.step,
        method: o.method,
        dataset: o.pretrainData?.name ?? "",
      },
    };
    saveSafetensors(out, state, {
      format: "pt",
      architecture,
      info: path.basename(infoPathFor(out)),
    });
    const infoPath = infoPathFor(out);
    const tmp = `${infoPath}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, `${JSON.stringify(info, null, 2)}\n`);
    fs.renameSync(tmp, infoPath);
    return { weights: out, info: infoPath, tensors: state.size, encoder: info };
  } finally {
    run.encoder.dispose();
  }
}

/** The input channels of a run's encoder, from its config (normalisation, else the dataset). */
function openRunOptions(target: string): { inChannels: number } {
  const runDir = runDirOf(target);
  const file = path.join(runDir, "config.json");
  let resolved: { normalize?: { mean: number[] } | null; pretrainData?: { name?: string; channels?: number } };
  try {
    resolved = (JSON.parse(fs.readFileSync(file, "utf8")) as { resolved: typeof resolved }).resolved;
  } catch (error) {
    throw new Error(`${file}: cannot read the run's config (${(error as Error).message})`);
  }
  const name = resolved.pretrainData?.name;
  const inChannels =
    resolved.pretrainData?.channels ??
    resolved.normalize?.mean.length ??
    (name === "mnist" || name === "fashion-mnist" ? 1 : 3);
  return { inChannels };
}
