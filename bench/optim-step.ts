// `node dist/bench/optim-step.js`: the optimizer phase of `npm run bench:engine`'s step alone — SGD
// (momentum 0.9, weight decay 1e-6, as the step) over the parameters of ResNet-50 + its MLP head
// (or the CIFAR ResNet-18's) with fixed random gradients, timed step by step. Prints one JSON line:
// median wall and CPU milliseconds per step, minor page faults and tensor allocations per step, and a checksum of the
// parameters after the run (equal checksums: the same arithmetic). To compare two builds, run each
// one's copy alternately (their ratios measured in one session mean something on a loaded machine).
//
//   node dist/bench/optim-step.js [--model resnet50|resnet18] [--steps 30] [--warmup 3] [--channels-last]
import { keep, manualSeed, memoryStats, noGrad, randn, scope, setNumThreads } from "../src/torch";
import { SGD } from "../src/optim";
import { benchModel, median } from "./engine_loco";
import { MODELS, type ModelName } from "./engine_options";

function main(): void {
  const argv = process.argv.slice(2);
  const flag = (name: string, fallback: string): string => {
    const i = argv.indexOf(name);
    return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback;
  };
  const model = flag("--model", "resnet50") as ModelName;
  if (!(model in MODELS)) throw new RangeError(`--model: expected resnet18 or resnet50, got ${model}`);
  const steps = Number(flag("--steps", "30"));
  const warmup = Number(flag("--warmup", "3"));
  const channelsLast = argv.includes("--channels-last");
  setNumThreads(Number(process.env.LOCO_NUM_THREADS ?? 1));
  manualSeed(0); // the same parameters and gradients in every run, so checksums compare
  const { encoder, head } = benchModel(model, channelsLast);
  const params = [...encoder.parameters(), ...head.parameters()];
  const grads = params.map((p) =>
    keep(
      scope(() =>
        randn(p.shape)
          .mul(1e-2)
          .contiguous(p.isContiguous() ? "contiguous" : "channelsLast"),
      ),
    ),
  );
  const opt = new SGD(params, { lr: 0.05, momentum: 0.9, weightDecay: 1e-6 });
  const wall: number[] = [];
  const cpu: number[] = [];
  const faults: number[] = [];
  const allocations: number[] = [];
  for (let i = 0; i < warmup + steps; i++) {
    params.forEach((p, k) => (p.grad = grads[k]));
    const a0 = memoryStats().allocations;
    const f0 = process.resourceUsage().minorPageFault;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    opt.step();
    const t1 = performance.now();
    const c1 = process.cpuUsage(c0);
    if (i >= warmup) {
      wall.push(t1 - t0);
      cpu.push((c1.user + c1.system) / 1e3);
      faults.push(process.resourceUsage().minorPageFault - f0);
      allocations.push(memoryStats().allocations - a0);
    }
  }
  const checksum = noGrad(() => scope(() => params.reduce((s, p) => s + p.double().abs().sum().item(), 0)));
  console.log(
    JSON.stringify({
      model,
      params: params.length,
      steps,
      wallMs: median(wall),
      cpuMs: median(cpu),
      faultsPerStep: median(faults),
      allocationsPerStep: median(allocations),
      checksum,
    }),
  );
  opt.dispose();
  encoder.dispose();
  head.dispose();
}

main();
