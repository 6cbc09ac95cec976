// Ops that write into a tensor the caller already holds (PyTorch's `out=` arguments), for loops
// that must not allocate: the optimizers write each parameter's decayed gradient into one buffer
// they reuse. The same kernels as the allocating ops compute the values, so they are identical.
import { type Tensor, callInPlace } from "./tensor";

/** `out ← input + alpha·other` (torch.add(input, other, alpha=alpha, out=out)); returns `out`. */
export function addOut(out: Tensor, input: Tensor, other: Tensor, alpha = 1): Tensor {
  callInPlace("add.out", input.handle, other.handle, alpha, out.handle);
  return out;
}

/** `out ← −input` (torch.neg(input, out=out)); returns `out`. */
export function negOut(out: Tensor, input: Tensor): Tensor {
  callInPlace("neg.out", input.handle, out.handle);
  return out;
}
