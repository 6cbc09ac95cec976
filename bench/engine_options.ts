// Command-line options of `npm run bench:engine` (bench/engine.ts).
import * as fs from "node:fs";
import * as path from "node:path";
import { getNumThreads } from "../src/torch";

export type Format = "channels_last" | "contiguous";
export type ModelName = "resnet18" | "resnet50";
/** PyTorch as installed (glibc malloc), and with the tuned allocator (jemalloc, no decay). */
export type PyVariant = "pytorch" | "pytorchTuned";

export interface ModelSpec {
  /** Encoder output features (the head's input). */
  features: number;
  /** The projection head's hidden width. */
  hidden: number;
  imageSize: number;
  /** Images per step by default (2x views). */
  batchSize: number;
  label: string;
}

export const MODELS: Record<ModelName, ModelSpec> = {
  resnet18: {
    features: 512,
    hidden: 512,
    imageSize: 32,
    batchSize: 128,
    label: "CIFAR ResNet-18 + MLP head, 32 px",
  },
  resnet50: {
    features: 2048,
    hidden: 2048,
    imageSize: 224,
    batchSize: 32,
    label: "ResNet-50 + MLP head, 224 px",
  },
};

export interface Options {
  json: boolean;
  models: ModelName[];
  tiny: boolean;
  variants: PyVariant[];
  /** Images per step for every model; undefined: each model's default (MODELS). */
  batchSize: number | undefined;
  steps: number;
  warmup: number;
  threads: number;
  formats: Format[];
  rounds: number;
  tinyIters: number;
  repeats: number;
  python: string;
  jemalloc: string | undefined;
  profile: boolean;
  /** "wall": elapsed time; "cpu": the process's CPU time, all threads (steadier on a loaded machine). */
  clock: "wall" | "cpu";
  /**
   * Paired mode (bench/engine_paired.ts): this many turns of one step per side, persistent workers
   * taking turns, instead of rounds of --steps steps; undefined: rounds.
   */
  paired: number | undefined;
}

/** Turns of `--paired` given without a number. */
export const DEFAULT_PAIRS = 20;

export const USAGE = `usage: node dist/bench/engine.js [--json] [--models resnet18,resnet50] [--no-tiny] [--pytorch installed,tuned]
       [--batch-size N (default: 128 for resnet18, 32 for resnet50)] [--steps 5] [--warmup 2] [--rounds 1]
       [--formats channels_last,contiguous] [--threads N] [--tiny-iters 200000] [--repeats 5]
       [--clock wall|cpu] [--python /usr/bin/python3] [--jemalloc PATH] [--profile]
       [--paired [N] (default ${DEFAULT_PAIRS}): one persistent worker per side, warmed up, taking turns step by step
                     N times (the first side alternates); ratios per pair; one format (default channels_last);
                     --steps and --rounds do not apply]`;

/** The tuned allocator's setting: jemalloc never returning memory (PyTorch's CPU performance guide). */
export const JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1";

/** bench/engine_pytorch.py next to the compiled bench, or in the source tree. */
export function pythonScript(): string {
  const candidates = [
    path.join(__dirname, "engine_pytorch.py"),
    path.resolve(__dirname, "../../bench/engine_pytorch.py"),
  ];
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) throw new Error(`bench: cannot find engine_pytorch.py (looked in ${candidates.join(", ")})`);
  return found;
}

/** The environment of a PyTorch run: its thread count, and jemalloc for the tuned variant. */
export function pythonEnv(o: Options, variant: PyVariant): NodeJS.ProcessEnv {
  const env = { ...process.env, OMP_NUM_THREADS: String(o.threads) };
  if (variant === "pytorchTuned") Object.assign(env, { LD_PRELOAD: o.jemalloc, MALLOC_CONF: JEMALLOC_CONF });
  return env;
}

/** Debian's libjemalloc2 (scripts/setup.sh installs it). */
export function findJemalloc(): string | undefined {
  const dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"];
  return dirs.map((d) => `${d}/libjemalloc.so.2`).find((p) => fs.existsSync(p));
}

