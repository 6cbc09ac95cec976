// `npm run bench:parallel`: stage parallelism on 2 ranks (one libtorch thread each) against one
// process with one thread, for end to end, GIM, LoCo synchronous and LoCo pipelined, each on its own
// 2-stage split; the machine's ceiling for 2 ranks; and the pipeline simulator's predictions for 2,
// 4, 8 and 16 ranks from per-block times measured here, its 2-rank figures beside the measured ones.
//
//   1. profile   per-block times (forward, backward with/without the input gradient, decoder,
//                update) of the model cut at every block, with conv decoders (LoCo) and MLP
//                decoders (GIM, end to end).
//   2. splits    per case, the 2-stage cut that balances its work (decoders, messages and late
//                passes included) over the 2 ranks, by the simulator; then refined by measurement:
//                that cut and its neighbours on 2 ranks, the one whose ranks wait least (the
//                largest wait share smallest) is kept.
//   3. rounds    --rounds times, back to back (bench/parallel-rounds.ts), the order within each
//                pair flipped every round: the ceiling (LoCo in one process alone, and two such
//                processes at once: the contention factor and the best 2-rank speedup this
//                machine allows); then per case its method in one process of one thread on its
//                split (LocalLearner.step) and its schedule with StageParallelWorker on 2 ranks:
//                images/s (the slower rank's), each rank's wait share and busy time (late
//                messages, message set-up, update), its CPU per thread group (thread-cpu.ts); the
//                link between the ranks, timed before the first case's run. Each round's speedup
//                divides by the same round's one-process run; the figures are the rounds' medians.
//   4. simulate  stage-sim.ts per case on 2 ranks (measured link and contention, the profile scaled
//                to the measured one-process step) against the measured figures; K ranks of one
//                stage each for K = 2..16 (measured link, no contention).
//
// Options: --json, --depth 18|34 (34), --width N (8), --size N (32), --images N (32), --warmup N (2),
// --steps N (timed steps per run, 16), --rounds N (3), --repeats N (profile rounds, 3), --search N
// (cuts on each side of the profile's tried on 2 ranks, 1; 0: the profile's cut), --ranks-timeout-ms N.
import { setNumThreads } from "../src/torch";
import { type MethodName, type StageCosts, profileStageCosts } from "../src/learning";
import { CASES, type Case, type Prediction, Predictor } from "./parallel-predict";
import { type BenchModel, benchOptimizer, benchViews, buildLearner } from "./parallel-model";
import { type RunOptions, fixed, runRanks } from "./parallel-runs";
import { type Measured, measureRounds } from "./parallel-rounds";
import { printTables } from "./parallel-tables";

interface Options extends RunOptions {
  json: boolean;
  /** Rounds of the paired measurements (bench/parallel-rounds.ts). */
  rounds: number;
  repeats: number;
  /** Cuts on each side of the profile's that the split search measures (0: none). */
  search: number;
}

/** A mistake on the command line: reported without a stack trace, exit status 2. */
class UsageError extends Error {}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    json: false,
    model: { depth: 34, width: 8, size: 32, images: 32 },
    warmup: 2,
    steps: 16,
    rounds: 3,
    repeats: 3,
    search: 1,
    timeoutMs: 120000,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (least = 0): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < least) {
        throw new UsageError(`${flag}: expected an integer of at least ${least}, got '${argv[i] ?? ""}'`);
      }
      return v;
    };
    if (flag === "--json") o.json = true;
    else if (flag === "--depth") {
      const d = value();
      if (d !== 18 && d !== 34) throw new UsageError(`--depth: expected 18 or 34, got ${d}`);
      o.model.depth = d;
    } else if (flag === "--width") o.model.width = value();
    else if (flag === "--size") o.model.size = value();
    else if (flag === "--images") o.model.images = value();
    else if (flag === "--warmup") o.warmup = value();
    else if (flag === "--steps") o.steps = value(1);
    else if (flag === "--rounds") o.rounds = value(1);
    else if (flag === "--repeats") o.repeats = value();
    else if (flag === "--search") o.search = value();
    else if (flag === "--ranks-timeout-ms") o.timeoutMs = value();
    else throw new UsageError(`unknown option ${flag}`);
  }
  return o;
}

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

export interface Candidate {
  split: number[];
  imagesPerSecond: number;
  waitShare: number[];
  busyMs: number[];
}

/**
 * The split chosen by measurement: the profile's cut and up to `o.search` cuts on each side, each
 * on 2 ranks (one run each); the one whose largest wait share is smallest (its ranks' measured
 * busy times the most even; ties: the faster). The profile's block times miss what a whole step
 * costs per rank (small blocks timed alone are dearer, kept graphs and shared passes differ), so
 * its balanced cut can leave one rank waiting; the chosen split is then measured afresh, in rounds.
 */
