// Feedback alignment (Lillicrap et al. 2016) against a PyTorch autograd.Function of the same
// definition (test/oracle/feedback.py): the forward pass equals the plain layer, the input
// gradient is the output gradient sent back through the fixed feedback matrix B (a transposed
// convolution with B, or grad_output · B), and the weight and bias gradients are exact.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { F, Generator, type Tensor, randn, scope } from "../src/torch";
import { Conv2d, Linear, Sequential, ReLU, BatchNorm2d, Flatten, useFeedbackAlignment } from "../src/nn";
import { ResNet } from "../src/models/resnet";
import { oracleAvailable, oracleScript, runOracle } from "./helpers/oracle";
import { assertClose, compareClose } from "./helpers/assert";

const skip = oracleAvailable() ? false : "python3-torch is not installed for /usr/bin/python3";

interface Case {
  name: string;
  op: "conv2d" | "linear";
  params: {
    stride?: number | [number, number];
    padding?: number | [number, number];
    dilation?: number | [number, number];
    groups?: number;
  };
  x: number[];
  w: number[];
  bias: boolean;
}

const CASES: Case[] = [
  {
    name: "conv_stride2_pad1",
    op: "conv2d",
    params: { stride: 2, padding: 1 },
    x: [2, 3, 9, 9],
    w: [4, 3, 3, 3],
    bias: true,
  },
  {
    name: "conv_asym_dilated_grouped",
    op: "conv2d",
    params: { stride: [2, 1], padding: [0, 2], dilation: [1, 2], groups: 2 },
    x: [2, 4, 8, 7],
    w: [6, 2, 3, 2],
    bias: false,
  },
  { name: "conv_1x1_stride2", op: "conv2d", params: { stride: 2 }, x: [3, 5, 6, 6], w: [7, 5, 1, 1], bias: true },
  { name: "linear", op: "linear", params: {}, x: [5, 7], w: [3, 7], bias: true },
  { name: "linear_3d_nobias", op: "linear", params: {}, x: [2, 4, 6], w: [5, 6], bias: false },
];

function locoForward(c: Case, a: Record<string, Tensor>, feedback: Tensor | null): Tensor {
  const b = a.b ?? null;
  if (c.op === "conv2d") {
    return feedback === null ? F.conv2d(a.x, a.w, b, c.params) : F.feedbackConv2d(a.x, a.w, b, feedback, c.params);
  }
  return feedback === null ? F.linear(a.x, a.w, b) : F.feedbackLinear(a.x, a.w, b, feedback);
}

/** Output and gradients of loco's layer (feedback alignment when `feedback` is given). */
function locoRun(c: Case, inputs: Record<string, Tensor>, feedback: Tensor | null): Record<string, Tensor> {
  const leaves: Record<string, Tensor> = { x: inputs.x.clone().requiresGrad_(), w: inputs.w.clone().requiresGrad_() };
  if (inputs.b !== undefined) leaves.b = inputs.b.clone().requiresGrad_();
  const y = locoForward(c, leaves, feedback);
  y.backward(inputs.g);
  const out: Record<string, Tensor> = { y: y.detach() };
  for (const [k, v] of Object.entries(leaves)) out[`grad.${k}`] = v.grad!;
  return out;
}

describe("feedback alignment against PyTorch", { skip }, () => {
  test("forward equals the plain layer; backward equals the feedback-matrix formula", () => {
    scope(() => {
      const gen = new Generator(1234);
      const inputs = new Map<string, Tensor>();
      const perCase: Record<string, Record<string, Tensor>> = {};
      for (const c of CASES) {
        const a: Record<string, Tensor> = {
          x: randn(c.x, { generator: gen }),
          w: randn(c.w, { generator: gen }),
          B: randn(c.w, { generator: gen }),
        };
        if (c.bias) a.b = randn([c.w[0]], { generator: gen });
        a.g = randn(locoForward(c, a, null).shape, { generator: gen });
        perCase[c.name] = a;
        for (const [k, v] of Object.entries(a)) inputs.set(`${c.name}.${k}`, v);
      }
      const cases = CASES.map(({ name, op, params }) => ({ name, op, params }));
      const expected = runOracle(oracleScript("feedback.py"), inputs, [], {
        metadata: { cases: JSON.stringify(cases) },
      });
      for (const c of CASES) {
        const a = perCase[c.name];
        const fa = locoRun(c, a, a.B);
        const plain = locoRun(c, a, null);
        // Forward: bit-identical to the plain layer, and equal to PyTorch's.
        assertClose(fa.y, plain.y, { rtol: 0, atol: 0, name: `${c.name}: forward vs plain layer` });
        assertClose(fa.y, expected[`${c.name}.y`], { name: `${c.name}: forward` });
        for (const k of ["x", "w", ...(c.bias ? ["b"] : [])]) {
          assertClose(fa[`grad.${k}`], expected[`${c.name}.grad.${k}`], { name: `${c.name}: grad ${k}` });
        }
        // The weight and bias gradients are backprop's; the input gradient is not.
        assertClose(fa["grad.w"], plain["grad.w"], { name: `${c.name}: exact weight gradient` });
        const inputGap = compareClose(fa["grad.x"], plain["grad.x"]);
        assert.ok(inputGap.maxAbs > 1e-2, `${c.name}: the input gradient should differ from backprop's`);
      }
    });
  });
});

