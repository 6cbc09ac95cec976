// relu(batch_norm(x) + residual) in one autograd node (native/batchnorm_relu.cpp, F.batchNormReLU)
// against PyTorch's separate operators (test/oracle/bn_relu.py): the output, every gradient and the
// updated running statistics, for each layout the fused kernels read (NCHW, channels-last, [N, C],
// [N, C, L]), with and without a residual, affine parameters and running statistics; and the cases
// that must take the separate operators instead (evaluation mode, mixed layouts, float64).
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { F, Generator, type Tensor, loadSafetensors, ones, rand, randn, scope, zeros } from "../src/torch";
import { BatchNorm2d, ReLU, Sequential } from "../src/nn";
import { oracleAvailable, oracleScript, runOracle } from "./helpers/oracle";
import { assertClose } from "./helpers/assert";
import { runBenchJson } from "./helpers/bench";

const skip = oracleAvailable() ? false : "python3-torch is not installed for /usr/bin/python3";

interface Case {
  name: string;
  shape: number[];
  layout: "contiguous" | "channels_last";
  /** The residual's layout when it differs from the input's (the separate operators then run). */
  residual: "same" | "other" | null;
  affine: boolean;
  running: boolean;
  training: boolean;
  /** Whether the one-node path must run (else batch_norm, add_ and relu_). */
  fused: boolean;
}

const base = { residual: null, affine: true, running: true, training: true, fused: true } as const;
const CASES: Case[] = [
  { ...base, name: "nchw", shape: [4, 6, 5, 5], layout: "contiguous" },
  { ...base, name: "nhwc", shape: [4, 6, 5, 5], layout: "channels_last" },
  { ...base, name: "nchw_residual", shape: [3, 5, 4, 6], layout: "contiguous", residual: "same" },
  { ...base, name: "nhwc_residual", shape: [3, 5, 4, 6], layout: "channels_last", residual: "same" },
  { ...base, name: "rows_2d", shape: [16, 7], layout: "contiguous" },
  { ...base, name: "planes_3d_residual", shape: [4, 3, 9], layout: "contiguous", residual: "same" },
  {
    ...base,
    name: "no_affine_no_running",
    shape: [4, 6, 5, 5],
    layout: "channels_last",
    affine: false,
    running: false,
  },
  { ...base, name: "eval", shape: [4, 6, 5, 5], layout: "channels_last", training: false, fused: false },
  { ...base, name: "mixed_layouts", shape: [3, 5, 4, 6], layout: "contiguous", residual: "other", fused: false },
];

const FUSED_NODE = /BatchNormReLU/;

/** loco's output, gradients and running statistics for one case. */
function locoRun(c: Case, a: Record<string, Tensor>): { out: Record<string, Tensor>; node: string | null } {
  const fmt = (t: Tensor, layout: Case["layout"]) =>
    t.ndim === 4 && layout === "channels_last" ? t.contiguous("channelsLast") : t.clone();
  const leaves: Record<string, Tensor> = { x: fmt(a.x, c.layout).requiresGrad_() };
  if (c.residual) {
    const other = c.layout === "channels_last" ? "contiguous" : "channels_last";
    leaves.r = fmt(a.r, c.residual === "same" ? c.layout : other).requiresGrad_();
  }
  if (c.affine) {
    leaves.w = a.w.clone().requiresGrad_();
    leaves.b = a.b.clone().requiresGrad_();
  }
  const rm = c.running ? a.rm.clone() : null;
  const rv = c.running ? a.rv.clone() : null;
  const y = F.batchNormReLU(leaves.x, rm, rv, {
    weight: leaves.w ?? null,
    bias: leaves.b ?? null,
    residual: leaves.r ?? null,
    training: c.training,
    momentum: 0.1,
    eps: 1e-5,
  });
  y.backward(fmt(a.g, c.layout));
  const out: Record<string, Tensor> = { y: y.detach() };
  for (const [k, v] of Object.entries(leaves)) out[`grad.${k}`] = v.grad!;
  if (rm && rv) Object.assign(out, { rm, rv });
  return { out, node: y.gradFnName };
}

describe("batch norm + ReLU in one node, against PyTorch", { skip }, () => {
  test("outputs, gradients and running statistics match the separate operators", () => {
    scope(() => {
      const gen = new Generator(99);
      const inputs = new Map<string, Tensor>();
      const perCase: Record<string, Record<string, Tensor>> = {};
      for (const c of CASES) {
        const ch = c.shape[1];
        // Inputs away from 0 mean, a spread of scales: the normalisation does real work.
        const a: Record<string, Tensor> = {
          x: randn(c.shape, { generator: gen }).mul(3).add(1.5),
          g: randn(c.shape, { generator: gen }),
        };
        if (c.residual) a.r = randn(c.shape, { generator: gen });
        if (c.affine) {
          a.w = rand([ch], { generator: gen }).add(0.5);
          a.b = randn([ch], { generator: gen }).mul(0.2);
        }
        if (c.running) {
          a.rm = randn([ch], { generator: gen }).mul(0.1);
          a.rv = rand([ch], { generator: gen }).add(0.5);
        }
        perCase[c.name] = a;
        for (const [k, v] of Object.entries(a)) inputs.set(`${c.name}.${k}`, v);
      }
      const cases = CASES.map((c) => ({
        name: c.name,
        layout: c.layout,
        training: c.training,
        momentum: 0.1,
        eps: 1e-5,
      }));
      const expected = runOracle(oracleScript("bn_relu.py"), inputs, [], {
        metadata: { cases: JSON.stringify(cases) },
      });
      for (const c of CASES) {
        const { out, node } = locoRun(c, perCase[c.name]);
        if (c.fused) assert.match(node ?? "", FUSED_NODE, `${c.name}: expected the one-node path, got ${node}`);
        else assert.doesNotMatch(node ?? "", FUSED_NODE, `${c.name}: expected the separate operators`);
        const keys = Object.keys(out);
        assert.deepEqual(
          keys.sort(),
          Object.keys(expected)
            .filter((k) => k.startsWith(`${c.name}.`))
            .map((k) => k.slice(c.name.length + 1))
            .sort(),
          `${c.name}: the same outputs and gradients`,
        );
        for (const k of keys) {
          assertClose(out[k], expected[`${c.name}.${k}`], { rtol: 1e-4, atol: 1e-5, name: `${c.name}: ${k}` });
        }
      }
    });
  });
});