function list<T extends string>(flag: string, raw: string | undefined, allowed: Record<string, T>): T[] {
  const items = (raw ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length === 0) throw new RangeError(`${flag}: give at least one of ${Object.keys(allowed).join(", ")}`);
  const out: T[] = [];
  for (const item of items) {
    const v = allowed[item];
    if (v === undefined)
      throw new RangeError(`${flag}: unknown value '${item}' (expected ${Object.keys(allowed).join(", ")})`);
    if (!out.includes(v)) out.push(v);
  }
  return out;
}

export function parseArgs(argv: string[]): Options {
  const o: Options = {
    json: false,
    models: ["resnet18", "resnet50"],
    tiny: true,
    variants: ["pytorch", "pytorchTuned"],
    batchSize: undefined,
    steps: 5,
    warmup: 2,
    threads: getNumThreads(),
    formats: ["channels_last", "contiguous"],
    rounds: 1,
    tinyIters: 200000,
    repeats: 5,
    python: process.env.LOCO_BENCH_PYTHON ?? "/usr/bin/python3",
    jemalloc: process.env.LOCO_BENCH_JEMALLOC,
    profile: false,
    clock: "wall",
    paired: undefined,
  };
  let formatsGiven = false;
  const int = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new RangeError(`${name} expects an integer >= ${min}, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf("=");
    const key = eq > 0 ? a.slice(0, eq) : a;
    const value = (): string | undefined => (eq > 0 ? a.slice(eq + 1) : argv[++i]);
    switch (key) {
      case "--json":
        o.json = true;
        break;
      case "--models":
        o.models = list(key, value(), { resnet18: "resnet18", resnet50: "resnet50" } as const);
        break;
      case "--no-tiny":
        o.tiny = false;
        break;
      case "--pytorch":
        o.variants = list(key, value(), { installed: "pytorch", tuned: "pytorchTuned" } as const);
        break;
      case "--batch-size":
        o.batchSize = int(key, value(), 2);
        break;
      case "--steps":
        o.steps = int(key, value(), 1);
        break;
      case "--warmup":
        o.warmup = int(key, value(), 0);
        break;
      case "--threads":
        o.threads = int(key, value(), 1);
        break;
      case "--rounds":
        o.rounds = int(key, value(), 1);
        break;
      case "--tiny-iters":
        o.tinyIters = int(key, value(), 1000);
        break;
      case "--repeats":
        o.repeats = int(key, value(), 1);
        break;
      case "--python":
        o.python = value() ?? o.python;
        break;
      case "--jemalloc":
        o.jemalloc = value();
        break;
      case "--clock":
        o.clock = list(key, value(), { wall: "wall", cpu: "cpu" } as const)[0];
        break;
      case "--profile":
        o.profile = true;
        break;
      case "--paired": {
        // The count is optional: `--paired`, `--paired 30` and `--paired=30`.
        if (eq > 0) o.paired = int(key, a.slice(eq + 1), 1);
        else if (/^\d+$/.test(argv[i + 1] ?? "")) o.paired = int(key, argv[++i], 1);
        else o.paired = DEFAULT_PAIRS;
        break;
      }
      case "--formats":
        formatsGiven = true;
        o.formats = list(key, value()?.replace(/-/g, "_"), {
          channels_last: "channels_last",
          contiguous: "contiguous",
        } as const);
        break;
      case "--help":
      case "-h":
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        throw new RangeError(`unknown option '${a}'`);
    }
  }
  if (o.paired !== undefined) {
    if (!formatsGiven) o.formats = ["channels_last"];
    if (o.formats.length > 1)
      throw new RangeError(`--paired compares one memory format per run: give --formats channels_last or contiguous`);
  }
  if (o.variants.includes("pytorchTuned")) {
    o.jemalloc ??= findJemalloc();
    if (o.jemalloc === undefined || !fs.existsSync(o.jemalloc)) {
      throw new RangeError(
        `--jemalloc: ${o.jemalloc ?? "libjemalloc.so.2"} not found; install Debian's libjemalloc2 (scripts/setup.sh does), ` +
          `give its path with --jemalloc PATH, or measure PyTorch as installed only with --pytorch installed`,
      );
    }
  }
  return o;
}
