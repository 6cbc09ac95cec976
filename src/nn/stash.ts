// withStashedWeights: layers that compute with a copy of their parameters, so that a recorded graph
// survives an in-place optimizer step (conv, linear and batch norm read their weights through it).
import type { Tensor } from "../torch/tensor";

/** Nesting depth of withStashedWeights calls (0: layers use their parameters directly). */
let weightsStashed = 0;

/**
 * Runs `fn` with every convolution, linear and batch-norm layer using a copy of its parameters
 * (a differentiable clone), so that the graph recorded in `fn` saves the weights as they are now:
 * an optimizer step that updates the parameters in place afterwards leaves that graph valid, and a
 * later backward pass through it computes the gradient at these weights (which still accumulates
 * into the parameters' `.grad`). For keeping a graph across an update (stage parallelism's
 * pipelined schedule, docs/distributed.md); costs one copy of the parameters per forward.
 */
export function withStashedWeights<T>(fn: () => T): T {
  weightsStashed++;
  try {
    return fn();
  } finally {
    weightsStashed--;
  }
}

/** `p` itself, or inside withStashedWeights a differentiable copy of it. */
export function stashed<T extends Tensor | null>(p: T): T {
  return weightsStashed > 0 && p !== null && p.requiresGrad ? (p.clone() as T) : p;
}
