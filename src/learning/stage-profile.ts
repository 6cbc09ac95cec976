// Measures the per-stage times the pipeline simulator (stage-sim.ts) replays: each stage's forward,
// its backward with and without its input's gradient, its decoder (forward, loss, backward, update)
// and its own update, on one batch, in this process's thread setting.
import { type Tensor, backward, bytesPerElement, keep, noGrad, scope } from "../torch";
import { withoutRunningStatsUpdate } from "../nn/batchnorm";
import type { LocalLearner } from "./learner";
import { ntXent } from "./ntxent";
import type { StageCosts } from "./stage-sim";

/** What the profile needs of an optimizer: one is made per stage and per decoder. */
export interface ProfiledOptimizer {
  zeroGrad(): void;
  step(): void;
  dispose(): void;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function timed(run: () => void): number {
  const t = performance.now();
  run();
  return performance.now() - t;
}

/**
 * Per-stage costs of `learner` on the views (median of `repeats` rounds after one untimed round).
 * Stages without a loss get decoderMs 0. Batch norm running statistics are left as they were; the
 * weights take the updates it times.
 */
export function profileStageCosts(
  learner: LocalLearner,
  views: Tensor,
  makeOptimizer: (params: Tensor[]) => ProfiledOptimizer,
  repeats = 3,
): StageCosts[] {
  const stages = learner.stages;
  const stageOptimizers = stages.map((s) => makeOptimizer(s.parameters()));
  const decoderAt = new Map(learner.losses.map((l, i) => [l.stage, i]));
  const decoderOptimizers = learner.losses.map((_, i) => makeOptimizer(learner.decoder(i).parameters()));
  const rounds: StageCosts[][] = [];
  try {
    for (let round = 0; round <= repeats; round++) {
      rounds.push(
        withoutRunningStatsUpdate(() =>
          scope(() => {
            const costs: StageCosts[] = [];
            const outputs: Tensor[] = [];
            let x = views;
            stages.forEach((stage, k) => {
              const input = k === 0 ? x : x.detach().requiresGrad_(true);
              let h: Tensor = input;
              const forwardMs = timed(() => (h = keep(scope(() => stage.forward(input)))));
              const d = decoderAt.get(k);
              let message: Tensor | null = null;
              const decoderMs =
                d === undefined
                  ? 0
                  : timed(() => {
                      message = scope(() => {
                        const hd = h.detach().requiresGrad_(true);
                        ntXent(learner.decoder(d).forward(hd), learner.losses[d].temperature).backward();
                        return hd.grad as Tensor;
                      });
                      decoderOptimizers[d].step();
                      decoderOptimizers[d].zeroGrad();
                    });
              const gradient = message ?? noGrad(() => h.detach().mul(0).add(1e-3));
              const params = stage.parameters();
              const backwardInputMs = timed(() =>
                backward([h], [gradient], { retainGraph: true, inputs: k === 0 ? params : [input, ...params] }),
              );
              const backwardParamsMs = timed(() => backward([h], [gradient], { inputs: params }));
              const updateMs = timed(() => stageOptimizers[k].step());
              stageOptimizers[k].zeroGrad();
              input.grad = null;
              costs.push({
                forwardMs,
                backwardInputMs,
                backwardParamsMs,
                decoderMs,
                updateMs,
                outputBytes: h.numel() * bytesPerElement[h.dtype],
              });
              outputs.push(h);
              x = h;
            });
            for (const h of outputs) h.dispose();
            return costs;
          }),
        ),
      );
    }
  } finally {
    for (const o of [...stageOptimizers, ...decoderOptimizers]) o.dispose();
  }
  const measured = rounds.slice(1);
  const keys = ["forwardMs", "backwardInputMs", "backwardParamsMs", "decoderMs", "updateMs", "outputBytes"] as const;
  return stages.map((_, k) =>
    Object.fromEntries(keys.map((key) => [key, median(measured.map((r) => r[k][key]))])),
  ) as unknown as StageCosts[];
}
