// NT-Xent (src/learning/ntxent.ts) against an independent PyTorch implementation written from the
// formula (test/oracle/ntxent.py: SimCLR's loop-free two-view block form, cross-checked there
// against a naive per-anchor loop): loss value and gradient w.r.t. the embeddings, for several N,
// d and temperatures, in float32 and float64. Also the argument checks and two closed forms.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { type Tensor, Generator, cat, noGrad, rand, randn, scope, tensor } from "../src/torch";
import { ntXent } from "../src/learning";
import { oracleAvailable, oracleScript, runOracle } from "./helpers/oracle";
import { assertClose } from "./helpers/assert";

type Dtype = "float32" | "float64";

/** Value and gradient of loco's NT-Xent at z (z itself is left untouched). */
function locoValueAndGrad(z: Tensor, temperature: number): { loss: Tensor; grad: Tensor } {
  const leaf = z.detach().clone().requiresGrad_(true);
  const loss = ntXent(leaf, temperature);
  loss.backward();
  const grad = leaf.grad;
  if (grad === null) throw new Error("ntXent produced no gradient for the embeddings");
  return { loss: loss.detach(), grad };
}

/** Largest |value| of a tensor (the scale for the gradient's absolute floor). */
const maxAbs = (t: Tensor): number => noGrad(() => t.abs().max().item());

// Tolerances. Loss: 1e-5 relative in float32 (the bar), 1e-10 in float64 (so a formula that differs
// in anything but rounding cannot pass). Gradient: the same relative bar per element, except where
// the absolute error is below a floor proportional to the gradient's own scale (max |dL/dz|): each
// element is a difference of terms of about that size, so float32 rounding leaves errors of a few
// 1e-6 of it on elements much smaller than it. Measured on the peaked case (τ = 0.1, close views),
// PyTorch's own float32 gradient is 4.3e-6·scale away from the float64 value, loco's 4.2e-6·scale.
const TOL: Record<Dtype, { rtol: number; floor: number }> = {
  float32: { rtol: 1e-5, floor: 1e-5 },
  float64: { rtol: 1e-10, floor: 1e-12 },
};

describe("ntXent argument validation", () => {
  const z = (rows: number, d = 3) => randn([rows, d], { generator: new Generator(1) });

  test("odd number of rows is rejected", () => {
    scope(() => assert.throws(() => ntXent(z(5), 0.5), { name: "RangeError", message: /\[2N, d\].*\[5, 3\]/ }));
  });

  test("N < 2 (a single pair has no negatives) is rejected", () => {
    scope(() => {
      assert.throws(() => ntXent(z(2), 0.5), { name: "RangeError", message: /N >= 2.*\[2, 3\]/ });
      assert.throws(() => ntXent(z(0), 0.5), { name: "RangeError", message: /N >= 2/ });
    });
  });

  test("embeddings that are not a matrix are rejected", () => {
    scope(() => {
      assert.throws(() => ntXent(randn([8], { generator: new Generator(2) }), 0.5), {
        name: "RangeError",
        message: /\[2N, d\]/,
      });
      assert.throws(() => ntXent(randn([4, 2, 3], { generator: new Generator(2) }), 0.5), {
        name: "RangeError",
        message: /\[2N, d\]/,
      });
    });
  });

  test("non-positive or NaN temperature is rejected", () => {
    scope(() => {
      for (const t of [0, -0.5, -1, Number.NaN]) {
        assert.throws(
          () => ntXent(z(4), t),
          { name: "RangeError", message: /temperature must be positive/ },
          `temperature ${t}`,
        );
      }
    });
  });

  test("the smallest valid batch (N = 2) is accepted", () => {
    scope(() => assert.ok(Number.isFinite(ntXent(z(4), 0.5).item())));
  });
});

describe("ntXent closed forms", () => {
  test("all embeddings identical: loss = log(2N - 1), gradient zero", () => {
    for (const dtype of ["float32", "float64"] as const) {
      for (const n of [2, 3, 8]) {
        for (const temperature of [0.1, 0.5, 1.0]) {
          scope(() => {
            // One random direction, repeated with different positive lengths (normalisation removes them).
            const base = randn([1, 5], { generator: new Generator(n), dtype });
            const lengths = rand([2 * n, 1], { generator: new Generator(100 + n), dtype }).add(0.5);
            const z = base.mul(lengths);
            const { loss, grad } = locoValueAndGrad(z, temperature);
            const expected = Math.log(2 * n - 1);
            const tol = dtype === "float32" ? 1e-5 : 1e-12;
            assert.ok(
              Math.abs(loss.item() - expected) <= tol * expected,
              `${dtype} N=${n} τ=${temperature}: loss ${loss.item()} vs log(2N-1) = ${expected}`,
            );
            // Every similarity is 1/τ whatever the row, so no direction changes the loss.
            const g = maxAbs(grad);
            assert.ok(
              g <= (dtype === "float32" ? 1e-5 : 1e-12) / temperature,
              `${dtype} N=${n} τ=${temperature}: |grad| ${g}`,
            );
          });
        }
      }
    }
  });

  test("aligned views, orthogonal images: loss = -1/τ + log(e^(1/τ) + 2N - 2)", () => {
    for (const dtype of ["float32", "float64"] as const) {
      for (const [n, d] of [
        [2, 2],
        [4, 6],
      ]) {
        for (const temperature of [0.1, 0.5, 1.0]) {
          scope(() => {
            // z_i = z_{i+N} = c_i · e_i (views of image i on the i-th axis): positive similarity 1,
            // every negative 0.
            const rows: number[][] = [];
            for (let r = 0; r < 2 * n; r++) rows.push(Array.from({ length: d }, (_, j) => (j === r % n ? 1 + r : 0)));
            const z = tensor(rows, { dtype });
            const { loss } = locoValueAndGrad(z, temperature);
            const expected = -1 / temperature + Math.log(Math.exp(1 / temperature) + 2 * n - 2);
            // The loss is a difference of two terms of about 1/τ (it is 9e-5 at τ = 0.1, N = 2), so
            // the rounding bound scales with 1/τ, not with the loss.
            const tol = (dtype === "float32" ? 1e-6 : 1e-14) * (1 + 1 / temperature);
            assert.ok(
              Math.abs(loss.item() - expected) <= tol,
              `${dtype} N=${n} τ=${temperature}: loss ${loss.item()} vs ${expected}`,
            );
          });
        }
      }
    }
  });
});

