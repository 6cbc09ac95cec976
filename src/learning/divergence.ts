// Divergence: finding the first non-finite gradient or weight, and the diagnosis a user gets when
// a run diverges (where, the last finite losses, the checkpoint left intact, the remedies).
import { type Tensor, noGrad, scope, stack } from "../torch";
import { type Divergence, DivergenceError } from "./errors";
import type { LocalLearner } from "./learner";
import type { ParamGroupInfo } from "./model";
import type { NonFiniteAction } from "./options";
import type { LastFinite } from "./state";

/** With onNonfinite "skip": this many non-finite steps in a row stop the run (the weights themselves are gone). */
export const MAX_CONSECUTIVE_SKIPS = 10;

/**
 * The first parameter whose gradient (or, with `weights`, whose value) holds a NaN or an
 * infinity, or null. One reduction per tensor and a single read-back in the common, finite case.
 */
export function firstNonFinite(
  groups: ParamGroupInfo[],
  weights = false,
): { group: ParamGroupInfo; name: string } | null {
  return noGrad(() =>
    scope(() => {
      const pick = (p: Tensor): Tensor | null => (weights ? p : p.grad);
      const sums: Tensor[] = [];
      for (const g of groups) {
        for (const [, p] of g.params) {
          const t = pick(p);
          if (t !== null) sums.push(t.sum());
        }
      }
      if (sums.length === 0 || Number.isFinite(stack(sums).sum().item())) return null;
      for (const g of groups) {
        for (const [name, p] of g.params) {
          const t = pick(p);
          if (t !== null && t.isfinite().all().item() === 0) return { group: g, name };
        }
      }
      return null; // every value is finite; only their sum overflowed
    }),
  );
}

/**
 * The name of the first floating-point tensor of `entries` holding a NaN or an infinity, or null.
 * Used on buffers (batch-norm running statistics) and on a checkpoint's whole model state: weights
 * can stay finite while a huge activation overflows running_var, and such a buffer makes every
 * later evaluation of the model non-finite.
 */
export function firstNonFiniteTensor(entries: Iterable<[string, Tensor]>): string | null {
  return noGrad(() =>
    scope(() => {
      const floating = [...entries].filter(([, t]) => t.dtype === "float32" || t.dtype === "float64");
      if (floating.length === 0) return null;
      if (
        Number.isFinite(
          stack(floating.map(([, t]) => t.sum().to("float64")))
            .sum()
            .item(),
        )
      )
        return null;
      for (const [name, t] of floating) if (t.isfinite().all().item() === 0) return name;
      return null; // every value is finite; only their sum overflowed
    }),
  );
}

/** Where a step went non-finite (the run's diagnosis adds the last finite losses and the checkpoint). */
export type DivergencePoint = Omit<Divergence, "lastFinite" | "checkpoint">;

/** The diagnosis of a non-finite step, as an error to throw. */
export function divergenceError(
  point: DivergencePoint,
  what: string,
  context: {
    learner: LocalLearner;
    lastFinite: (LastFinite | null)[];
    checkpoint: string | null;
    runDir: string;
    onNonfinite: NonFiniteAction;
  },
): DivergenceError {
  const finite = context.lastFinite.flatMap((v, i) =>
    v === null ? [] : [{ stage: context.learner.losses[i].stage + 1, loss: v.loss, step: v.step }],
  );
  const checkpoint = context.checkpoint;
  const lines = [
    `training diverged at step ${point.step} (epoch ${point.epoch}): ${what}`,
    `  last finite losses: ${finite.length === 0 ? "none (no step had finished)" : finite.map((f) => `stage ${f.stage} ${f.loss.toPrecision(6)} (step ${f.step})`).join(", ")}`,
    checkpoint === null
      ? "  no checkpoint had been written yet"
      : `  the last good checkpoint is ${checkpoint}; it is left as it was (continue from it with: loco train --resume ${context.runDir})`,
    context.onNonfinite === "skip"
      ? "  remedies: a lower --lr or a longer --warmup-epochs (skipping steps cannot help once the weights themselves produce non-finite values)"
      : "  remedies: a lower --lr, a longer --warmup-epochs, or --on-nonfinite skip to skip such steps",
  ];
  return new DivergenceError(lines.join("\n"), { ...point, lastFinite: finite, checkpoint });
}
