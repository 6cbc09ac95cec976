// Peak training-step memory per method (docs/methods.md, "Memory"), measured with the
// engine's counting allocator: bytes held by libtorch during one step of forward + backward.
import { Generator, memoryStats, randn, resetPeakMemory, scope, zerosLike } from "../torch";
import { type ResNetDepth, type ResNetStem, ResNet } from "../models/resnet";
import { LocalLearner } from "./learner";
import { type LocalLearningConfig, type MethodName, methodPreset } from "./methods";

export interface MemoryMeasureOptions {
  depth: ResNetDepth;
  stem: ResNetStem;
  width?: number;
  inChannels?: number;
  imageSize: number;
  /** Images per step; each contributes two views. */
  batchSize: number;
  channelsLast?: boolean;
  /** Config overrides applied to every preset (e.g. mlpLayers). */
  overrides?: Partial<LocalLearningConfig>;
}

export interface MethodMemory {
  method: MethodName;
  /** Most bytes libtorch held during the step (weights and gradients included). */
  peakBytes: number;
  /** Peak minus the bytes held when the step started (weights, gradient buffers, inputs). */
  activationPeakBytes: number;
  /** Bytes held at the step's start. */
  baselineBytes: number;
  stepSeconds: number;
}

/**
 * Measures one training step of `method`. Gradient buffers are allocated before the step, as they
 * are from the second step of a real run on, so the activation peak is activations only.
 */
export function measureMethodMemory(method: MethodName, options: MemoryMeasureOptions): MethodMemory {
  return scope(() => {
    const encoder = new ResNet({
      depth: options.depth,
      stem: options.stem,
      width: options.width ?? 64,
      inChannels: options.inChannels ?? 3,
      numClasses: 0,
      channelsLast: options.channelsLast ?? false,
      generator: new Generator(0),
    });
    const config = { ...methodPreset(method, 4), ...options.overrides };
    const learner = new LocalLearner(encoder, config, { generator: new Generator(1) });
    learner.train();
    for (const p of learner.allParameters()) p.grad = zerosLike(p);
    let views = randn([2 * options.batchSize, options.inChannels ?? 3, options.imageSize, options.imageSize], {
      generator: new Generator(2),
    });
    if (options.channelsLast) views = views.channelsLast();
    const baselineBytes = memoryStats().currentBytes;
    resetPeakMemory();
    const started = process.hrtime.bigint();
    learner.step(views);
    const stepSeconds = Number(process.hrtime.bigint() - started) / 1e9;
    const peakBytes = memoryStats().peakBytes;
    learner.dispose();
    encoder.dispose();
    return { method, peakBytes, activationPeakBytes: peakBytes - baselineBytes, baselineBytes, stepSeconds };
  });
}