describe("batch norm + ReLU in modules", () => {
  test("forwardReLU and a Sequential of BatchNorm2d and ReLU run one node in training, the operators in eval", () => {
    scope(() => {
      const gen = new Generator(5);
      const bn = new BatchNorm2d(4);
      const x = randn([3, 4, 5, 5], { generator: gen }).contiguous("channelsLast");
      const identity = randn([3, 4, 5, 5], { generator: gen }).contiguous("channelsLast");
      assert.match(bn.forwardReLU(x.clone().requiresGrad_()).gradFnName ?? "", FUSED_NODE);
      const fused = bn.forwardReLU(x.clone().requiresGrad_(), identity);
      assert.match(fused.gradFnName ?? "", FUSED_NODE);
      assert.equal(bn.numBatchesTracked!.item(), 2, "each call counts one batch");

      // The same values as the module's own forward followed by the residual and ReLU.
      const reference = new BatchNorm2d(4);
      reference.forward(x); // the same running statistics as bn's after its first call
      const separate = reference.forward(x).add(identity).relu();
      assertClose(fused, separate, { rtol: 1e-5, atol: 1e-6, name: "forwardReLU with a residual" });
      assertClose(bn.runningMean!, reference.runningMean!, { rtol: 1e-5, atol: 1e-7, name: "running mean" });
      assertClose(bn.runningVar!, reference.runningVar!, { rtol: 1e-5, atol: 1e-7, name: "running variance" });

      const seq = new Sequential(new BatchNorm2d(4), new ReLU(true));
      assert.match(seq.forward(x.clone().requiresGrad_()).gradFnName ?? "", FUSED_NODE);
      seq.eval();
      const inEval = seq.forward(x.clone().requiresGrad_());
      assert.doesNotMatch(inEval.gradFnName ?? "", FUSED_NODE);
      assert.ok(inEval.min().item() >= 0, "ReLU still applied in eval");
    });
  });

  test("a float64 input takes the separate operators", () => {
    scope(() => {
      const x = randn([4, 3, 2, 2], { dtype: "float64" }).requiresGrad_();
      const y = F.batchNormReLU(x, zeros([3], { dtype: "float64" }), ones([3], { dtype: "float64" }), {
        training: true,
      });
      assert.doesNotMatch(y.gradFnName ?? "", FUSED_NODE);
      assert.ok(y.min().item() >= 0);
    });
  });
});

describe("batch norm + ReLU kernels for each instruction set", () => {
  test("the baseline copy agrees with the one this CPU runs, to float rounding", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "loco-bnrelu-"));
    try {
      const child = path.join(__dirname, "helpers", "bn-relu-child.js");
      const results = ["default", "baseline"].map((choice) => {
        const file = path.join(dir, `${choice}.safetensors`);
        const env: NodeJS.ProcessEnv = { ...process.env, LOCO_NUM_THREADS: "1" };
        if (choice === "baseline") env.LOCO_FUSED_BN_RELU = "baseline";
        else delete env.LOCO_FUSED_BN_RELU;
        const r = spawnSync(process.execPath, [child, file], { env, encoding: "utf8", timeout: 60_000 });
        assert.equal(r.status, 0, `the ${choice} child failed: ${r.stderr}`);
        return loadSafetensors(file).tensors;
      });
      scope(() => {
        const [native, baseline] = results;
        assert.equal(native.size, 26);
        // The sums' order follows the vector width, so the two differ by rounding, not more.
        for (const [k, v] of native) assertClose(v, baseline.get(k)!, { rtol: 1e-5, atol: 1e-6, name: k });
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

test("bench/bn-relu: both sides timed at every shape, in the layouts loco's ResNet-50 runs", () => {
  interface Row {
    shape: string;
    layout: string;
    residual: boolean;
    separateMs: { forward: number; backward: number };
    fusedMs: { forward: number; backward: number };
    ratio: { total: number };
  }
  const report = runBenchJson<{ batch: number; rows: Row[] }>("bn-relu", ["--batch", "2", "--repeats", "1"]);
  assert.equal(report.batch, 2);
  assert.equal(report.rows.length, 9);
  assert.deepEqual(
    report.rows.map((r) => r.layout),
    [...Array(7).fill("channelsLast"), "contiguous", "contiguous"],
  );
  for (const r of report.rows) {
    for (const ms of [r.separateMs.forward, r.separateMs.backward, r.fusedMs.forward, r.fusedMs.backward]) {
      assert.ok(Number.isFinite(ms) && ms > 0, `${r.shape}: a positive time`);
    }
    assert.ok(r.ratio.total > 0);
  }
});
