// loco's side of `npm run bench:engine` (bench/engine.ts): the tiny op and the SimCLR-style step.
import { keep, memoryStats, rand, randn, resetPeakMemory, scope, type Tensor } from "../src/torch";
import { BatchNorm1d, Linear, ReLU, Sequential } from "../src/nn";
import { SGD } from "../src/optim";
import { BasicBlock, Bottleneck, resnet18, resnet50 } from "../src/models";
import { ntXent } from "../src/learning/ntxent";
import { MODELS, type Format, type ModelName } from "./engine_options";

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Milliseconds by the wall clock, or of CPU time used by this process (all threads). */
export function clockFor(kind: "wall" | "cpu"): () => number {
  if (kind === "wall") return () => performance.now();
  return () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e3;
  };
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Per-op overhead of `a + b` on [2, 2] tensors: with `release()` of each result (as Python's
 * refcount frees the previous `c`), and with results freed by scope() per 1000 ops. Each loop ends
 * with one event-loop turn, so finalizers deferred by the GC are paid for. Best of `repeats` loops.
 */
export async function locoTinyOp(iters: number, repeats: number): Promise<{ releaseUs: number; scopeUs: number }> {
  const a = keep(rand([2, 2]));
  const b = keep(rand([2, 2]));
  let releaseUs = Infinity;
  let scopeUs = Infinity;
  const chunks = Math.max(1, Math.round(iters / 1000));
  for (let r = 0; r < repeats; r++) {
    let t0 = performance.now();
    for (let i = 0; i < iters; i++) a.add(b).release();
    await nextTurn();
    releaseUs = Math.min(releaseUs, ((performance.now() - t0) * 1e3) / iters);

    t0 = performance.now();
    for (let c = 0; c < chunks; c++) {
      scope(() => {
        for (let i = 0; i < 1000; i++) a.add(b);
      });
    }
    await nextTurn();
    scopeUs = Math.min(scopeUs, ((performance.now() - t0) * 1e3) / (chunks * 1000));
  }
  a.dispose();
  b.dispose();
  return { releaseUs, scopeUs };
}

/** The bench's model: the encoder (CIFAR ResNet-18 or ImageNet ResNet-50) and SimCLR's MLP head. */
export function benchModel(
  model: ModelName,
  channelsLast: boolean,
): { encoder: ReturnType<typeof resnet18>; head: Sequential } {
  const spec = MODELS[model];
  const encoder =
    model === "resnet18"
      ? resnet18({ stem: "cifar", numClasses: 0, channelsLast })
      : resnet50({ stem: "imagenet", numClasses: 0, channelsLast });
  const head = new Sequential(
    new Linear(spec.features, spec.hidden),
    new BatchNorm1d(spec.hidden),
    new ReLU(true),
    new Linear(spec.hidden, 128),
  );
  return { encoder, head };
}

export interface StepResult {
  medianMs: number;
  timesMs: number[];
  /** Median time of each phase: forward (encoder, head, loss), backward, optimizer step. */
  phasesMs: { forward: number; backward: number; optimizer: number };
  loss: number;
  peakMB: number;
  /** Minor page faults per timed step (median): memory the allocator had to fault in again. */
  faultsPerStep: number;
}

/** One timed step: its time, phases, minor page faults, loss and monotonic start/end (seconds). */
export interface OneStep {
  ms: number;
  phasesMs: { forward: number; backward: number; optimizer: number };
  faults: number;
  loss: number;
  startS: number;
  endS: number;
}

/** Seconds of CLOCK_MONOTONIC, the clock Python's time.monotonic() reads (bench/engine_paired.ts). */
export const monotonicS = (): number => Number(process.hrtime.bigint()) / 1e9;

export interface LocoStepper {
  step(): Promise<OneStep>;
  /** Peak tensor memory since the stepper was built (MiB). */
  peakMB(): number;
  dispose(): void;
}

