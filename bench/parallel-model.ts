// The model of `npm run bench:parallel` (bench/parallel.ts), shared with its rank processes
// (bench/parallel-rank.ts): a CIFAR-style ResNet with a method's decoders (the library's
// buildStageModel, which the stage-parallel tests build too), and random views.
import { Generator, type Tensor, randn, scope } from "../src/torch";
import { SGD } from "../src/optim";
import { type LocalLearner, type MethodName, type SplitSpec, buildStageModel } from "../src/learning";
import type { ThreadCpuClock } from "./thread-cpu";

export interface BenchModel {
  depth: 18 | 34;
  width: number;
  /** Image side (square). */
  size: number;
  /** Images per step (2 views each). */
  images: number;
}

/** The learner of `method` on the model, stages cut at `split`; the same weights on every rank. */
export const buildLearner = (
  model: BenchModel,
  method: MethodName,
  split: SplitSpec,
): { learner: LocalLearner; dispose: () => void } =>
  buildStageModel({
    method,
    depth: model.depth,
    width: model.width,
    split,
    seed: 1,
    inputShape: [3, model.size, model.size],
  });

export const benchOptimizer = (params: Tensor[]): SGD => new SGD(params, { lr: 0.01, momentum: 0.9 });

/** Two batches of random views to alternate between (the data pipeline is not measured). */
export const benchViews = (model: BenchModel): Tensor[] =>
  [0, 1].map((i) => randn([2 * model.images, 3, model.size, model.size], { generator: new Generator(10 + i) }));

/**
 * Images/s of the method in this process (LocalLearner.step, the single-process router). With
 * `ready`, the timed steps start when the promise it returns (called after the warmup) resolves:
 * processes started together then time the same span.
 */
export async function oneRankImagesPerSecond(
  model: BenchModel,
  method: MethodName,
  split: number[],
  warmup: number,
  steps: number,
  ready?: () => Promise<void>,
  clock?: ThreadCpuClock,
): Promise<number> {
  const { learner, dispose } = buildLearner(model, method, split);
  const optimizer = benchOptimizer(learner.allParameters());
  const views = benchViews(model);
  let started = 0;
  for (let step = 0; step < warmup + steps; step++) {
    if (step === warmup) {
      await ready?.();
      started = performance.now();
      clock?.start();
    }
    scope(() => {
      optimizer.zeroGrad();
      learner.step(views[step % 2]);
      optimizer.step();
    });
  }
  const seconds = (performance.now() - started) / 1000;
  for (const v of views) v.dispose();
  optimizer.dispose();
  dispose();
  return (model.images * steps) / seconds;
}
