// `node dist/bench/data.js`: throughput of the data pipeline on one core.
//
//   augment  Augmentation.run on a batch of --batch-size uint8 images on the calling thread with one
//            libtorch thread: SimCLR's CIFAR preset at 32x32 (3 channels), loco's grayscale preset
//            at 28x28 (1 channel, Fashion-MNIST's shape), SimCLR's ImageNet preset (with blur) at
//            96x96 (STL-10's shape). Augmented views per second, median of --repeats timed batches
//            after one warm-up batch.
//   loader   DataLoader with one worker thread (one libtorch thread) producing two views per image,
//            consumed by a caller that does nothing else: images per second (each image = two
//            views), and the caller's cost per batch once batches are ready (wrapping the worker's
//            buffers in tensors), the floor of the `waitMs` a trainer sees.
//
//   stream   the streaming image-folder loader (src/data/stream.ts) on a generated folder of JPEGs
//            of mixed sizes (160–500 px a side, like ImageNet's; bench/make-folder.ts), SimCLR's
//            ImageNet preset at 224 and at 96 px, with 1 and 2 worker threads: images per second
//            (two views each, decoded, cropped and augmented) over --stream-batches batches after one
//            warm-up batch per worker, and the process's resident memory (RSS, workers included) sampled after
//            every batch: start (after the warm-up batch), max and end. Each case (and the epoch)
//            runs in a fresh node process, so that its RSS is its own.
//   epoch    one whole epoch of the folder (--epoch SIZE:WORKERS, default 96:2; or of
//            --epoch-images images, a seeded random subset; default all) with RSS sampled after
//            every batch: start, max, end and every k-th sample (flat once warm: an image's pixels
//            live only while its batch is prepared; memory does not grow with the epoch). Beside
//            RSS, the bytes libtorch's allocator holds in tensors and keeps cached (process-wide,
//            the workers' included).
//   wait     the trainer's data-wait share (--wait SIZE:WORKERS:STEPS, default 96:2:30, none to
//            skip): SimCLR on torchvision's ResNet-18 (--wait-width 64) for STEPS steps on the
//            folder through train() (bench/data-wait.ts): the share over the whole run, the first
//            step's wait and the share in steady state.
//
// augment and loader use random uint8 pixels held in memory (no decoding, no file reads). Options:
// --batch-size N (256), --repeats N (5), --batches N (loader batches timed, 8), --json;
// stream: --folder DIR (a folder written by bench/make-folder.ts; default: one of --folder-count
// images generated once under the OS temp folder), --folder-count N (20000), --stream-batch-size N
// (64), --stream-batches N (8), --stream-cases SIZE:WORKERS,… (224:1,224:2,96:1,96:2), --epoch
// SIZE:WORKERS|none (96:2), --epoch-images N (0: all), --wait SIZE:WORKERS:STEPS|none (96:2:30),
// --wait-width N (64), --only stream|memory (one part only). --json prints one JSON line.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { getNumThreads, memoryStats, setNumThreads, fromTypedArray, type Tensor } from "../src/torch";
import {
  Augmentation,
  type AugmentConfig,
  DataLoader,
  MemoryImages,
  Rng,
  grayscale,
  makeDataset,
  openStreamingFolder,
  simclrCifar,
  simclrImagenet,
  subset,
  writeSyntheticFolder,
} from "../src/data";
import { type WaitRow, benchWait } from "./data-wait";

