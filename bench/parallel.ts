// `npm run bench:parallel`: stage parallelism on 2 ranks (one libtorch thread each) against one
// process with one thread, for end to end, GIM, LoCo synchronous and LoCo pipelined, on the same
// model and 2-stage layout; and the pipeline simulator's predictions for 2, 4, 8 and 16 ranks from
// per-block times measured here, its 2-rank figures beside the measured ones.
//
//   1. profile   per-block times (forward, backward with/without the input gradient, decoder,
//                update) of the model cut at every block, with conv decoders (LoCo) and MLP
//                decoders (GIM, end to end); the 2-stage split balances the measured compute.
//   2. 1 rank    each method in one process (LocalLearner.step, the single-process router).
//   3. 2 ranks   each schedule with StageParallelWorker on 2 child processes: images/s (the
//                slower rank's) and each rank's share of time blocked on messages.
//   4. simulate  stage-sim.ts on the measured block times: K ranks of one stage each (split
//                balancing compute), throughput and wait share, and the speedup over the same
//                K-stage learner in one process.
//
// Options: --json, --depth 18|34 (34), --width N (8), --size N (32), --images N (32), --warmup N (2),
// --steps N (timed steps per run, 8), --repeats N (profile rounds, 3), --ranks-timeout-ms N.
import { spawn } from "node:child_process";
import * as net from "node:net";
import * as path from "node:path";
import { resetPeakMemory, scope, setNumThreads } from "../src/torch";
import { type MethodName, type StageCosts, profileStageCosts } from "../src/learning";
import { CASES, type Prediction, Predictor } from "./parallel-predict";
import { type BenchModel, benchOptimizer, benchViews, buildLearner } from "./parallel-model";
import type { RankRun } from "./parallel-rank";

interface Options {
  json: boolean;
  model: BenchModel;
  warmup: number;
  steps: number;
  repeats: number;
  timeoutMs: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    json: false,
    model: { depth: 34, width: 8, size: 32, images: 32 },
    warmup: 2,
    steps: 8,
    repeats: 3,
    timeoutMs: 120000,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) throw new Error(`${flag}: expected a non-negative integer, got '${argv[i]}'`);
      return v;
    };
    if (flag === "--json") o.json = true;
    else if (flag === "--depth") {
      const d = value();
      if (d !== 18 && d !== 34) throw new Error(`--depth: expected 18 or 34, got ${d}`);
      o.model.depth = d;
    } else if (flag === "--width") o.model.width = value();
    else if (flag === "--size") o.model.size = value();
    else if (flag === "--images") o.model.images = value();
    else if (flag === "--warmup") o.warmup = value();
    else if (flag === "--steps") o.steps = value();
    else if (flag === "--repeats") o.repeats = value();
    else if (flag === "--ranks-timeout-ms") o.timeoutMs = value();
    else throw new Error(`unknown option ${flag}`);
  }
  return o;
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });

/** Per-block costs of the model with the method's decoder kind (conv for LoCo, MLP otherwise). */
function profileBlocks(model: BenchModel, method: MethodName, repeats: number): StageCosts[] {
  const blockSplit = Array.from({ length: model.depth === 18 ? 8 : 16 }, (_, i) => i + 1);
  const { learner, dispose } = buildLearner(model, method === "loco" ? "loco" : "gim", blockSplit);
  const [views] = benchViews(model);
  try {
    return profileStageCosts(learner, views, benchOptimizer, repeats);
  } finally {
    views.dispose();
    dispose();
  }
}

/** Images/s of the method in this process (one thread): the single-process router. */
function oneRank(model: BenchModel, method: MethodName, split: number[], warmup: number, steps: number): number {
  const { learner, dispose } = buildLearner(model, method, split);
  const optimizer = benchOptimizer(learner.allParameters());
  const views = benchViews(model);
  let started = 0;
  for (let step = 0; step < warmup + steps; step++) {
    if (step === warmup) started = performance.now();
    scope(() => {
      optimizer.zeroGrad();
      learner.step(views[step % 2]);
      optimizer.step();
    });
  }
  const seconds = (performance.now() - started) / 1000;
  for (const v of views) v.dispose();
  optimizer.dispose();
  dispose();
  return (model.images * steps) / seconds;
}

interface RankStats {
  stats: { steps: number; images: number; wallMs: number; waitMs: number };
  peakBytes: number;
}

function twoRanks(run: RankRun, timeoutMs: number): Promise<RankStats[]> {
  const script = path.join(__dirname, "parallel-rank.js");
  return freePort().then((port) =>
    Promise.all(
      [0, 1].map(
        (rank) =>
          new Promise<RankStats>((resolve, reject) => {
            const child = spawn(process.execPath, [script, JSON.stringify(run)], {
              env: {
                ...process.env,
                OMP_NUM_THREADS: "1",
                LOCO_NUM_THREADS: "1",
                MASTER_ADDR: "127.0.0.1",
                MASTER_PORT: String(port),
                RANK: String(rank),
                LOCAL_RANK: String(rank),
                WORLD_SIZE: "2",
                LOCO_DIST_TIMEOUT_MS: String(timeoutMs),
              },
              stdio: ["ignore", "pipe", "pipe"],
            });
            let stdout = "";
            let stderr = "";
            child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
            child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
            child.on("close", (code) => {
              const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
              if (code !== 0 || line === undefined) reject(new Error(`rank ${rank} failed (${code}):\n${stderr}`));
              else resolve(JSON.parse(line.slice(7)) as RankStats);
            });
          }),
      ),
    ),
  );
}