const skip = oracleAvailable() ? false : "python3-torch is not installed for /usr/bin/python3";

interface OracleCase {
  name: string;
  dtype: Dtype;
  temperature: number;
  z: Tensor;
}

/** Embeddings with rows of very different lengths (so the normalisation's gradient matters). */
function embeddings(n: number, d: number, dtype: Dtype, seed: number, correlatedViews: boolean): Tensor {
  const g = new Generator(seed);
  let z = randn([2 * n, d], { generator: g, dtype });
  if (correlatedViews) {
    // Second view = first view + small noise: peaked softmax, small loss (the regime late in training).
    const first = z.narrow(0, 0, n);
    const second = first.add(randn([n, d], { generator: g, dtype }).mul(0.1));
    z = cat([first, second]);
  }
  const lengths = rand([2 * n, 1], { generator: g, dtype })
    .mul(9.9)
    .add(0.1);
  return z.mul(lengths);
}

describe("ntXent matches PyTorch (independent implementation)", { skip }, () => {
  test("value and gradient for N ∈ {2, 5, 32}, d ∈ {3, 16, 128}, τ ∈ {0.1, 0.5, 1}, float32 and float64", () => {
    scope(() => {
      const cases: OracleCase[] = [];
      let seed = 1000;
      for (const dtype of ["float32", "float64"] as const) {
        for (const temperature of [0.1, 0.5, 1.0]) {
          for (const [n, d] of [
            [2, 3],
            [5, 16],
            [32, 128],
          ]) {
            cases.push({
              name: `${dtype}_t${temperature}_n${n}_d${d}`,
              dtype,
              temperature,
              z: embeddings(n, d, dtype, seed++, false),
            });
          }
          cases.push({
            name: `${dtype}_t${temperature}_n16_d32_close`,
            dtype,
            temperature,
            z: embeddings(16, 32, dtype, seed++, true),
          });
        }
      }
      // The naive per-anchor loop (float64) runs for these small cases and must equal the block form.
      const loopCases = ["float64_t0.5_n2_d3", "float32_t0.1_n5_d16", "float64_t1_n5_d16"];
      for (const c of loopCases)
        assert.ok(
          cases.some((k) => k.name === c),
          `loop case ${c} exists`,
        );
      const oracle = runOracle(
        oracleScript("ntxent.py"),
        Object.fromEntries(cases.map((c) => [`${c.name}.z`, c.z])),
        [],
        {
          metadata: {
            cases: JSON.stringify(cases.map((c) => ({ name: c.name, temperature: c.temperature }))),
            loop_cases: JSON.stringify(loopCases),
          },
        },
      );

      for (const c of cases) {
        const { loss, grad } = locoValueAndGrad(c.z, c.temperature);
        const expectedLoss = oracle[`${c.name}.loss`];
        const expectedGrad = oracle[`${c.name}.grad`];
        assert.equal(loss.dtype, c.dtype, `${c.name}: loss dtype`);
        assert.equal(grad.dtype, c.dtype, `${c.name}: gradient dtype`);
        assert.equal(expectedGrad.dtype, c.dtype, `${c.name}: oracle gradient dtype`);
        const { rtol, floor } = TOL[c.dtype];
        assertClose(loss, expectedLoss, { rtol, atol: 1e-30, name: `${c.name} loss` });
        assertClose(grad, expectedGrad, { rtol, atol: floor * maxAbs(expectedGrad), name: `${c.name} dL/dz` });
        if (c.dtype === "float32") {
          // And against the exact value (the same float32 inputs computed in float64 by the oracle).
          const exactGrad = oracle[`${c.name}.exact_grad`];
          assertClose(loss.to("float64"), oracle[`${c.name}.exact_loss`], {
            rtol,
            atol: 1e-30,
            name: `${c.name} loss vs float64`,
          });
          assertClose(grad.to("float64"), exactGrad, {
            rtol,
            atol: floor * maxAbs(exactGrad),
            name: `${c.name} dL/dz vs float64`,
          });
        }
        if (loopCases.includes(c.name)) {
          const loopLoss = oracle[`${c.name}.loop_loss`];
          const loopGrad = oracle[`${c.name}.loop_grad`];
          assertClose(loss.to("float64"), loopLoss, { rtol, atol: 1e-30, name: `${c.name} loss vs loop` });
          assertClose(grad.to("float64"), loopGrad, {
            rtol,
            atol: floor * maxAbs(loopGrad),
            name: `${c.name} dL/dz vs loop`,
          });
        }
      }
    });
  });
});
