// The encoder a run trains: a ResNet built from the run's options by default, or any module that
// exposes stages (the StagedEncoder contract) through an encoder factory.
import type { Tensor } from "../torch";
import { Generator } from "../torch/random";
import type { Module } from "../nn/module";
import { ResNet, type ResNetDepth, type ResNetStem } from "../models/resnet";
import { stageForward } from "../eval/features";
import type { StagedEncoder } from "./learner";
import { naturalStages } from "./split";

/** An encoder the trainer can train and read out: a Module whose stages run in sequence. */
export type RunEncoder = Module & StagedEncoder;

/**
 * Builds a run's encoder for images of `inChannels` channels. It must be deterministic given the
 * run's seed (resume, the random-init baseline and `loco eval` build it again).
 */
export type EncoderFactory = (context: { inChannels: number; seed: number; channelsLast: boolean }) => RunEncoder;

/** The options that define a run's encoder. */
export interface EncoderOptions {
  encoder: { depth: ResNetDepth; width: number; stem: ResNetStem };
  encoderFactory?: EncoderFactory;
  channelsLast: boolean;
  seed: number;
}

/** The encoder a run trains (same architecture and init seed every time). */
export function buildRunEncoder(options: EncoderOptions, inChannels: number): RunEncoder {
  if (options.encoderFactory !== undefined) {
    return options.encoderFactory({ inChannels, seed: options.seed, channelsLast: options.channelsLast });
  }
  return new ResNet({
    depth: options.encoder.depth,
    width: options.encoder.width,
    stem: options.encoder.stem,
    inChannels,
    numClasses: 0,
    channelsLast: options.channelsLast,
    generator: new Generator(options.seed),
  });
}

/** The name results.json gives an encoder. */
export function describeEncoder(options: EncoderOptions): string {
  return options.encoderFactory !== undefined
    ? "custom"
    : `resnet${options.encoder.depth}-w${options.encoder.width}-${options.encoder.stem}`;
}

/** An encoder's features: its forwardFeatures when it has one (ResNet), else its last stage pooled. */
export function encoderFeatures(encoder: RunEncoder): (images: Tensor) => Tensor {
  const withFeatures = encoder as RunEncoder & { forwardFeatures?: (x: Tensor) => Tensor };
  if (typeof withFeatures.forwardFeatures === "function") return (x) => withFeatures.forwardFeatures!(x);
  const stages = naturalStages(encoder);
  return stageForward(stages, stages.length - 1);
}

/** The width of encoderFeatures' output. */
export function encoderFeatureDim(encoder: RunEncoder): number {
  return encoder.blockChannels().at(-1)!;
}
