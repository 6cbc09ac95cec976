// The model of `npm run bench:parallel` (bench/parallel.ts), shared with its rank processes
// (bench/parallel-rank.ts): a CIFAR-style ResNet with a method's decoders, and random views.
import { Generator, type Tensor, manualSeed, randn } from "../src/torch";
import { resnet18, resnet34 } from "../src/models";
import { SGD } from "../src/optim";
import { LocalLearner, type MethodName, type SplitSpec, methodPreset, stageCountOf } from "../src/learning";

export interface BenchModel {
  depth: 18 | 34;
  width: number;
  /** Image side (square). */
  size: number;
  /** Images per step (2 views each). */
  images: number;
}

/** The learner of `method` on the model, stages cut at `split`; the same weights on every rank. */
export function buildLearner(
  model: BenchModel,
  method: MethodName,
  split: SplitSpec,
): { learner: LocalLearner; dispose: () => void } {
  manualSeed(1);
  const make = model.depth === 18 ? resnet18 : resnet34;
  const encoder = make({ stem: "cifar", width: model.width, numClasses: 0, generator: new Generator(1) });
  const stages = stageCountOf({ split }, 4);
  const learner = new LocalLearner(
    encoder,
    { ...methodPreset(method, stages), split },
    { generator: new Generator(2), inputShape: [3, model.size, model.size] },
  );
  learner.train();
  return {
    learner,
    dispose: () => {
      learner.dispose();
      encoder.dispose();
    },
  };
}

export const benchOptimizer = (params: Tensor[]): SGD => new SGD(params, { lr: 0.01, momentum: 0.9 });

/** Two batches of random views to alternate between (the data pipeline is not measured). */
export const benchViews = (model: BenchModel): Tensor[] =>
  [0, 1].map((i) => randn([2 * model.images, 3, model.size, model.size], { generator: new Generator(10 + i) }));