const fixed = (x: number, digits = 2): number => Number(x.toFixed(digits));

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  setNumThreads(1);
  const started = performance.now();
  const log = (text: string): void => void (o.json || process.stderr.write(`${text}\n`));

  log("profiling the blocks (conv decoders, MLP decoders) ...");
  const blocks = {
    conv: profileBlocks(o.model, "loco", o.repeats),
    mlp: profileBlocks(o.model, "gim", o.repeats),
  };
  const predictor = new Predictor(blocks, o.model.images);
  // The 2-rank layout of every measured case: the one the simulator finds best for LoCo pipelined.
  const split = predictor.bestCuts(CASES[3], 2);

  const single = new Map<MethodName, number>();
  for (const method of ["simclr", "gim", "loco"] as const) {
    log(`1 rank: ${method} ...`);
    resetPeakMemory();
    single.set(method, oneRank(o.model, method, split, o.warmup, o.steps));
  }

  const measured = [];
  for (const c of CASES) {
    log(`2 ranks: ${c.name} ...`);
    const ranks = await twoRanks(
      { model: o.model, method: c.method, schedule: c.schedule, split, warmup: o.warmup, steps: o.steps },
      o.timeoutMs,
    );
    const imagesPerSecond = Math.min(...ranks.map((r) => (r.stats.images * 1000) / r.stats.wallMs));
    const oneRankIps = single.get(c.method)!;
    measured.push({
      name: c.name,
      method: c.method,
      schedule: c.schedule,
      imagesPerSecond: fixed(imagesPerSecond),
      oneRankImagesPerSecond: fixed(oneRankIps),
      speedup: fixed(imagesPerSecond / oneRankIps),
      waitShare: ranks.map((r) => fixed(r.stats.waitMs / r.stats.wallMs, 3)),
      peakMiB: ranks.map((r) => fixed(r.peakBytes / 2 ** 20, 1)),
    });
  }

  const simulated: Prediction[] = [];
  for (const c of CASES) {
    for (const k of [2, 4, 8, 16]) {
      // K stages need K blocks; the 2-rank prediction uses the measured runs' split.
      if (k > predictor.costsOf(c.method).length) continue;
      simulated.push(predictor.predict(c, k, k === 2 ? split : undefined));
    }
  }
  const check = measured.map((m) => {
    const predicted = simulated.find((s) => s.name === m.name && s.ranks === 2)!;
    // The same 2-stage learner in one process, as simulated: shows how well the profile's times
    // add up to a measured step (a loaded machine skews both).
    const oneRank = predictor.simulate(
      CASES.find((c) => c.name === m.name)!,
      split,
      1,
    );
    return {
      name: m.name,
      measuredImagesPerSecond: m.imagesPerSecond,
      predictedImagesPerSecond: predicted.imagesPerSecond,
      error: fixed(predicted.imagesPerSecond / m.imagesPerSecond - 1, 3),
      measuredOneRankImagesPerSecond: m.oneRankImagesPerSecond,
      predictedOneRankImagesPerSecond: fixed(oneRank.imagesPerSecond),
      measuredSpeedup: m.speedup,
      predictedSpeedup: predicted.speedup,
      measuredWaitShare: m.waitShare,
      predictedWaitShare: predicted.waitShare,
    };
  });
  const result = {
    model: o.model,
    split,
    warmup: o.warmup,
    steps: o.steps,
    seconds: fixed((performance.now() - started) / 1000, 1),
    measured,
    simulated,
    check,
    blocks,
  };
  if (o.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
  console.log(
    `ResNet-${o.model.depth} width ${o.model.width}, ${o.model.size}x${o.model.size}, ${o.model.images} images/step, split at block ${split[0]}; ${result.seconds} s`,
  );
  console.log("\n| method | 2 ranks img/s | 1 rank img/s | speedup | wait rank 0 | wait rank 1 | peak MiB |");
  console.log("| --- | --- | --- | --- | --- | --- | --- |");
  for (const m of measured) {
    console.log(
      `| ${m.name} | ${m.imagesPerSecond} | ${m.oneRankImagesPerSecond} | ${m.speedup}x | ${pct(m.waitShare[0])} | ${pct(m.waitShare[1])} | ${m.peakMiB.join(" / ")} |`,
    );
  }
  console.log(
    "\n| method | simulated 2 ranks img/s | measured | error | simulated 1 rank img/s | measured | simulated speedup | measured | simulated wait |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const c of check) {
    console.log(
      `| ${c.name} | ${c.predictedImagesPerSecond} | ${c.measuredImagesPerSecond} | ${pct(c.error)} | ` +
        `${c.predictedOneRankImagesPerSecond} | ${c.measuredOneRankImagesPerSecond} | ${c.predictedSpeedup}x | ${c.measuredSpeedup}x | ` +
        `${c.predictedWaitShare.map(pct).join(" / ")} |`,
    );
  }
  console.log("\n| method | ranks | simulated speedup | largest wait |");
  console.log("| --- | --- | --- | --- |");
  for (const s of simulated) {
    console.log(`| ${s.name} | ${s.ranks} | ${s.speedup}x | ${pct(Math.max(...s.waitShare))} |`);
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(1);
});
