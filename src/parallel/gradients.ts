// Data-parallel gradient averaging, as PyTorch's DistributedDataParallel does it after backward:
// gradients are packed into buckets of about `bucketBytes`, every bucket is all-reduced at once
// (Gloo overlaps them on its threads), then averaged and copied back. Fewer, larger messages cost
// far less than one per parameter.
import { type Tensor, bytesPerElement, cat, keep, noGrad, scope, zerosLike } from "../torch";
import type { ProcessGroup } from "../torch/distributed";
import type { Module } from "../nn";

export interface GradientAllReduceOptions {
  /** Target bucket size in bytes (default 25 MiB, PyTorch's). A larger parameter gets its own bucket. */
  bucketBytes?: number;
}

/** Averages the gradients of a fixed list of parameters over a process group. */
export class GradientAllReduce {
  readonly group: ProcessGroup;
  /** The parameters of each bucket, in the order given. */
  readonly buckets: readonly (readonly Tensor[])[];

  constructor(group: ProcessGroup, parameters: readonly Tensor[], options: GradientAllReduceOptions = {}) {
    const bucketBytes = options.bucketBytes ?? 25 * 1024 * 1024;
    if (!(bucketBytes > 0)) throw new RangeError(`GradientAllReduce: bucketBytes must be positive, got ${bucketBytes}`);
    this.group = group;
    const buckets: Tensor[][] = [];
    let current: Tensor[] = [];
    let bytes = 0;
    for (const p of parameters) {
      const size = p.numel() * bytesPerElement[p.dtype];
      // A bucket holds one dtype (it is one flat tensor).
      if (current.length > 0 && (bytes + size > bucketBytes || current[0].dtype !== p.dtype)) {
        buckets.push(current);
        current = [];
        bytes = 0;
      }
      current.push(p);
      bytes += size;
    }
    if (current.length > 0) buckets.push(current);
    this.buckets = buckets;
  }

  /**
   * Replaces every parameter's gradient by its mean over the ranks. A parameter without a
   * gradient counts as zeros (it gets the mean of the others'), so every rank sends the same
   * buckets. Every rank must call this after its backward, in the same order as other collectives.
   */
  async averageGradients(): Promise<void> {
    const flats = scope(() =>
      this.buckets.map((params) => keep(cat(params.map((p) => (p.grad ?? zerosLike(p)).detach().reshape(-1))))),
    );
    try {
      await Promise.all(flats.map((flat) => this.group.allReduce(flat, { op: "sum" }).wait()));
      noGrad(() =>
        scope(() => {
          this.buckets.forEach((params, b) => {
            const flat = flats[b].div_(this.group.worldSize);
            let offset = 0;
            for (const p of params) {
              const n = p.numel();
              const mean = flat.narrow(0, offset, n).view(p.shape);
              const grad = p.grad;
              // The engine holds its own reference to an assigned gradient; the scope frees ours.
              if (grad === null) p.grad = mean.clone();
              else grad.copy_(mean);
              offset += n;
            }
          });
        }),
      );
    } finally {
      for (const flat of flats) flat.release();
    }
  }
}

/**
 * Copies `root`'s parameters and buffers into every rank's `module` (call once before training, so
 * all ranks start from the same weights and running statistics).
 */
export async function broadcastState(group: ProcessGroup, module: Module, root = 0): Promise<void> {
  const tensors = [...module.parameters(), ...module.buffers()];
  await Promise.all(tensors.map((t) => group.broadcast(t, root).wait()));
}
