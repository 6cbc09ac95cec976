// Numeric comparison of tensors with an informative failure message.
import * as assert from "node:assert/strict";
import { type Tensor, noGrad } from "../../src/torch";

export interface CloseOptions {
  /** Relative tolerance (default 1e-4). */
  rtol?: number;
  /** Absolute floor (default 1e-6): differences below it always pass. */
  atol?: number;
  /** What is compared, for the message. */
  name?: string;
}

export interface CloseReport {
  maxAbs: number;
  maxRel: number;
  /** Flat index of the worst element (by the tolerance ratio), and its two values. */
  worst: number;
  worstActual: number;
  worstExpected: number;
  ok: boolean;
}

/** The smallest magnitude used as a denominator (keeps exact zeros from dividing by zero). */
const TINY = 1e-30;

/**
 * Compares two tensors elementwise (as float64 on the host).
 *
 * Element i passes when  |a_i - e_i| <= atol  OR  |a_i - e_i| / max(|e_i|, tiny) <= rtol,
 * i.e. the relative error |a - e| / max(|e|, tiny) must be within rtol, except where the absolute
 * error is already below the atol floor (values near zero, where relative error means nothing).
 * NaNs must match NaNs and infinities must match exactly. Shapes must be equal.
 */
export function compareClose(actual: Tensor, expected: Tensor, options: CloseOptions = {}): CloseReport {
  const rtol = options.rtol ?? 1e-4;
  const atol = options.atol ?? 1e-6;
  const [a, e] = noGrad(() => [toF64(actual), toF64(expected)]);
  let maxAbs = 0;
  let maxRel = 0;
  let worst = -1;
  let worstScore = -1;
  let ok = true;
  for (let i = 0; i < e.length; i++) {
    const x = a[i];
    const y = e[i];
    if (Number.isNaN(x) || Number.isNaN(y)) {
      if (!(Number.isNaN(x) && Number.isNaN(y))) {
        ok = false;
        if (worstScore < Infinity) [worst, worstScore] = [i, Infinity];
        maxAbs = maxRel = NaN;
      }
      continue;
    }
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      if (x !== y) {
        ok = false;
        [worst, worstScore] = [i, Infinity];
        maxAbs = maxRel = Infinity;
      }
      continue;
    }
    const diff = Math.abs(x - y);
    const rel = diff / Math.max(Math.abs(y), TINY);
    if (diff > maxAbs) maxAbs = diff;
    if (rel > maxRel && diff > atol) maxRel = rel;
    const pass = diff <= atol || rel <= rtol;
    if (!pass) ok = false;
    const score = diff <= atol ? 0 : rel / rtol;
    if (score > worstScore) [worst, worstScore] = [i, score];
  }
  return { maxAbs, maxRel, worst, worstActual: a[worst], worstExpected: e[worst], ok };
}

function toF64(t: Tensor): Float64Array {
  const d = t.detach();
  const f = d.to("float64");
  const out = f.data() as Float64Array;
  d.dispose();
  f.dispose();
  return out;
}

/** Asserts shapes equal and values close (see compareClose for the exact rule). */
export function assertClose(actual: Tensor, expected: Tensor, options: CloseOptions = {}): void {
  const name = options.name ?? "tensor";
  assert.deepEqual(actual.shape, expected.shape, `${name}: shape [${actual.shape}] != expected [${expected.shape}]`);
  const r = compareClose(actual, expected, options);
  if (!r.ok) {
    assert.fail(
      `${name}: not close (rtol ${options.rtol ?? 1e-4}, atol ${options.atol ?? 1e-6}): ` +
        `max abs err ${r.maxAbs.toExponential(3)}, max rel err ${r.maxRel.toExponential(3)}; ` +
        `worst at flat index ${r.worst}: actual ${r.worstActual}, expected ${r.worstExpected}`,
    );
  }
}
