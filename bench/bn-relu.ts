// `node dist/bench/bn-relu.js`: batch norm + ReLU (and a residual) in training mode, forward and
// backward, as one node (F.batchNormReLU, native/batchnorm_relu.cpp) and as ATen's separate
// operators (the same call with F.setFusedBatchNormReLU(false)), at the shapes of ResNet-50's step
// in `npm run bench:engine` (64 views of 224×224): each block's layout, channels-last in layer1–3
// and NCHW in layer4, as loco's ResNets run them. The two alternate shape by shape and repetition
// by repetition in one process, so their ratio is measured under the same conditions; the best of
// --repeats is kept per side. Prints one JSON line: per shape, milliseconds of each side (forward,
// backward) and the ratio fused / separate. The kernels' instruction set is chosen once per process:
// run again with LOCO_FUSED_BN_RELU=baseline for the baseline copy.
//
//   node dist/bench/bn-relu.js [--repeats 5] [--batch 64]
import { F, type Tensor, keep, ones, rand, randn, scope, setNumThreads, zeros } from "../src/torch";

interface Shape {
  name: string;
  channels: number;
  size: number;
  layout: "channelsLast" | "contiguous";
  residual: boolean;
}

// ResNet-50 at 224 px: the stem; per stage, a block's bn1/bn2 (width w, + ReLU) and bn3 (4w, + the
// residual and ReLU).
const SHAPES: Shape[] = [
  { name: "stem", channels: 64, size: 112, layout: "channelsLast", residual: false },
  { name: "layer1 bn2", channels: 64, size: 56, layout: "channelsLast", residual: false },
  { name: "layer1 bn3", channels: 256, size: 56, layout: "channelsLast", residual: true },
  { name: "layer2 bn2", channels: 128, size: 28, layout: "channelsLast", residual: false },
  { name: "layer2 bn3", channels: 512, size: 28, layout: "channelsLast", residual: true },
  { name: "layer3 bn2", channels: 256, size: 14, layout: "channelsLast", residual: false },
  { name: "layer3 bn3", channels: 1024, size: 14, layout: "channelsLast", residual: true },
  { name: "layer4 bn2", channels: 512, size: 7, layout: "contiguous", residual: false },
  { name: "layer4 bn3", channels: 2048, size: 7, layout: "contiguous", residual: true },
];

/** Forward and backward milliseconds of one call. */
function timeOnce(s: Shape, inputs: { x: Tensor; r: Tensor; g: Tensor; w: Tensor; b: Tensor }): [number, number] {
  return scope(() => {
    const x = inputs.x.detach().requiresGrad_();
    const w = inputs.w.detach().requiresGrad_();
    const b = inputs.b.detach().requiresGrad_();
    const r = inputs.r.detach().requiresGrad_();
    const t0 = performance.now();
    const y = F.batchNormReLU(x, zeros([s.channels]), ones([s.channels]), {
      weight: w,
      bias: b,
      residual: s.residual ? r : null,
      training: true,
    });
    const t1 = performance.now();
    y.backward(inputs.g);
    const t2 = performance.now();
    return [t1 - t0, t2 - t1];
  });
}

function main(): void {
  const argv = process.argv.slice(2);
  const flag = (name: string, fallback: string): string => {
    const i = argv.indexOf(name);
    return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback;
  };
  const repeats = Number(flag("--repeats", "5"));
  const batch = Number(flag("--batch", "64"));
  setNumThreads(Number(process.env.LOCO_NUM_THREADS ?? 2));
  const rows = [];
  for (const s of SHAPES) {
    const shape = [batch, s.channels, s.size, s.size];
    const inputs = scope(() => ({
      x: keep(randn(shape).mul(2).add(0.5).contiguous(s.layout)),
      r: keep(randn(shape).contiguous(s.layout)),
      g: keep(randn(shape).contiguous(s.layout)),
      w: keep(rand([s.channels]).add(0.5)),
      b: keep(randn([s.channels]).mul(0.1)),
    }));
    const best = { fused: [Infinity, Infinity], separate: [Infinity, Infinity] };
    for (let i = 0; i < repeats + 1; i++) {
      for (const side of i % 2 ? (["fused", "separate"] as const) : (["separate", "fused"] as const)) {
        F.setFusedBatchNormReLU(side === "fused");
        const [fwd, bwd] = timeOnce(s, inputs);
        if (i === 0) continue; // warm-up: first touches of the outputs' memory
        best[side] = [Math.min(best[side][0], fwd), Math.min(best[side][1], bwd)];
      }
    }
    F.setFusedBatchNormReLU(true);
    for (const t of Object.values(inputs)) t.dispose();
    rows.push({
      shape: s.name,
      dims: shape,
      layout: s.layout,
      residual: s.residual,
      separateMs: { forward: best.separate[0], backward: best.separate[1] },
      fusedMs: { forward: best.fused[0], backward: best.fused[1] },
      ratio: {
        forward: best.fused[0] / best.separate[0],
        backward: best.fused[1] / best.separate[1],
        total: (best.fused[0] + best.fused[1]) / (best.separate[0] + best.separate[1]),
      },
    });
  }
  const kernels = process.env.LOCO_FUSED_BN_RELU === "baseline" ? "baseline" : "this CPU's (AVX2 where available)";
  console.log(JSON.stringify({ repeats, batch, threads: Number(process.env.LOCO_NUM_THREADS ?? 2), kernels, rows }));
}

main();
