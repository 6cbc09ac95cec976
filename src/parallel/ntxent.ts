// NT-Xent over the global batch (SimCLR with negatives from every rank), as solo-learn and lightly
// compute it: each rank's embeddings are all-gathered with gradient, each rank scores its own
// anchors against all 2N·ranks rows, and the mean over ranks of the per-rank losses equals
// learning's ntXent on the concatenated batch (docs/methods.md), its gradient included.
import { F, type Tensor, arange, scope } from "../torch";
import type { ProcessGroup } from "../torch/distributed";

/**
 * This rank's share of the global NT-Xent. `z` is [2N, d] (rows i and i+N are the two views of
 * image i), with the same N on every rank. Returns the mean over this rank's 2N anchors of
 *   -s(i, pos(i)) + log Σ_{j≠i} exp s(i, j),  s = cos / τ,  j over every rank's rows;
 * averaging it over ranks (as gradient averaging does) gives the loss over the global batch.
 */
export function globalNtXent(z: Tensor, temperature: number, group: ProcessGroup): Tensor {
  if (!(temperature > 0)) throw new RangeError(`globalNtXent: temperature must be positive, got ${temperature}`);
  const [rows] = z.shape;
  if (z.ndim !== 2 || rows % 2 !== 0 || rows < 2) {
    throw new RangeError(`globalNtXent: expected embeddings of shape [2N, d] with N >= 1, got [${z.shape.join(", ")}]`);
  }
  return scope(() => {
    const n = rows / 2;
    const offset = group.rank * rows; // where this rank's rows sit among the gathered ones
    const unit = F.normalize(z, { dim: 1 });
    const everyone = group.allGatherWithGrad(unit);
    const logits = unit.matmul(everyone.t()).div(temperature);
    const local = arange(rows);
    // An anchor is never its own negative.
    const self = F.oneHot(local.add(offset), everyone.shape[0]).to("bool");
    const positives = local.add(n).remainder(rows).add(offset);
    return F.crossEntropy(logits.maskedFill(self, -Infinity), positives);
  });
}