/**
 * A SimCLR-style step (the same as bench/engine_pytorch.py's): encoder + projection head, NT-Xent
 * (τ 0.5) over the two views of `batchSize` random images, backward, SGD (momentum 0.9, weight
 * decay 1e-6); `step()` runs and times one. `extra.markPhase`, when given, is called before the
 * forward, before backward, before the optimizer step and after it (bench/engine_ops.ts marks
 * phases for bench/opcount.cpp with it); `extra.layer4ChannelsLast` runs layer4 channels-last too
 * in channels-last mode (loco keeps it NCHW; for comparisons).
 */
export function locoStepper(
  model: ModelName,
  format: Format,
  batchSize: number,
  clock: () => number,
  extra: { markPhase?: () => void; layer4ChannelsLast?: boolean } = {},
): LocoStepper {
  const markPhase = extra.markPhase ?? (() => undefined);
  const spec = MODELS[model];
  const channelsLast = format === "channels_last";
  const { encoder, head } = benchModel(model, channelsLast);
  if (channelsLast && extra.layer4ChannelsLast) {
    encoder.layer4.toMemoryFormat("channelsLast");
    for (const block of encoder.layer4.children()) {
      if (block instanceof BasicBlock || block instanceof Bottleneck) block.inputFormat = "channelsLast";
    }
  }
  const params = [...encoder.parameters(), ...head.parameters()];
  const opt = new SGD(params, { lr: 0.05, momentum: 0.9, weightDecay: 1e-6 });
  // 2B views: rows i and i+B are the two views of image i.
  const views = keep(
    scope(() => {
      const v = randn([2 * batchSize, 3, spec.imageSize, spec.imageSize]);
      return channelsLast ? v.contiguous("channelsLast") : v;
    }),
  );
  resetPeakMemory();

  const step = async (): Promise<OneStep> => {
    const faults0 = process.resourceUsage().minorPageFault;
    const startS = monotonicS();
    markPhase();
    const t0 = clock();
    opt.zeroGrad();
    // The forward pass's handles are freed when its scope closes, before backward: activations
    // then live only in the autograd graph, which frees each one as backward consumes it (as
    // PyTorch does).
    const lossTensor: Tensor = scope(() => ntXent(head.forward(encoder.forward(views)), 0.5));
    markPhase();
    const t1 = clock();
    lossTensor.backward();
    const loss = lossTensor.item();
    lossTensor.dispose();
    markPhase();
    const t2 = clock();
    opt.step();
    await nextTurn(); // finalizers deferred by the GC run here: they are part of the cost
    markPhase();
    const t4 = clock();
    const endS = monotonicS();
    return {
      ms: t4 - t0,
      phasesMs: { forward: t1 - t0, backward: t2 - t1, optimizer: t4 - t2 },
      faults: process.resourceUsage().minorPageFault - faults0,
      loss,
      startS,
      endS,
    };
  };
  return {
    step,
    peakMB: () => memoryStats().peakBytes / 2 ** 20,
    dispose: () => {
      views.dispose();
      opt.dispose();
      encoder.dispose();
      head.dispose();
    },
  };
}

/** `locoStepper`'s step: the median of `steps` timed steps after `warmup` steps. */
export async function locoStep(
  model: ModelName,
  format: Format,
  batchSize: number,
  steps: number,
  warmup: number,
  clock: () => number,
  extra: { markPhase?: () => void; layer4ChannelsLast?: boolean } = {},
): Promise<StepResult> {
  const stepper = locoStepper(model, format, batchSize, clock, extra);
  const runs: OneStep[] = [];
  for (let i = 0; i < warmup + steps; i++) {
    const s = await stepper.step();
    if (i >= warmup) runs.push(s);
  }
  const loss = runs[runs.length - 1].loss;
  if (!Number.isFinite(loss)) throw new Error("bench: loco's loss is not finite");
  const peakMB = stepper.peakMB();
  stepper.dispose();
  const phase = (k: keyof OneStep["phasesMs"]): number => median(runs.map((r) => r.phasesMs[k]));
  return {
    medianMs: median(runs.map((r) => r.ms)),
    timesMs: runs.map((r) => r.ms),
    phasesMs: { forward: phase("forward"), backward: phase("backward"), optimizer: phase("optimizer") },
    loss,
    peakMB,
    faultsPerStep: median(runs.map((r) => r.faults)),
  };
}
