// One rank of the stage-parallel tests (test/stage-parallel.test.ts starts two with torchrun's
// variables). The learner, the optimizer and the batches are built by the exported functions, which
// the test also uses for its single-process reference. argv[2] names the scenario; prints
// `RESULT <json>` with the losses and the weights this rank trained.
import { Generator, type Tensor, randn, scope } from "../../src/torch";
import { initProcessGroup } from "../../src/torch/distributed";
import { SGD } from "../../src/optim";
import {
  type LateMessages,
  type LocalLearner,
  type MethodName,
  type RankStages,
  type StageSchedule,
  StageParallelWorker,
  buildStageModel,
} from "../../src/learning";

export const STEPS = 3;

export interface Scenario {
  method: MethodName;
  schedule: StageSchedule;
  /** Stages per rank (default: the worker's rule). */
  layout?: RankStages[];
  lateMessages?: LateMessages;
  /** Default STEPS. */
  steps?: number;
  /** Views per step (default 8 each): a smaller batch changes the activations' shape. */
  views?: number[];
}

export const SCENARIOS: Record<string, Scenario> = {
  locoSync: { method: "loco", schedule: "sync" },
  locoSyncUneven: {
    method: "loco",
    schedule: "sync",
    layout: [
      { first: 0, last: 0 },
      { first: 1, last: 3 },
    ],
  },
  gim: { method: "gim", schedule: "sync" },
  endToEnd: { method: "simclr", schedule: "sync" },
  locoPipelined: { method: "loco", schedule: "pipelined" },
  locoPipelinedRecompute: { method: "loco", schedule: "pipelined", lateMessages: "recompute" },
  /** Stage 1 alone on rank 0: its own loss and the late message share one pass, a step late. */
  locoPipelinedUneven: {
    method: "loco",
    schedule: "pipelined",
    layout: [
      { first: 0, last: 0 },
      { first: 1, last: 3 },
    ],
    steps: 2,
  },
  /** The activation's shape changes: the first step, a smaller batch, the full one again, unchanged. */
  locoSyncBatches: { method: "loco", schedule: "sync", views: [8, 4, 8, 8] },
  locoPipelinedBatches: { method: "loco", schedule: "pipelined", views: [8, 8, 4, 8] },
  /** Rank 1 is killed before its second step. */
  locoKilled: { method: "loco", schedule: "sync" },
};

/** A float64 ResNet-18 of width 4 in 4 stages with the method's decoders, the same on every rank. */
export const makeLearner = (method: MethodName): { learner: LocalLearner; dispose: () => void } =>
  buildStageModel({ method, depth: 18, width: 4, seed: 7, dtype: "float64" });

export const makeOptimizer = (params: Tensor[]): SGD => new SGD(params, { lr: 0.1, momentum: 0.9 });

/** Step `step`'s 2N views (8 unless the scenario says). */
export const stepViews = (step: number, views = 8): Tensor =>
  randn([views, 3, 8, 8], { generator: new Generator(100 + step), dtype: "float64" });

/** Every parameter of the learner by a stable name (stage or decoder, then index). */
export function namedParameters(learner: LocalLearner): [string, Tensor][] {
  return [
    ...learner.stages.flatMap((s, k) => s.parameters().map((p, i): [string, Tensor] => [`stage${k}.${i}`, p])),
    ...learner.losses.flatMap((_, d) =>
      learner
        .decoder(d)
        .parameters()
        .map((p, i): [string, Tensor] => [`decoder${d}.${i}`, p]),
    ),
  ];
}

async function main(): Promise<void> {
  const scenario = SCENARIOS[process.argv[2]];
  const group = await initProcessGroup();
  const { learner, dispose } = makeLearner(scenario.method);
  const worker = new StageParallelWorker(learner, group, {
    schedule: scenario.schedule,
    layout: scenario.layout,
    lateMessages: scenario.lateMessages,
  });
  const own = new Set(worker.ownParameters());
  const optimizer = makeOptimizer([...own]);
  const losses: number[][] = [];
  const steps = scenario.views?.length ?? scenario.steps ?? STEPS;
  for (let step = 0; step < steps; step++) {
    if (process.argv[2] === "locoKilled" && group.rank === 1 && step === 1) process.kill(process.pid, "SIGKILL");
    const views = group.rank === 0 ? stepViews(step, scenario.views?.[step]) : null;
    optimizer.zeroGrad();
    const started = performance.now();
    const result = await worker.step(views).catch((error: Error) => {
      process.stdout.write(
        `RESULT ${JSON.stringify({ error: error.message, elapsedMs: performance.now() - started })}\n`,
      );
      process.exit(1);
    });
    optimizer.step();
    views?.dispose();
    losses.push(result.lossValues);
  }
  const stats = worker.stats;
  const records = await worker.rankRecords(steps);
  await worker.finish();
  const weights = Object.fromEntries(
    scope(() => namedParameters(learner).flatMap(([name, p]) => (own.has(p) ? [[name, p.toArray()]] : []))),
  );
  process.stdout.write(`RESULT ${JSON.stringify({ losses, weights, plan: worker.plan, stats, records })}\n`);
  await group.destroy();
  dispose();
}

// Only as a rank (runRanks sets RANK): `node --test dist/test/` also loads every file under test/.
if (require.main === module && process.env.RANK !== undefined) {
  main().catch((error: unknown) => {
    process.stdout.write(`RESULT ${JSON.stringify({ error: (error as Error).stack })}\n`);
    process.exit(1);
  });
}