interface Options {
  batchSize: number;
  repeats: number;
  batches: number;
  json: boolean;
  folder?: string;
  folderCount: number;
  streamBatchSize: number;
  streamBatches: number;
  only?: "stream" | "memory";
  /** Streaming cases as [size, workers]. */
  streamCases: [number, number][];
  /** Internal: run the first stream case (or else the epoch, or else the wait case) in this process and print it as JSON. */
  child: boolean;
  /** The case run for one whole epoch with RSS sampled throughout, or null. */
  epochCase: [number, number] | null;
  /** Images of the folder in the epoch (0: all). */
  epochImages: number;
  /** The trainer's data-wait case as [size, workers, steps], or null. */
  waitCase: [number, number, number] | null;
  waitWidth: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    batchSize: 256,
    repeats: 5,
    batches: 8,
    json: false,
    folderCount: 20000,
    streamBatchSize: 64,
    streamBatches: 8,
    streamCases: [
      [224, 1],
      [224, 2],
      [96, 1],
      [96, 2],
    ],
    epochCase: [96, 2],
    epochImages: 0,
    waitCase: [96, 2, 30],
    waitWidth: 64,
    child: false,
  };
  const sizeWorkers = (c: string, flag: string, text: string): [number, number] => {
    const [size, workers] = c.split(":").map(Number);
    if (!Number.isInteger(size) || size < 8 || !Number.isInteger(workers) || workers < 0)
      throw new Error(`${flag}: expected SIZE:WORKERS (e.g. 224:1 or 96:2), got ${text}`);
    return [size, workers];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const int = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) throw new Error(`${a} needs a positive integer, got ${argv[i]}`);
      return v;
    };
    if (a === "--batch-size") o.batchSize = int();
    else if (a === "--repeats") o.repeats = int();
    else if (a === "--batches") o.batches = int();
    else if (a === "--json") o.json = true;
    else if (a === "--child") o.child = true;
    else if (a === "--folder") o.folder = argv[++i];
    else if (a === "--folder-count") o.folderCount = int();
    else if (a === "--stream-batch-size") o.streamBatchSize = int();
    else if (a === "--stream-batches") o.streamBatches = int();
    else if (a === "--stream-cases") {
      const text = argv[++i] ?? "";
      o.streamCases = text === "" ? [] : text.split(",").map((c) => sizeWorkers(c, a, text));
    } else if (a === "--epoch") {
      const text = argv[++i] ?? "";
      o.epochCase = text === "none" ? null : sizeWorkers(text, a, text);
    } else if (a === "--epoch-images") {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) throw new Error(`${a} needs an integer >= 0, got ${argv[i]}`);
      o.epochImages = v;
    } else if (a === "--wait") {
      const text = argv[++i] ?? "";
      const [size, workers, steps] = text.split(":").map(Number);
      if (text === "none") o.waitCase = null;
      else if (![size, workers, steps].every((v) => Number.isInteger(v) && v >= 0) || size < 8 || steps < 2)
        throw new Error(`${a}: expected SIZE:WORKERS:STEPS (e.g. 96:2:30) or none, got ${text}`);
      else o.waitCase = [size, workers, steps];
    } else if (a === "--wait-width") o.waitWidth = int();
    else if (a === "--only" && (argv[i + 1] === "stream" || argv[i + 1] === "memory"))
      o.only = argv[++i] as "stream" | "memory";
    else
      throw new Error(
        `unknown option ${a}\nusage: node dist/bench/data.js [--batch-size 256] [--repeats 5] [--batches 8] [--json] ` +
          `[--folder DIR] [--folder-count 20000] [--stream-batch-size 64] [--stream-batches 8] [--stream-cases 224:1,224:2,96:1,96:2] ` +
          `[--epoch 96:2|none] [--epoch-images 0] [--wait 96:2:30|none] [--wait-width 64] [--only stream|memory]`,
      );
  }
  return o;
}

interface Case {
  name: string;
  channels: number;
  size: number;
  config: AugmentConfig;
}

const CASES: Case[] = [
  { name: "28x28x1 grayscale", channels: 1, size: 28, config: grayscale(28) },
  { name: "32x32x3 simclrCifar", channels: 3, size: 32, config: simclrCifar(32) },
  { name: "96x96x3 simclrImagenet(96)", channels: 3, size: 96, config: simclrImagenet(96) },
];

function randomPixels(n: number): Uint8Array {
  const rng = new Rng(1);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 4) {
    const v = rng.nextUint32();
    out[i] = v & 0xff;
    out[i + 1] = (v >>> 8) & 0xff;
    out[i + 2] = (v >>> 16) & 0xff;
    out[i + 3] = v >>> 24;
  }
  return out;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

function benchAugment(c: Case, o: Options): number {
  const images: Tensor = fromTypedArray(randomPixels(o.batchSize * c.channels * c.size * c.size), [
    o.batchSize,
    c.channels,
    c.size,
    c.size,
  ]);
  const aug = new Augmentation(c.config);
  aug.run(images, new Rng(0)).output.dispose();
  const times: number[] = [];
  for (let r = 0; r < o.repeats; r++) {
    const t0 = performance.now();
    aug.run(images, new Rng(r + 1)).output.dispose();
    times.push(performance.now() - t0);
  }
  images.dispose();
  return (o.batchSize / median(times)) * 1000;
}

