// Adam and AdamW, as torch.optim.Adam / torch.optim.AdamW (PyTorch 1.13, single-tensor path).
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
  checkUnitInterval,
} from "./optimizer";

export type AdamOptions = {
  lr: number;
  betas: readonly [number, number];
  eps: number;
  weightDecay: number;
  amsgrad: boolean;
  /** Ascend the objective instead of descending it. */
  maximize: boolean;
};

export type AdamParamGroup = ParamGroup<AdamOptions>;

type AdamConstructorOptions = Partial<Omit<AdamOptions, "betas">> & { betas?: readonly [number, number] };

const ADAM_STATE: StateSpec = {
  tensors: ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
  numbers: ["step"],
  requiredTogether: ["step", "exp_avg", "exp_avg_sq"],
};

function checkAdam(owner: string, g: AdamOptions): void {
  checkNonNegative(owner, "lr", g.lr);
  checkNonNegative(owner, "eps", g.eps);
  checkNonNegative(owner, "weightDecay", g.weightDecay);
  if (!Array.isArray(g.betas) || g.betas.length !== 2) {
    throw new TypeError(`${owner}: betas must be a pair [beta1, beta2], got ${JSON.stringify(g.betas)}`);
  }
  checkUnitInterval(owner, "betas[0]", g.betas[0]);
  checkUnitInterval(owner, "betas[1]", g.betas[1]);
  checkBoolean(owner, "amsgrad", g.amsgrad);
  checkBoolean(owner, "maximize", g.maximize);
}

/**
 * The shared moment update. With t the parameter's step count after increment:
 *
 *     m ← β1·m + (1 − β1)·g
 *     v ← β2·v + (1 − β2)·g²
 *     v̂ ← amsgrad ? (vmax ← max(vmax, v)) : v
 *     p ← p − (lr / (1 − β1^t)) · m / (√v̂ / √(1 − β2^t) + eps)
 */
function adamUpdate(
  keepState: (t: Tensor) => Tensor,
  p: Tensor,
  grad: Tensor,
  state: ParamState,
  group: AdamOptions,
): void {
  const [beta1, beta2] = group.betas;
  if (state.step === undefined) {
    state.step = 0;
    state.exp_avg = keepState(zerosLike(p));
    state.exp_avg_sq = keepState(zerosLike(p));
    if (group.amsgrad) state.max_exp_avg_sq = keepState(zerosLike(p));
  }
  const step = (state.step as number) + 1;
  state.step = step;
  const expAvg = state.exp_avg as Tensor;
  const expAvgSq = state.exp_avg_sq as Tensor;
  expAvg.mul_(beta1).add_(grad, 1 - beta1);
  expAvgSq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  const biasCorrection1 = 1 - beta1 ** step;
  const biasCorrection2 = 1 - beta2 ** step;
  const stepSize = group.lr / biasCorrection1;
  const biasCorrection2Sqrt = Math.sqrt(biasCorrection2);
  let second = expAvgSq;
  if (group.amsgrad) {
    let maxSq = state.max_exp_avg_sq as Tensor | undefined;
    if (maxSq === undefined) {
      // amsgrad switched on after the first steps (PyTorch would fail here; start from v).
      maxSq = keepState(expAvgSq.clone());
      state.max_exp_avg_sq = maxSq;
    } else {
      maxSq.copy_(maxSq.maximum(expAvgSq));
    }
    second = maxSq;
  }
  const denom = second.sqrt().div_(biasCorrection2Sqrt).add_(group.eps);
  p.addcdiv_(expAvg, denom, -stepSize);
}

/**
 * Adam (Kingma & Ba) with PyTorch's exact rule: L2 weight decay is added to the gradient
 * (g ← g + weightDecay·p) before the moment update; see adamUpdate for the rest.
 *
 * State (per parameter): `step` (number), `exp_avg`, `exp_avg_sq`, and `max_exp_avg_sq` with amsgrad.
 */
export class Adam extends Optimizer<AdamOptions> {
  constructor(params: readonly Tensor[] | readonly AdamParamGroup[], options: AdamConstructorOptions = {}) {
    super("Adam", params, {
      lr: options.lr ?? 1e-3,
      betas: options.betas ?? [0.9, 0.999],
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? 0,
      amsgrad: options.amsgrad ?? false,
      maximize: options.maximize ?? false,
    });
  }

  protected stateSpec(): StateSpec {
    return ADAM_STATE;
  }

  protected validate(g: AdamOptions): void {
    checkAdam("Adam", g);
  }

  protected updateParam(p: Tensor, grad: Tensor, state: ParamState, group: ResolvedParamGroup<AdamOptions>): void {
    // Into the optimizer's reused buffer, not a new tensor per parameter (Optimizer.scratchAdd).
    let g = group.maximize ? this.scratchNeg(p, grad) : grad;
    if (group.weightDecay !== 0) g = this.scratchAdd(p, g, p, group.weightDecay);
    adamUpdate((t) => this.keepState(t), p, g, state, group);
  }
}

/**
 * AdamW (Loshchilov & Hutter) with PyTorch's exact rule: decoupled weight decay
 * p ← p·(1 − lr·weightDecay) before the Adam update, which then uses the raw gradient.
 * Defaults as PyTorch: lr 1e-3, weightDecay 1e-2.
 */
export class AdamW extends Optimizer<AdamOptions> {
  constructor(params: readonly Tensor[] | readonly AdamParamGroup[], options: AdamConstructorOptions = {}) {
    super("AdamW", params, {
      lr: options.lr ?? 1e-3,
      betas: options.betas ?? [0.9, 0.999],
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? 1e-2,
      amsgrad: options.amsgrad ?? false,
      maximize: options.maximize ?? false,
    });
  }

  protected stateSpec(): StateSpec {
    return ADAM_STATE;
  }

  protected validate(g: AdamOptions): void {
    checkAdam("AdamW", g);
  }

  protected updateParam(p: Tensor, grad: Tensor, state: ParamState, group: ResolvedParamGroup<AdamOptions>): void {
    const g = group.maximize ? this.scratchNeg(p, grad) : grad;
    p.mul_(1 - group.lr * group.weightDecay);
    adamUpdate((t) => this.keepState(t), p, g, state, group);
  }
}
