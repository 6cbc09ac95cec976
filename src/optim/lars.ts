// LARS (You, Gitman & Ginsburg, 2017) with SimCLR's semantics (google-research/simclr,
// lars_optimizer.py), and the helper that excludes biases and normalisation weights.
import { zerosLike } from "../torch/creation";
import type { Tensor } from "../torch/tensor";
import {
  Optimizer,
  type ParamGroup,
  type ParamState,
  type ResolvedParamGroup,
  type StateSpec,
  checkBoolean,
  checkNonNegative,
} from "./optimizer";

export type LARSOptions = {
  lr: number;
  momentum: number;
  weightDecay: number;
  /** Trust coefficient η (SimCLR's `eeta`). */
  eta: number;
  nesterov: boolean;
  /**
   * SimCLR's default (true): the learning rate and trust ratio scale the gradient before it enters
   * the momentum buffer. false: "popular" momentum, the trust ratio is computed from the update.
   */
  classicMomentum: boolean;
  /** Parameters of this group get neither weight decay nor layer adaptation (biases, BN). */
  excludeFromLars: boolean;
};

export type LARSParamGroup = ParamGroup<LARSOptions>;

/**
 * LARS exactly as SimCLR's LARSOptimizer (classic momentum, the default). For each parameter w
 * with gradient g, momentum buffer v (starts at zero), learning rate lr:
 *
 *     g ← g + weightDecay·w                                  (unless excluded)
 *     trust = η·‖w‖ / ‖g‖    if ‖w‖ > 0 and ‖g‖ > 0, else 1  (1 when excluded)
 *     v ← momentum·v + lr·trust·g
 *     w ← w − v                         (nesterov: w ← w − (momentum·v + lr·trust·g))
 *
 * Note ‖g‖ is the norm of the decayed gradient g + wd·w, as in SimCLR's code, not ‖g‖ + wd·‖w‖ of
 * the LARS paper (and of PyTorch ports such as solo-learn's / Lightning Bolts'); and the learning
 * rate is inside the buffer, so a schedule changes only new contributions (SimCLR's behaviour).
 * With `excludeFromLars` the rule is plain momentum SGD: v ← momentum·v + lr·g, w ← w − v.
 *
 * With classicMomentum false (SimCLR's other branch):
 *     v ← momentum·v + g;  u = nesterov ? momentum·v + g : v
 *     trust = η·‖w‖ / ‖u‖ (same guards);  w ← w − lr·trust·u
 *
 * The norms are read back to compute the trust ratio in double precision (one sync per parameter).
 * State (per parameter): `momentum_buffer`.
 */
export class LARS extends Optimizer<LARSOptions> {
  constructor(params: readonly Tensor[] | readonly LARSParamGroup[], options: Partial<LARSOptions> & { lr: number }) {
    super("LARS", params, {
      lr: options.lr,
      momentum: options.momentum ?? 0.9,
      weightDecay: options.weightDecay ?? 0,
      eta: options.eta ?? 0.001,
      nesterov: options.nesterov ?? false,
      classicMomentum: options.classicMomentum ?? true,
      excludeFromLars: options.excludeFromLars ?? false,
    });
  }

  protected stateSpec(): StateSpec {
    return { tensors: ["momentum_buffer"], numbers: [] };
  }

  protected validate(g: LARSOptions): void {
    checkNonNegative("LARS", "lr", g.lr);
    checkNonNegative("LARS", "momentum", g.momentum);
    checkNonNegative("LARS", "weightDecay", g.weightDecay);
    checkNonNegative("LARS", "eta", g.eta);
    checkBoolean("LARS", "nesterov", g.nesterov);
    checkBoolean("LARS", "classicMomentum", g.classicMomentum);
    checkBoolean("LARS", "excludeFromLars", g.excludeFromLars);
  }

  protected updateParam(w: Tensor, grad: Tensor, state: ParamState, group: ResolvedParamGroup<LARSOptions>): void {
    const { lr, momentum, weightDecay, eta, nesterov, excludeFromLars } = group;
    let g = grad;
    if (!excludeFromLars && weightDecay !== 0) g = this.scratchAdd(w, g, w, weightDecay); // no new tensor
    let v = state.momentum_buffer as Tensor | undefined;
    if (v === undefined) {
      v = this.keepState(zerosLike(w));
      state.momentum_buffer = v;
    }
    const trustRatio = (u: Tensor): number => {
      if (excludeFromLars) return 1;
      const wNorm = w.norm().item();
      const uNorm = u.norm().item();
      return wNorm > 0 && uNorm > 0 ? (eta * wNorm) / uNorm : 1;
    };
    if (group.classicMomentum) {
      const scaledLr = lr * trustRatio(g);
      v.mul_(momentum).add_(g, scaledLr);
      if (nesterov) w.sub_(v.mul(momentum).add_(g, scaledLr));
      else w.sub_(v);
    } else {
      v.mul_(momentum).add_(g);
      const update = nesterov ? v.mul(momentum).add_(g) : v;
      w.sub_(update, lr * trustRatio(update));
    }
  }
}

export interface ExcludeBiasAndNormOptions {
  /**
   * Which parameters to exclude; default: those with at most one dimension (biases, BatchNorm
   * weights and biases), as SimCLR excludes 'batch_normalization' and 'bias' variables.
   */
  exclude?: (name: string, param: Tensor) => boolean;
  /** Set `excludeFromLars` on the excluded group (default true; false for optimizers other than LARS). */
  lars?: boolean;
}

/**
 * Splits named parameters into two groups, in this order: the regular ones, and the excluded ones
 * with `weightDecay: 0` (and `excludeFromLars: true`, so LARS gives them no trust ratio either).
 * Both groups are always present (possibly empty), so state dicts keep the same layout.
 */
export function excludeBiasAndNorm(
  namedParameters: readonly (readonly [string, Tensor])[],
  options: ExcludeBiasAndNormOptions = {},
): [ParamGroup<LARSOptions>, ParamGroup<LARSOptions>] {
  const isExcluded = options.exclude ?? ((_name: string, p: Tensor) => p.ndim <= 1);
  const regular: Tensor[] = [];
  const excluded: Tensor[] = [];
  for (const [name, p] of namedParameters) (isExcluded(name, p) ? excluded : regular).push(p);
  const excludedGroup: ParamGroup<LARSOptions> =
    options.lars === false
      ? { params: excluded, weightDecay: 0 }
      : { params: excluded, weightDecay: 0, excludeFromLars: true };
  return [{ params: regular }, excludedGroup];
}
