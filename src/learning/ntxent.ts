// NT-Xent, SimCLR's contrastive loss (Chen et al. 2020, https://arxiv.org/abs/2002.05709, eq. 1).
import { F, Tensor, arange, eye, scope } from "../torch";

/**
 * NT-Xent over 2N embeddings `z` ([2N, d]): rows i and i+N are the two views of image i. Each row's
 * positive is its other view; the other 2N-2 rows are negatives. With s = cos(z_i, z_j) / τ:
 *   L = mean_i [ -s(i, pos(i)) + log Σ_{j≠i} exp s(i, j) ]
 * averaged over all 2N anchors. τ (temperature) must be positive.
 */
export function ntXent(z: Tensor, temperature: number): Tensor {
  if (!(temperature > 0)) throw new RangeError(`ntXent: temperature must be positive, got ${temperature}`);
  const [rows] = z.shape;
  if (z.ndim !== 2 || rows % 2 !== 0 || rows < 4) {
    throw new RangeError(`ntXent: expected embeddings of shape [2N, d] with N >= 2, got [${z.shape.join(", ")}]`);
  }
  return scope(() => {
    const n = rows / 2;
    const unit = F.normalize(z, { dim: 1 });
    const logits = unit.matmul(unit.t()).div(temperature);
    // An anchor is never its own negative: push self-similarity to -inf before the softmax.
    const self = eye(rows, { dtype: "bool" });
    const masked = logits.maskedFill(self, -Infinity);
    const index = arange(rows);
    const positives = index.add(n).remainder(rows);
    return F.crossEntropy(masked, positives);
  });
}