describe("feedback alignment in nn modules", () => {
  test("a switched layer keeps its forward, gets no gradient for B, and saves B in its state dict", () => {
    scope(() => {
      const conv = new Conv2d(3, 4, 3, { stride: 2, padding: 1, generator: new Generator(1) });
      const x = randn([2, 3, 8, 8], { generator: new Generator(2) });
      const before = conv.forward(x).detach();
      const paramsBefore = conv.parameters().length;
      conv.useFeedbackAlignment(new Generator(7));
      const B = conv.feedbackWeight!;
      assert.deepEqual(B.shape, conv.weight.shape);
      assert.equal(conv.parameters().length, paramsBefore, "B is a buffer, not a parameter");
      assert.ok(conv.stateDict().has("feedback_weight"));
      assertClose(conv.forward(x), before, { rtol: 0, atol: 0, name: "forward after switching" });

      const xin = x.clone().requiresGrad_();
      const y = conv.forward(xin);
      const g = randn(y.shape, { generator: new Generator(3) });
      y.backward(g);
      assert.equal(B.grad, null, "B gets no gradient");
      const expected = scope(() => {
        const leaf = x.clone().requiresGrad_();
        F.feedbackConv2d(leaf, conv.weight.detach(), conv.bias!.detach(), B, { stride: 2, padding: 1 }).backward(g);
        return leaf.grad!;
      });
      assertClose(xin.grad!, expected, { name: "module input gradient" });

      // Seeded: the same generator seed draws the same B; a checkpoint restores it.
      const again = new Conv2d(3, 4, 3, { stride: 2, padding: 1, generator: new Generator(1) });
      again.useFeedbackAlignment(new Generator(7));
      assertClose(again.feedbackWeight!, B, { rtol: 0, atol: 0, name: "seeded B" });
      const other = new Conv2d(3, 4, 3, { stride: 2, padding: 1 });
      other.useFeedbackAlignment(new Generator(99));
      other.loadStateDict(conv.stateDict());
      assertClose(other.feedbackWeight!, B, { rtol: 0, atol: 0, name: "B restored from the state dict" });
      for (const m of [conv, again, other]) m.dispose();
    });
  });

  test("useFeedbackAlignment switches every conv and linear layer; batch norm stays exact", () => {
    scope(() => {
      const net = new Sequential(
        new Conv2d(1, 4, 3, { padding: "same" }),
        new BatchNorm2d(4),
        new ReLU(),
        new Flatten(),
        new Linear(4 * 5 * 5, 3),
      );
      assert.equal(useFeedbackAlignment(net, { generator: new Generator(5) }), 2);
      const x = randn([2, 1, 5, 5], { generator: new Generator(4) }).requiresGrad_();
      net.forward(x).sum().backward();
      for (const p of net.parameters()) assert.ok(p.grad !== null, "every parameter gets a gradient");
      assert.ok(x.grad !== null);
      net.dispose();

      const resnet = new ResNet({ depth: 18, width: 4, stem: "cifar", inChannels: 1, numClasses: 0 });
      const convs = resnet.modules().filter((m) => m instanceof Conv2d).length;
      assert.equal(useFeedbackAlignment(resnet, { generator: new Generator(6) }), convs);
      assert.equal(useFeedbackAlignment(resnet), convs, "switching again keeps the existing matrices");
      resnet.dispose();
    });
  });
});
