// Autograd entry points: backward over several roots, vector-Jacobian products (the gradient
// router of docs/methods.md is built on grad()), and grad-mode scopes.
import { type NativeHandle, native } from "./native";
import { type BackwardOptions, Tensor, handles, runBackward } from "./tensor";

export type { BackwardOptions };

/** Backpropagates from several roots at once, each with its gradient (null for scalar roots). */
export function backward(tensors: Tensor[], gradTensors: (Tensor | null)[] = [], options: BackwardOptions = {}): void {
  runBackward(tensors, gradTensors, options);
}

export interface GradOptions {
  retainGraph?: boolean;
  createGraph?: boolean;
  /** Return null for inputs the outputs do not depend on instead of throwing. */
  allowUnused?: boolean;
}

/**
 * The vector-Jacobian product: gradients of `outputs` (weighted by `gradOutputs`) with respect to
 * `inputs` only. Nothing is accumulated into `.grad`.
 */
export function grad(
  outputs: Tensor[],
  inputs: Tensor[],
  gradOutputs: (Tensor | null)[] = [],
  options: GradOptions = {},
): (Tensor | null)[] {
  let result: (NativeHandle | null)[];
  try {
    result = native.autogradGrad(
      handles(outputs),
      handles(inputs),
      gradOutputs.map((g) => (g === null ? null : g.handle)),
      options.retainGraph ?? false,
      options.createGraph ?? false,
      options.allowUnused ?? false,
    );
  } catch (error) {
    // The addon names its export; say what the caller called.
    if (error instanceof Error) error.message = error.message.replace(/^autogradGrad: /, "autograd.grad: ");
    throw error;
  }
  return result.map((h) => (h === null ? null : new Tensor(h)));
}

function withGradMode<T>(enabled: boolean, fn: () => T): T {
  const previous = native.setGradEnabled(enabled);
  try {
    return fn();
  } finally {
    native.setGradEnabled(previous);
  }
}

/** Runs `fn` without recording a graph (like `with torch.no_grad()`). */
export function noGrad<T>(fn: () => T): T {
  return withGradMode(false, fn);
}

/** Runs `fn` with graph recording on (inside a noGrad region). */
export function enableGrad<T>(fn: () => T): T {
  return withGradMode(true, fn);
}

export function isGradEnabled(): boolean {
  return native.isGradEnabled();
}

export function setGradEnabled(enabled: boolean): boolean {
  return native.setGradEnabled(enabled);
}
