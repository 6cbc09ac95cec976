// SyncBatchNorm: batch statistics over the union of every rank's batch, as PyTorch's
// nn.SyncBatchNorm. The statistics are reduced with the differentiable all-reduce, so autograd
// gives the exact gradient of the normalisation over the global batch (the backward all-reduces
// the statistics' gradients as PyTorch's does). Two passes (mean, then Σ(x - mean)²) match the
// single-process BatchNorm on the concatenated batch to float rounding.
import { type Tensor, cat, full, noGrad, scope } from "../torch";
import type { ProcessGroup } from "../torch/distributed";
import { BatchNormBase, type Module } from "../nn";

/** Training-mode batch norm of `input` over all ranks' batches, updating `layer`'s running stats. */
export function syncBatchNorm(group: ProcessGroup, layer: BatchNormBase, input: Tensor, factor: number): Tensor {
  const channels = input.shape[1];
  const dims = input.shape.map((_, i) => i).filter((i) => i !== 1);
  const broadcastShape = input.shape.map((d, i) => (i === 1 ? d : 1));
  const localCount = input.numel() / channels;
  return scope(() => {
    // One all-reduce carries the per-channel sums and the element count (ranks may differ in batch).
    const sums = group.allReduceWithGrad(cat([input.sum(dims), full([1], localCount, { dtype: input.dtype })]));
    const count = sums.narrow(0, channels, 1).item();
    if (count <= 1) {
      throw new RangeError(
        `${layer.constructor.name}: expected more than 1 value per channel over all ranks when training`,
      );
    }
    const mean = sums.narrow(0, 0, channels).div(count);
    const centered = input.sub(mean.reshape(broadcastShape));
    const variance = group.allReduceWithGrad(centered.square().sum(dims)).div(count);
    let out = centered.mul(variance.add(layer.eps).rsqrt().reshape(broadcastShape));
    if (layer.weight !== null) out = out.mul(layer.weight.reshape(broadcastShape));
    if (layer.bias !== null) out = out.add(layer.bias.reshape(broadcastShape));
    const runningMean = layer.runningMean;
    const runningVar = layer.runningVar;
    if (runningMean !== null && runningVar !== null) {
      noGrad(() => {
        // The running variance is unbiased over the global count, as in PyTorch.
        runningMean.mul_(1 - factor).add_(mean.detach().mul(factor));
        runningVar.mul_(1 - factor).add_(variance.detach().mul((factor * count) / (count - 1)));
      });
    }
    return out;
  });
}

/**
 * Makes every BatchNorm layer in `module` synchronise its training statistics over `group`
 * (PyTorch's convert_sync_batchnorm, but in place: the layers, their parameters and state-dict keys
 * stay the same). Every rank must then run the same layers in the same order. Returns the number
 * of layers converted.
 */
export function convertSyncBatchNorm(module: Module, group: ProcessGroup): number {
  let converted = 0;
  for (const m of module.modules()) {
    if (m instanceof BatchNormBase) {
      m.crossRankForward = (layer, input, factor) => syncBatchNorm(group, layer, input, factor);
      converted++;
    }
  }
  return converted;
}
