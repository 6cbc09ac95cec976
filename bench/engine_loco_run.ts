// loco's SimCLR-style step of `npm run bench:engine` alone in this process, for tools that run it
// under a preloaded library (bench/engine_ops.ts runs it under bench/opcount.cpp). Prints one JSON
// line: bench/engine_loco.ts's StepResult.
//
//   node dist/bench/engine_loco_run.js --model resnet50 --format channels_last --batch-size 4 \
//     --steps 2 --warmup 1 --threads 1 --clock cpu [--phase-markers]
//
// --phase-markers calls `linspace` at each phase boundary (before the forward, before backward,
// before the optimizer step, after it): the markers bench/opcount.cpp splits a step's phases by.
// --layer4-channels-last runs layer4 channels-last too (loco keeps it NCHW in channels-last mode).
import { linspace, setNumThreads } from "../src/torch";
import { clockFor, locoStep } from "./engine_loco";
import { MODELS, type Format, type ModelName } from "./engine_options";

const USAGE =
  "usage: node dist/bench/engine_loco_run.js [--model resnet18|resnet50] [--format channels_last|contiguous]\n" +
  "       [--batch-size N] [--steps 2] [--warmup 1] [--threads 1] [--clock wall|cpu] [--phase-markers]\n" +
  "       [--layer4-channels-last]";

interface RunOptions {
  model: ModelName;
  format: Format;
  batchSize: number | undefined;
  steps: number;
  warmup: number;
  threads: number;
  clock: "wall" | "cpu";
  markers: boolean;
  layer4ChannelsLast: boolean;
}

function oneOf<T extends string>(flag: string, value: string | undefined, allowed: readonly T[]): T {
  const found = allowed.find((a) => a === value);
  if (found === undefined) throw new RangeError(`${flag}: expected one of ${allowed.join(", ")}, got ${value}`);
  return found;
}

function count(flag: string, value: string | undefined, min: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new RangeError(`${flag} expects an integer >= ${min}, got ${value}`);
  return n;
}

function parseRunArgs(argv: string[]): RunOptions {
  const o: RunOptions = {
    model: "resnet18",
    format: "channels_last",
    batchSize: undefined,
    steps: 2,
    warmup: 1,
    threads: 1,
    clock: "wall",
    markers: false,
    layer4ChannelsLast: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string | undefined => argv[++i];
    if (flag === "--model") o.model = oneOf(flag, value(), ["resnet18", "resnet50"] as const);
    else if (flag === "--format") o.format = oneOf(flag, value(), ["channels_last", "contiguous"] as const);
    else if (flag === "--batch-size") o.batchSize = count(flag, value(), 2);
    else if (flag === "--steps") o.steps = count(flag, value(), 1);
    else if (flag === "--warmup") o.warmup = count(flag, value(), 0);
    else if (flag === "--threads") o.threads = count(flag, value(), 1);
    else if (flag === "--clock") o.clock = oneOf(flag, value(), ["wall", "cpu"] as const);
    else if (flag === "--phase-markers") o.markers = true;
    else if (flag === "--layer4-channels-last") o.layer4ChannelsLast = true;
    else if (flag === "--help" || flag === "-h") {
      console.log(USAGE);
      process.exit(0);
    } else throw new RangeError(`unknown option '${flag}'`);
  }
  return o;
}

async function main(): Promise<void> {
  const o = parseRunArgs(process.argv.slice(2));
  setNumThreads(o.threads);
  const markPhase = o.markers ? () => linspace(0, 1, 2).dispose() : undefined;
  const batch = o.batchSize ?? MODELS[o.model].batchSize;
  const extra = { markPhase, layer4ChannelsLast: o.layer4ChannelsLast };
  const result = await locoStep(o.model, o.format, batch, o.steps, o.warmup, clockFor(o.clock), extra);
  console.log(JSON.stringify(result));
}

main().catch((error: unknown) => {
  const usage = error instanceof RangeError ? `\n${USAGE}` : "";
  console.error(`${error instanceof Error ? error.message : String(error)}${usage}`);
  process.exit(error instanceof RangeError ? 2 : 1);
});
