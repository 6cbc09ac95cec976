// Run by test/batchnorm-relu.oracle.test.ts in a child process (the kernels' instruction set is
// chosen once per process, LOCO_FUSED_BN_RELU=baseline forcing the baseline copy): one fused
// forward and backward, with and without a residual, in both layouts, written to argv[2] as
// safetensors. (The test runner also runs this file on its own, without argv[2]: then it only
// checks that the fused node runs.)
import { F, Generator, type Tensor, randn, rand, saveSafetensors, zeros, ones } from "../../src/torch";

const gen = new Generator(2024);
const out = new Map<string, Tensor>();
for (const layout of ["contiguous", "channelsLast"] as const) {
  for (const withResidual of [false, true]) {
    const name = `${layout}.${withResidual ? "residual" : "plain"}`;
    // 37 channels and 5x7 maps: the vector loops' remainders run too.
    const shape = [6, 37, 5, 7];
    const x = randn(shape, { generator: gen }).mul(2).add(0.3).contiguous(layout).requiresGrad_();
    const r = randn(shape, { generator: gen }).contiguous(layout).requiresGrad_();
    const w = rand([37], { generator: gen }).add(0.5).requiresGrad_();
    const b = randn([37], { generator: gen }).requiresGrad_();
    const rm = zeros([37]);
    const rv = ones([37]);
    const y = F.batchNormReLU(x, rm, rv, { weight: w, bias: b, residual: withResidual ? r : null, training: true });
    if (!/BatchNormReLU/.test(y.gradFnName ?? "")) throw new Error(`${name}: the fused node did not run`);
    y.backward(randn(shape, { generator: gen }).contiguous(layout));
    out.set(`${name}.y`, y.detach().contiguous());
    out.set(`${name}.dx`, x.grad!.contiguous());
    if (withResidual) out.set(`${name}.dr`, r.grad!.contiguous());
    out.set(`${name}.dw`, w.grad!);
    out.set(`${name}.db`, b.grad!);
    out.set(`${name}.rm`, rm);
    out.set(`${name}.rv`, rv);
  }
}
if (process.argv[2] !== undefined) saveSafetensors(process.argv[2], out);