export async function searchSplit(o: Options, c: Case, profiled: number[], blockCount: number) {
  const candidates: Candidate[] = [];
  for (let cut = profiled[0] - o.search; cut <= profiled[0] + o.search; cut++) {
    if (cut < 1 || cut >= blockCount) continue;
    const ranks = await runRanks(o, c, [cut]);
    candidates.push({
      split: [cut],
      imagesPerSecond: fixed(Math.min(...ranks.map((r) => (r.stats.images * 1000) / r.elapsedMs))),
      waitShare: ranks.map((r) => fixed(r.stats.waitMs / r.elapsedMs, 3)),
      busyMs: ranks.map((r) => fixed((r.elapsedMs - r.stats.waitMs) / r.stats.steps)),
    });
  }
  const worst = (x: Candidate): number => Math.max(...x.waitShare);
  const chosen = candidates.reduce((best, x) =>
    worst(x) < worst(best) || (worst(x) === worst(best) && x.imagesPerSecond > best.imagesPerSecond) ? x : best,
  );
  return { name: c.name, profiledSplit: profiled, candidates, split: chosen.split };
}

/** The simulator's 2-rank figures for a measured case, with and without the run's corrections. */
export function checkCase(m: Measured, raw: Predictor, tuned: Predictor, contention: number) {
  const c = CASES.find((x) => x.name === m.name)!;
  // The profile's block times, scaled so that the simulated one-process step of this learner
  // matches the measured one (the blocks timed alone miss what a whole step costs or saves).
  const oneRank = tuned.simulate(c, m.split, 1);
  const scale = oneRank.imagesPerSecond / m.oneRankImagesPerSecond;
  const predicted = tuned.simulate(c, m.split, 2, { scale, contention });
  const uncorrected = raw.simulate(c, m.split, 2);
  return {
    name: m.name,
    split: m.split,
    measuredImagesPerSecond: m.imagesPerSecond,
    predictedImagesPerSecond: fixed(predicted.imagesPerSecond),
    error: fixed(predicted.imagesPerSecond / m.imagesPerSecond - 1, 3),
    /** The simulator without the corrections (assumed link, no contention, raw block times). */
    uncorrectedImagesPerSecond: fixed(uncorrected.imagesPerSecond),
    uncorrectedError: fixed(uncorrected.imagesPerSecond / m.imagesPerSecond - 1, 3),
    scale: fixed(scale, 3),
    slowdown: predicted.slowdown.map((x) => fixed(x, 3)),
    measuredOneRankImagesPerSecond: m.oneRankImagesPerSecond,
    predictedOneRankImagesPerSecond: fixed(oneRank.imagesPerSecond),
    measuredSpeedup: m.speedup,
    predictedSpeedup: fixed(predicted.imagesPerSecond / m.oneRankImagesPerSecond),
    measuredWaitShare: m.waitShare,
    predictedWaitShare: predicted.waitShare.map((w) => fixed(w, 3)),
    measuredBusyMs: m.busyMs,
    predictedBusyMs: predicted.busyMs.map((x) => fixed(x)),
    measuredForwardMs: m.forwardMs,
    /** The profile's forward of each rank's stages, scaled (contention left out). */
    profiledForwardMs: [m.split[0], tuned.costsOf(m.method).length].map((end, r) =>
      fixed(
        tuned
          .costsOf(m.method)
          .slice(r === 0 ? 0 : m.split[0], end)
          .reduce((a, b) => a + b.forwardMs * scale, 0),
      ),
    ),
  };
}

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
  const raw = new Predictor(blocks, o.model.images);
  // Each case's split: the one that balances its work (its decoders, messages and late passes
  // included) over the 2 ranks by the profile, then refined by measurement on 2 ranks.
  const profiled = CASES.map((c) => raw.balancedSplit(c));
  const search: Awaited<ReturnType<typeof searchSplit>>[] = [];
  for (const [i, c] of CASES.entries()) {
    if (o.search === 0) break;
    log(`split search: ${c.name}, cuts around block ${profiled[i][0]} on 2 ranks ...`);
    search.push(await searchSplit(o, c, profiled[i], raw.costsOf(c.method).length));
  }
  const splits = o.search === 0 ? profiled : search.map((x) => x.split);
  const cases = CASES.map((c, i) => ({ c, split: splits[i] }));
  const pingBytes = blocks.conv[splits[0][0] - 1].outputBytes;
  const { ceiling, measured, link } = await measureRounds(o, cases, raw.balancedSplit(CASES[3]), pingBytes, log);

  const tuned = new Predictor(blocks, o.model.images, link);
  const check = measured.map((m) => checkCase(m, raw, tuned, ceiling.contention));
  const simulated: Prediction[] = [];
  for (const c of CASES) {
    for (const k of [2, 4, 8, 16]) if (k <= tuned.costsOf(c.method).length) simulated.push(tuned.predict(c, k));
  }
  const result = {
    model: o.model,
    warmup: o.warmup,
    steps: o.steps,
    rounds: o.rounds,
    seconds: fixed((performance.now() - started) / 1000, 1),
    ceiling,
    link,
    search,
    measured,
    check,
    simulated,
    blocks,
  };
  if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else printTables(result);
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(error instanceof UsageError ? 2 : 1);
});