async function benchLoader(c: Case, o: Options): Promise<{ imagesPerS: number; readyWaitMs: number }> {
  const count = o.batchSize * 4;
  const store = MemoryImages.allocate(count, c.channels, c.size, c.size);
  store.data.set(randomPixels(store.data.length));
  const dataset = makeDataset({ name: c.name, images: store, labels: null, classNames: [] });
  const loader = new DataLoader(dataset, {
    batchSize: o.batchSize,
    augment: c.config,
    views: 2,
    workers: 1,
    workerThreads: 1,
    prefetch: 2,
  });
  (await loader.next()).dispose(); // starts the worker, warms it up
  const t0 = performance.now();
  const waits: number[] = [];
  for (let b = 0; b < o.batches; b++) {
    const batch = await loader.next();
    waits.push(batch.waitMs);
    batch.dispose();
  }
  const elapsed = performance.now() - t0;
  // Once the worker is ahead, next() only wraps buffers: give it a head start and measure that.
  await new Promise((r) => setTimeout(r, 4 * (elapsed / o.batches)));
  const ready = await loader.next();
  const readyWaitMs = ready.waitMs;
  ready.dispose();
  await loader.close();
  return { imagesPerS: ((o.batches * o.batchSize) / elapsed) * 1000, readyWaitMs };
}

interface RssSummary {
  /** After the warm-up batches. */
  rssStartMiB: number;
  rssMaxMiB: number;
  rssEndMiB: number;
  /** At the end: bytes libtorch's allocator holds in tensors, and keeps cached for reuse (whole process). */
  tensorEndMiB: number;
  cachedEndMiB: number;
}

interface StreamRow extends RssSummary {
  size: number;
  workers: number;
  batches: number;
  imagesPerS: number;
}

interface EpochRow extends StreamRow {
  images: number;
  seconds: number;
  /** RSS (MiB) every `every` batches, from the first on. */
  rssSamplesMiB: number[];
  every: number;
}

/** The benchmark's folder: --folder, or a generated one kept under the OS temp folder for reuse. */
async function benchFolder(o: Options): Promise<string> {
  if (o.folder !== undefined) return o.folder;
  const dir = path.join(os.tmpdir(), `loco-bench-folder-${o.folderCount}`);
  const done = path.join(dir, ".complete");
  if (!fs.existsSync(done)) {
    fs.rmSync(dir, { recursive: true, force: true });
    process.stderr.write(`writing ${o.folderCount} JPEGs to ${dir} (once) …\n`);
    await writeSyntheticFolder(dir, { classes: 10, train: Math.ceil(o.folderCount / 10), seed: 0 });
    fs.writeFileSync(done, "");
  }
  return dir;
}

const rssMiB = (): number => process.memoryUsage().rss / 2 ** 20;

/**
 * Times `batches` batches of the streaming loader (after one warm-up batch) and samples the
 * process's RSS (workers included) after every batch.
 */
async function timeStream(
  dir: string,
  size: number,
  workers: number,
  o: Options,
  batches: number | "epoch",
): Promise<StreamRow & { samples: number[] }> {
  const folder = openStreamingFolder({ dir, split: "train", size, labelFree: true });
  const images = batches === "epoch" && o.epochImages > 0 ? Math.min(o.epochImages, folder.count) : 0;
  const dataset = images > 0 ? subset(folder, { count: images, seed: 0 }) : folder;
  const loader = new DataLoader(dataset, {
    batchSize: o.streamBatchSize,
    augment: simclrImagenet(size),
    views: 2,
    workers,
    prefetch: Math.max(2, workers),
  });
  // Warm-up: one batch per worker, after which every worker is busy on a batch requested ahead (as
  // it will be when the clock stops), so the clock does not count work done before it started.
  const warmup = Math.max(1, workers);
  // An epoch: every batch of epoch 0 after the warm-up ones.
  const count = batches === "epoch" ? loader.batchesPerEpoch - warmup : batches;
  try {
    for (let b = 0; b < warmup; b++) (await loader.next()).dispose(); // starts the workers, warms them up
    const samples = [rssMiB()];
    const t0 = performance.now();
    for (let b = 0; b < count; b++) {
      (await loader.next()).dispose();
      samples.push(rssMiB());
      if (batches === "epoch" && (b + 1) % 50 === 0)
        process.stderr.write(
          `  epoch at ${size} px, ${workers} workers: batch ${b + 1 + warmup}/${count + warmup}, RSS ${samples.at(-1)!.toFixed(0)} MiB\n`,
        );
    }
    const imagesPerS = ((count * o.streamBatchSize) / (performance.now() - t0)) * 1000;
    const allocator = memoryStats();
    return {
      size,
      workers,
      batches: count,
      imagesPerS,
      rssStartMiB: samples[0],
      rssMaxMiB: Math.max(...samples),
      rssEndMiB: samples.at(-1)!,
      tensorEndMiB: allocator.currentBytes / 2 ** 20,
      cachedEndMiB: allocator.cachedBytes / 2 ** 20,
      samples,
    };
  } finally {
    await loader.close();
  }
}

