// The learner the stage-parallel checks build on every rank and in the single-process reference
// (`npm run bench:parallel` and test/stage-parallel.test.ts): a CIFAR-stem ResNet with a method's
// preset decoders, initialised from a seed, so that every process builds the same weights.
import { type DType, Generator, manualSeed } from "../torch";
import { ResNet, type ResNetDepth } from "../models/resnet";
import { LocalLearner } from "./learner";
import { type MethodName, type SplitSpec, methodPreset } from "./methods";
import { stageCountOf } from "./split";

export interface StageModelOptions {
  method: MethodName;
  depth: ResNetDepth;
  width: number;
  /** The stages (default: the method preset's for 4 stages). */
  split?: SplitSpec;
  /** The encoder's initialisation seed; the decoders use seed + 1 (default 1). */
  seed?: number;
  /** Default float32. */
  dtype?: DType;
  /** One input's [C, H, W], for splits that profile the blocks. */
  inputShape?: readonly number[];
}

/** The learner in training mode and a function that frees it and its encoder. */
export function buildStageModel(options: StageModelOptions): { learner: LocalLearner; dispose: () => void } {
  const seed = options.seed ?? 1;
  const dtype = options.dtype ?? "float32";
  manualSeed(seed);
  const encoder = new ResNet({
    depth: options.depth,
    width: options.width,
    stem: "cifar",
    numClasses: 0,
    dtype,
    generator: new Generator(seed),
  });
  const split = options.split;
  const config = {
    ...methodPreset(options.method, stageCountOf({ split }, 4)),
    ...(split === undefined ? {} : { split }),
  };
  const learner = new LocalLearner(encoder, config, {
    generator: new Generator(seed + 1),
    inputShape: options.inputShape,
  }).to(dtype);
  learner.train();
  return {
    learner,
    dispose: () => {
      learner.dispose();
      encoder.dispose();
    },
  };
}
