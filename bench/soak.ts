// `node dist/bench/soak.js`: a memory soak of the real training loop (a stand-in for a 2-hour run).
//
// Trains --steps small steps (default 5,000) with the trainer of `loco train` itself: data loader
// worker, augmentations, forward/backward, finiteness checks, optimizer, LR schedule, metrics,
// and an atomic checkpoint at every epoch end. The encoder is a ResNet-18 of width --width (2) on
// --batch-size (8) Fashion-MNIST images of a --train-subset (400) subset, so 50 steps an epoch.
// Every --every (500) steps it prints the process's resident memory (RSS, libtorch and the worker
// thread included) and the JS heap; at the end, the largest deviation of RSS from the first sample
// (taken at step --every, after warm-up). Target: within 5% (exit status 1 otherwise). The linear
// readout after training allocates its feature caches: its RSS is printed apart, not checked.
//
// Options: --steps N, --every N, --width N, --batch-size N, --train-subset N, --threads N (1),
// --data-dir DIR (/usr/share/datasets/fashion-mnist), --keep-run (keep the run directory), --json.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { TrainInput } from "../src/learning/options";
import { train } from "../src/learning/trainer";
import { Progress } from "../src/learning/progress";
import { memoryStats } from "../src/torch";

interface Sample {
  step: number;
  rssMiB: number;
  heapMiB: number;
  /** Bytes held by libtorch tensors (the addon's counting allocator), and live tensor handles. */
  tensorMiB: number;
  liveTensors: number;
  seconds: number;
}

function option(argv: string[], name: string, fallback: number): number {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(argv[i + 1]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name}: expected a positive integer, got ${argv[i + 1]}`);
  return v;
}

async function main(argv: string[]): Promise<void> {
  const steps = option(argv, "steps", 5000);
  const every = option(argv, "every", 500);
  const batchSize = option(argv, "batch-size", 8);
  const subset = option(argv, "train-subset", 400);
  const threads = option(argv, "threads", 1);
  const width = option(argv, "width", 2);
  const dataIndex = argv.indexOf("--data-dir");
  const dataDir = dataIndex >= 0 ? argv[dataIndex + 1] : "/usr/share/datasets/fashion-mnist";
  const json = argv.includes("--json");
  const stepsPerEpoch = Math.floor(subset / batchSize);
  if (steps % stepsPerEpoch !== 0) {
    throw new Error(
      `--steps ${steps} must be a multiple of the ${stepsPerEpoch} steps of an epoch (--train-subset / --batch-size)`,
    );
  }
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), "loco-soak-"));
  const input: TrainInput = {
    dataset: "fashion-mnist",
    dataDir,
    trainSubset: subset,
    batchSize,
    width,
    epochs: steps / stepsPerEpoch,
    warmupEpochs: 1,
    knnEvery: 0,
    readoutEpochs: 1,
    readoutTrainSize: 256,
    baselines: "none",
    threads,
    workers: 1,
    keepCheckpoints: 2,
    runDir,
  };

  const samples: Sample[] = [];
  const started = performance.now();
  const sample = (step: number): void => {
    const m = process.memoryUsage();
    const t = memoryStats();
    const s = {
      step,
      rssMiB: m.rss / 2 ** 20,
      heapMiB: m.heapUsed / 2 ** 20,
      tensorMiB: t.currentBytes / 2 ** 20,
      liveTensors: t.liveTensors,
      seconds: (performance.now() - started) / 1000,
    };
    samples.push(s);
    if (!json) {
      console.log(
        `step ${String(step).padStart(5)}  RSS ${s.rssMiB.toFixed(1).padStart(7)} MiB  JS heap ${s.heapMiB.toFixed(1).padStart(6)} MiB  ` +
          `tensors ${s.tensorMiB.toFixed(1).padStart(6)} MiB in ${s.liveTensors} handles  ${s.seconds.toFixed(0)} s`,
      );
    }
  };
  const sink = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;
  if (!json)
    console.log(
      `soak: ${steps} steps of resnet18 width ${width}, batch ${batchSize}, ${threads} thread(s); RSS every ${every} steps`,
    );
  // The hook runs after each step's backward pass (before its update), at steps every, 2·every, ….
  const outcome = await train(input, {
    log: () => {},
    progress: new Progress(sink),
    afterBackward: ({ step }) => {
      if (step % every === 0) sample(step);
    },
  });
  if (outcome.results === null) throw new Error("the soak run was interrupted");
  const afterReadout = process.memoryUsage().rss / 2 ** 20;

  const base = samples[0];
  const later = samples.slice(1);
  const deviation = Math.max(...later.map((s) => Math.abs(s.rssMiB - base.rssMiB) / base.rssMiB));
  const growth = later.at(-1)!.rssMiB - base.rssMiB;
  const seconds = (performance.now() - started) / 1000;
  const summary = {
    steps,
    every,
    baselineStep: base.step,
    baselineRssMiB: +base.rssMiB.toFixed(1),
    maxDeviationPercent: +(deviation * 100).toFixed(2),
    finalGrowthMiB: +growth.toFixed(1),
    flatWithin5Percent: deviation <= 0.05,
    stepsPerSecond: +(later.at(-1)!.step / later.at(-1)!.seconds).toFixed(1),
    rssAfterReadoutMiB: +afterReadout.toFixed(1),
    seconds: +seconds.toFixed(1),
    samples: samples.map((s) => ({
      step: s.step,
      rssMiB: +s.rssMiB.toFixed(1),
      heapMiB: +s.heapMiB.toFixed(1),
      tensorMiB: +s.tensorMiB.toFixed(2),
      liveTensors: s.liveTensors,
    })),
  };
  if (json) console.log(JSON.stringify(summary));
  else {
    console.log(
      `max RSS deviation from step ${base.step} (${base.rssMiB.toFixed(1)} MiB): ${summary.maxDeviationPercent}% ` +
        `(final ${growth >= 0 ? "+" : ""}${growth.toFixed(1)} MiB): ${summary.flatWithin5Percent ? "flat within 5%" : "NOT flat within 5%"}`,
    );
    console.log(
      `${summary.stepsPerSecond} steps/s; RSS after the final readout ${afterReadout.toFixed(1)} MiB (not part of the check); ${seconds.toFixed(0)} s in all`,
    );
  }
  if (argv.includes("--keep-run")) console.error(`run directory: ${runDir}`);
  else fs.rmSync(runDir, { recursive: true, force: true });
  process.exitCode = summary.flatWithin5Percent ? 0 : 1;
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error((error as Error).stack ?? String(error));
  process.exitCode = 1;
});