async function benchStream(dir: string, size: number, workers: number, o: Options): Promise<StreamRow> {
  const { samples: _, ...row } = await timeStream(dir, size, workers, o, o.streamBatches);
  return row;
}

/** One whole epoch of the folder, RSS sampled after every batch (kept every `every` batches). */
async function benchEpoch(dir: string, size: number, workers: number, o: Options): Promise<EpochRow> {
  const t0 = performance.now();
  const { samples, ...row } = await timeStream(dir, size, workers, o, "epoch");
  const every = Math.max(1, Math.round(samples.length / 20));
  return {
    ...row,
    images: (row.batches + Math.max(1, workers)) * o.streamBatchSize,
    seconds: (performance.now() - t0) / 1000,
    rssSamplesMiB: samples.filter((_, i) => i % every === 0 || i === samples.length - 1).map((m) => Math.round(m)),
    every,
  };
}

/** What a child process prints: its one case, and the CPU time the process used (all its threads). */
interface ChildResult {
  stream: StreamRow[];
  epoch: EpochRow | null;
  wait: WaitRow | null;
  cpuSeconds: number;
}

/** Wall-clock and CPU seconds of each case's process (CPU / wall ≈ the cores it kept busy). */
interface CaseTime {
  case: string;
  wallSeconds: number;
  cpuSeconds: number;
}
const caseTimes: CaseTime[] = [];

