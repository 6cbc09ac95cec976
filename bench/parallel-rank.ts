// One rank of `npm run bench:parallel` (bench/parallel.ts starts two with torchrun's variables and
// one libtorch thread each): argv[2] is the run as JSON; prints `RESULT <json>` with this rank's
// stats over the timed steps. With `solo`, no process group: the method in one process (each
// method's one-process baseline, and the machine's ceiling: one such process alone, then two at once).
import { type ProcessGroup, initProcessGroup } from "../src/torch/distributed";
import { empty, keep, resetPeakMemory, scope } from "../src/torch";
import { type MethodName, type StageSchedule, StageParallelWorker } from "../src/learning";
import { type BenchModel, benchOptimizer, benchViews, buildLearner, oneRankImagesPerSecond } from "./parallel-model";
import { ThreadCpuClock } from "./thread-cpu";

export interface RankRun {
  model: BenchModel;
  method: MethodName;
  schedule: StageSchedule;
  split: number[];
  warmup: number;
  steps: number;
  /** One process without a group: prints its images/s. */
  solo?: boolean;
  /**
   * With `solo`: after the warmup, print `READY` and start the timed steps on a line from stdin
   * (the bench sends it once every process of the run is ready: they time the same span).
   */
  together?: boolean;
  /** Before training, time messages of this many bytes (and tiny ones) between the ranks. */
  pingBytes?: number;
}

/** Median one-way milliseconds of a message of `bytes` bytes between ranks 0 and 1 (ping-pong). */
async function oneWayMs(group: ProcessGroup, bytes: number, rounds = 9): Promise<number> {
  const buffer = keep(empty([Math.max(1, Math.round(bytes / 4))]));
  const times: number[] = [];
  try {
    for (let i = 0; i < rounds + 1; i++) {
      const t = performance.now();
      if (group.rank === 0) {
        await group.send(buffer, 1, { tag: 90 });
        await group.recv(buffer, 1, { tag: 91 });
      } else {
        await group.recv(buffer, 0, { tag: 90 });
        await group.send(buffer, 0, { tag: 91 });
      }
      if (i > 0) times.push((performance.now() - t) / 2);
    }
  } finally {
    buffer.dispose();
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}

/** Prints READY, then waits for a line on stdin. */
function readyThenGo(): Promise<void> {
  return new Promise((resolve) => {
    process.stdin.once("data", () => {
      process.stdin.pause();
      resolve();
    });
    process.stdout.write("READY\n");
  });
}

async function main(): Promise<void> {
  const run = JSON.parse(process.argv[2]) as RankRun;
  // CPU per thread over the timed steps: the compute thread, Node's own threads (present before
  // the group), the group's (Gloo's, the heartbeat, the store), and short-lived ones (promise waiters).
  const clock = new ThreadCpuClock();
  clock.mark("node");
  if (run.solo === true) {
    const { model, method, split, warmup, steps } = run;
    const ready = run.together === true ? readyThenGo : undefined;
    const imagesPerSecond = await oneRankImagesPerSecond(model, method, split, warmup, steps, ready, clock);
    process.stdout.write(`RESULT ${JSON.stringify({ imagesPerSecond, cpu: clock.perStep(steps) })}\n`);
    return;
  }
  const group = await initProcessGroup();
  clock.mark("group");
  const link =
    run.pingBytes === undefined
      ? null
      : { tinyMs: await oneWayMs(group, 16), bigMs: await oneWayMs(group, run.pingBytes), bytes: run.pingBytes };
  const { learner, dispose } = buildLearner(run.model, run.method, run.split);
  const worker = new StageParallelWorker(learner, group, { schedule: run.schedule });
  const optimizer = benchOptimizer(worker.ownParameters());
  const views = group.rank === 0 ? benchViews(run.model) : null;
  let updateMs = 0;
  let started = performance.now();
  for (let step = 0; step < run.warmup + run.steps; step++) {
    if (step === run.warmup) {
      worker.resetStats();
      resetPeakMemory();
      updateMs = 0;
      started = performance.now();
      clock.start();
    }
    optimizer.zeroGrad();
    await worker.step(views?.[step % 2] ?? null);
    const t = performance.now();
    scope(() => optimizer.step());
    updateMs += performance.now() - t;
  }
  // The timed steps only (elapsed: the optimizer's steps included, which the worker's wall time
  // leaves out); finish() waits for the last messages, which no step uses.
  const elapsedMs = performance.now() - started;
  const cpu = clock.perStep(run.steps);
  const stats = worker.stats;
  const peakBytes = worker.peakBytes();
  await worker.finish();
  process.stdout.write(`RESULT ${JSON.stringify({ stats, elapsedMs, updateMs, peakBytes, link, cpu })}\n`);
  await group.destroy();
  for (const v of views ?? []) v.dispose();
  optimizer.dispose();
  dispose();
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack}\n`);
  process.exit(1);
});
