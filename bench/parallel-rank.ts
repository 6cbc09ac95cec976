// One rank of `npm run bench:parallel` (bench/parallel.ts starts two with torchrun's variables and
// one libtorch thread each): argv[2] is the run as JSON; prints `RESULT <json>` with this rank's
// stats over the timed steps.
import { initProcessGroup } from "../src/torch/distributed";
import { resetPeakMemory, scope } from "../src/torch";
import { type MethodName, type StageSchedule, StageParallelWorker } from "../src/learning";
import { type BenchModel, benchOptimizer, benchViews, buildLearner } from "./parallel-model";

export interface RankRun {
  model: BenchModel;
  method: MethodName;
  schedule: StageSchedule;
  split: number[];
  warmup: number;
  steps: number;
}

async function main(): Promise<void> {
  const run = JSON.parse(process.argv[2]) as RankRun;
  const group = await initProcessGroup();
  const { learner, dispose } = buildLearner(run.model, run.method, run.split);
  const worker = new StageParallelWorker(learner, group, { schedule: run.schedule });
  const optimizer = benchOptimizer(worker.ownParameters());
  const views = group.rank === 0 ? benchViews(run.model) : null;
  for (let step = 0; step < run.warmup + run.steps; step++) {
    if (step === run.warmup) {
      worker.resetStats();
      resetPeakMemory();
    }
    optimizer.zeroGrad();
    await worker.step(views?.[step % 2] ?? null);
    scope(() => optimizer.step());
  }
  // The timed steps only: finish() waits for the last messages, which no step uses.
  const stats = worker.stats;
  const peakBytes = worker.peakBytes();
  await worker.finish();
  process.stdout.write(`RESULT ${JSON.stringify({ stats, peakBytes })}\n`);
  await group.destroy();
  for (const v of views ?? []) v.dispose();
  optimizer.dispose();
  dispose();
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack}\n`);
  process.exit(1);
});