/** Runs one streaming case in a fresh node process (so that no earlier case's memory is counted). */
function caseInChild(o: Options, folder: string, label: string, args: string[]): ChildResult {
  const common = ["--only", "stream", "--child", "--folder", folder];
  const sizes = [
    "--stream-batch-size",
    String(o.streamBatchSize),
    "--stream-batches",
    String(o.streamBatches),
    "--epoch-images",
    String(o.epochImages),
    "--wait-width",
    String(o.waitWidth),
  ];
  const started = performance.now();
  const r = spawnSync(process.execPath, [__filename, ...common, ...sizes, ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 16 * 2 ** 20,
  });
  if (r.status !== 0) throw new Error(`a streaming case (${args.join(" ")}) failed with status ${r.status}`);
  const result = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as ChildResult;
  caseTimes.push({
    case: label,
    wallSeconds: +((performance.now() - started) / 1000).toFixed(1),
    cpuSeconds: +result.cpuSeconds.toFixed(1),
  });
  return result;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  setNumThreads(1);
  const rows: { name: string; augmentViewsPerS: number; loaderImagesPerS: number; readyWaitMs: number }[] = [];
  for (const c of o.only === "stream" ? [] : CASES) {
    const augmentViewsPerS = benchAugment(c, o);
    const { imagesPerS, readyWaitMs } = await benchLoader(c, o);
    rows.push({ name: c.name, augmentViewsPerS, loaderImagesPerS: imagesPerS, readyWaitMs });
  }
  const stream: StreamRow[] = [];
  let epoch: EpochRow | null = null;
  let wait: WaitRow | null = null;
  let folder: string | null = null;
  if (o.only !== "memory") {
    folder = await benchFolder(o);
    if (o.child) {
      // One case in this (fresh) process: its RSS is that case's alone.
      if (o.streamCases.length > 0) stream.push(await benchStream(folder, ...o.streamCases[0], o));
      else if (o.epochCase !== null) epoch = await benchEpoch(folder, ...o.epochCase, o);
      else if (o.waitCase !== null)
        wait = await benchWait(folder, ...o.waitCase, { width: o.waitWidth, batchSize: o.streamBatchSize });
      const cpu = process.cpuUsage();
      console.log(
        JSON.stringify({ stream, epoch, wait, cpuSeconds: (cpu.user + cpu.system) / 1e6 } satisfies ChildResult),
      );
      return;
    }
    const only = ["--stream-cases", "", "--epoch", "none", "--wait", "none"];
    for (const [size, workers] of o.streamCases) {
      process.stderr.write(`streaming ${size} px with ${workers} worker${workers === 1 ? "" : "s"} …\n`);
      const label = `stream ${size}:${workers}`;
      stream.push(...caseInChild(o, folder, label, [...only, "--stream-cases", `${size}:${workers}`]).stream);
    }
    if (o.epochCase !== null) {
      const [size, workers] = o.epochCase;
      process.stderr.write(`one epoch at ${size} px with ${workers} worker${workers === 1 ? "" : "s"} …\n`);
      epoch = caseInChild(o, folder, `epoch ${size}:${workers}`, [...only, "--epoch", `${size}:${workers}`]).epoch;
    }
    if (o.waitCase !== null) {
      const [size, workers, steps] = o.waitCase;
      process.stderr.write(
        `the trainer's data-wait share: ResNet-18 (width ${o.waitWidth}) at ${size} px, ${workers} workers, ${steps} steps …\n`,
      );
      const spec = `${size}:${workers}:${steps}`;
      wait = caseInChild(o, folder, `wait ${spec}`, [...only, "--wait", spec]).wait;
    }
  }
  const machine = { cpus: os.cpus().length, loadAverage: os.loadavg().map((l) => +l.toFixed(2)) };
  if (o.json) {
    console.log(
      JSON.stringify({
        batchSize: o.batchSize,
        threads: getNumThreads(),
        machine,
        rows,
        folder,
        stream,
        epoch,
        wait,
        caseTimes,
        seconds: +process.uptime().toFixed(1),
      }),
    );
    return;
  }
  console.log(
    `${machine.cpus} cores, load average ${machine.loadAverage.join(" ")} (figures from a loaded machine are lower)`,
  );
  if (stream.length > 0) {
    console.log(
      `streaming folder ${folder}: simclrImagenet (two views per image), batch ${o.streamBatchSize}, ` +
        `${o.streamBatches} batches timed after one warm-up batch per worker, one libtorch thread per worker`,
    );
    printTable([
      ["size", "workers", "images/s", "RSS (MiB): start", "max", "end", "tensors", "cached"],
      ...stream.map((r) => [
        `${r.size}x${r.size}`,
        String(r.workers),
        r.imagesPerS.toFixed(1),
        r.rssStartMiB.toFixed(0),
        r.rssMaxMiB.toFixed(0),
        r.rssEndMiB.toFixed(0),
        r.tensorEndMiB.toFixed(0),
        r.cachedEndMiB.toFixed(0),
      ]),
    ]);
  }
  if (epoch !== null) {
    console.log(
      `one epoch at ${epoch.size}x${epoch.size}, ${epoch.workers} workers: ${epoch.images} images in ${epoch.seconds.toFixed(0)} s ` +
        `(${epoch.imagesPerS.toFixed(1)} images/s); RSS start ${epoch.rssStartMiB.toFixed(0)} MiB, max ${epoch.rssMaxMiB.toFixed(0)}, ` +
        `end ${epoch.rssEndMiB.toFixed(0)} (every ${epoch.every} batches: ${epoch.rssSamplesMiB.join(" ")}); ` +
        `libtorch's allocator at the end: ${epoch.tensorEndMiB.toFixed(0)} MiB in tensors, ${epoch.cachedEndMiB.toFixed(0)} MiB cached`,
    );
  }
  if (wait !== null) {
    console.log(
      `the trainer's data-wait share, SimCLR ResNet-18 (width ${wait.width}) at ${wait.size} px, batch ${wait.batchSize}, ` +
        `${wait.workers} workers, ${wait.steps} steps of ${wait.stepSeconds.toFixed(2)} s: ${(wait.dataWaitShare * 100).toFixed(1)}% over the run ` +
        `(first step waited ${wait.firstWaitSeconds.toFixed(1)} s), ${(wait.steadyDataWaitShare * 100).toFixed(1)}% from step ${wait.steadyFromStep} on; ` +
        `RSS start ${wait.rssStartMiB.toFixed(0)} MiB, max ${wait.rssMaxMiB.toFixed(0)}, end ${wait.rssEndMiB.toFixed(0)}`,
    );
  }
  if (caseTimes.length > 0) {
    const times = caseTimes.map((t) => `${t.case} ${t.wallSeconds.toFixed(0)} / ${t.cpuSeconds.toFixed(0)}`);
    console.log(`wall / CPU seconds per case: ${times.join(", ")}; ${process.uptime().toFixed(0)} s in all`);
  }
  if (rows.length === 0) return;
  console.log(`batch ${o.batchSize}, one libtorch thread (caller and worker)`);
  const header = ["case", "augment views/s", "loader images/s (2 views)", "wait when ready (ms)"];
  const table = [
    header,
    ...rows.map((r) => [
      r.name,
      r.augmentViewsPerS.toFixed(0),
      r.loaderImagesPerS.toFixed(0),
      r.readyWaitMs.toFixed(2),
    ]),
  ];
  printTable(table);
}

function printTable(table: string[][]): void {
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  for (const row of table) console.log(row.map((cell, i) => cell.padEnd(widths[i])).join("  "));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
