// Stochastic gradient descent with momentum, as torch.optim.SGD (PyTorch 1.13).
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

export type SGDOptions = {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
  /** Ascend the objective instead of descending it. */
  maximize: boolean;
};

export type SGDParamGroup = ParamGroup<SGDOptions>;

/**
 * SGD with PyTorch's exact rule, for each parameter p with gradient g:
 *
 *     g ← g + weightDecay·p                       (if weightDecay ≠ 0)
 *     if momentum ≠ 0:
 *       b ← g                      at the first step (the buffer starts as a copy of the gradient)
 *       b ← momentum·b + (1 − dampening)·g        afterwards
 *       g ← nesterov ? g + momentum·b : b
 *     p ← p − lr·g
 *
 * State (per parameter): `momentum_buffer` when momentum ≠ 0.
 */
export class SGD extends Optimizer<SGDOptions> {
  constructor(params: readonly Tensor[] | readonly SGDParamGroup[], options: Partial<SGDOptions> & { lr: number }) {
    super("SGD", params, {
      lr: options.lr,
      momentum: options.momentum ?? 0,
      dampening: options.dampening ?? 0,
      weightDecay: options.weightDecay ?? 0,
      nesterov: options.nesterov ?? false,
      maximize: options.maximize ?? false,
    });
  }

  protected stateSpec(): StateSpec {
    return { tensors: ["momentum_buffer"], numbers: [] };
  }

  protected validate(g: SGDOptions): void {
    checkNonNegative("SGD", "lr", g.lr);
    checkNonNegative("SGD", "momentum", g.momentum);
    checkUnitInterval("SGD", "dampening", g.dampening, true);
    checkNonNegative("SGD", "weightDecay", g.weightDecay);
    checkBoolean("SGD", "nesterov", g.nesterov);
    checkBoolean("SGD", "maximize", g.maximize);
    if (g.nesterov && (g.momentum <= 0 || g.dampening !== 0)) {
      throw new RangeError(
        `SGD: nesterov momentum requires momentum > 0 and dampening = 0 (got momentum ${g.momentum}, dampening ${g.dampening})`,
      );
    }
  }

  protected updateParam(p: Tensor, grad: Tensor, state: ParamState, group: ResolvedParamGroup<SGDOptions>): void {
    // PyTorch's arithmetic in PyTorch's order; the intermediate gradients go to the optimizer's
    // reused buffer (scratchNeg, scratchAdd) instead of a new tensor per parameter per step.
    let d = group.maximize ? this.scratchNeg(p, grad) : grad;
    if (group.weightDecay !== 0) d = this.scratchAdd(p, d, p, group.weightDecay);
    if (group.momentum !== 0) {
      let buf = state.momentum_buffer as Tensor | undefined;
      if (buf === undefined) {
        buf = this.keepState(d.clone());
        state.momentum_buffer = buf;
      } else {
        buf.mul_(group.momentum).add_(d, 1 - group.dampening);
      }
      d = group.nesterov ? this.scratchAdd(p, d, buf, group.momentum) : buf;
    }
    p.add_(d, -group.lr);
  }
}
