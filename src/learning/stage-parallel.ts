// Stage parallelism (docs/distributed.md, "Stage parallel"): each rank of a process group holds a
// contiguous group of a LocalLearner's stages with the decoders of their losses. Activations flow
// up with send/recv, one message a step (no header: src/learning/stage-activations.ts), into a
// receive posted a step ahead; gradient messages of the router that cross a rank boundary flow
// down, their receives posted as soon as the activation they answer has been sent.
// Usage per rank: `optimizer.zeroGrad(); await worker.step(views); optimizer.step();` with an
// optimizer over `worker.ownParameters()`; rank 0 passes the batch, the others pass null; every
// rank calls `await worker.finish()` after the same number of steps.
import { type Tensor, empty, keep, memoryStats, noGrad, tensor } from "../torch";
import type { ProcessGroup, Work } from "../torch/distributed";
import { withoutRunningStatsUpdate } from "../nn/batchnorm";
import { withStashedWeights } from "../nn/stash";
import type { LocalLearner } from "./learner";
import type { StageRankRecord } from "./metrics";
import { ntXent } from "./ntxent";
import type { Forwardable, StageLoss } from "./router";
import { SliceRoute } from "./stage-route";
import { ActivationReceiver, ActivationSender } from "./stage-activations";
import {
  type RankPlan,
  type RankStages,
  type StageSchedule,
  STAGE_SCHEDULES,
  assignStages,
  checkPipelined,
  planPasses,
  planRanks,
} from "./stage-layout";

/** Tag 1 carried a header before each activation until the header was dropped; it stays unused. */
const ACTIVATION_TAG = 2;
/** Gradient messages use GRADIENT_TAG + their remaining reach. */
const GRADIENT_TAG = 16;

export interface StageParallelOptions {
  /** Default "sync". */
  schedule?: StageSchedule;
  /** Stages per rank (default assignStages: as even as possible by stage count). */
  layout?: RankStages[];
  /**
   * Pipelined: how a late message is applied. "keep-graph" (default): the stages it passes through
   * keep their graph from their own step, recorded with stashed weights (withStashedWeights), so the
   * message's pass is the exact gradient of that batch at the weights it ran with, applied one
   * update late, and nothing is recomputed; a pass the router would sum with the rank's own loss
   * gradients (same stage and remaining reach) waits for the late message and runs once for both
   * (then that pass is the single-process gradient of the previous batch). Costs one more step's
   * activations of those stages. "recompute": the stages are recomputed on the saved input with the
   * current weights, and the own passes run at once (two passes where "keep-graph" runs one).
   */
  lateMessages?: LateMessages;
}

export type LateMessages = "keep-graph" | "recompute";

/** Time and throughput of a rank since the worker started (or since resetStats). */
export interface StageRankStats {
  steps: number;
  images: number;
  /** Wall time inside step() and finish(). */
  wallMs: number;
  /** Of which blocked on the network (recv, and sends not yet taken by the peer). */
  waitMs: number;
  /** Of the busy rest (wall − wait): applying the pipelined schedule's late messages (recompute included). */
  lateMs: number;
  /** Of the busy rest: posting sends and receives, copying activations and messages into their buffers. */
  messageMs: number;
  /** Of the busy rest: the forward of the rank's stages (its decoders and backward passes are the rest). */
  forwardMs: number;
}

const ZERO_STATS: StageRankStats = {
  steps: 0,
  images: 0,
  wallMs: 0,
  waitMs: 0,
  lateMs: 0,
  messageMs: 0,
  forwardMs: 0,
};

export interface StageStepResult {
  /** Loss per entry of learner.losses: NaN for losses on other ranks. */
  lossValues: number[];
  /** This step's wall and wait time on this rank. */
  wallMs: number;
  waitMs: number;
}

interface PendingSend {
  step: number;
  work: Work<void>;
  tensors: Tensor[];
}

/** Receives of gradient messages from the rank above, one per remaining reach. */
type GradientReceives = { reach: number; work: Work<Tensor>; buffer: Tensor }[];

/** What the pipelined schedule keeps of the previous batch for its late messages. */
interface StaleBatch {
  /** Their receives, posted when the batch's activation was sent. */
  late: GradientReceives;
  /** "recompute": the input of the lowest stage a late message reaches. */
  input: Tensor | null;
  /** "keep-graph": the previous step's route, its graph waiting for the late messages. */
  route: SliceRoute | null;
}

export class StageParallelWorker {
  readonly group: ProcessGroup;
  readonly schedule: StageSchedule;
  readonly layout: RankStages[];
  /** This rank's plan: its stages, losses and the messages it exchanges. */
  readonly plan: RankPlan;
  /** Pipelined with messages from above: how this rank applies them (see StageParallelOptions). */
  readonly lateMessages: LateMessages;
  readonly #learner: LocalLearner;
  readonly #stages: Forwardable[];
  readonly #specs: StageLoss[];
  readonly #dtype: Tensor["dtype"];
  #sends: PendingSend[] = [];
  #stale: StaleBatch | null = null;
  readonly #activationsOut: ActivationSender | null;
  readonly #activationsIn: ActivationReceiver | null;
  #stepIndex = 0;
  #stats: StageRankStats = { ...ZERO_STATS };
  /** Milliseconds spent in the current step on message set-up and on late messages. */
  #messageMs = 0;
  #lateMs = 0;
  #forwardMs = 0;

  constructor(learner: LocalLearner, group: ProcessGroup, options: StageParallelOptions = {}) {
    if (learner.phase !== null) throw new RangeError('stage parallel: the "sequential" schedule is not supported');
    this.schedule = options.schedule ?? "sync";
    if (!STAGE_SCHEDULES.includes(this.schedule)) {
      throw new RangeError(`schedule: expected ${STAGE_SCHEDULES.join(" or ")}, got ${JSON.stringify(this.schedule)}`);
    }
    this.group = group;
    this.#learner = learner;
    this.#stages = learner.stages;
    this.layout = options.layout ?? assignStages(this.#stages.length, group.worldSize);
    if (this.layout.length !== group.worldSize) {
      throw new RangeError(`stage parallel: a layout for ${this.layout.length} ranks in a group of ${group.worldSize}`);
    }
    const plans = planRanks(this.layout, learner.losses);
    if (this.schedule === "pipelined") checkPipelined(plans);
    this.plan = plans[group.rank];
    this.#specs = learner.losses.map((l, i) => ({
      stage: l.stage,
      reach: l.reach,
      decoder: learner.decoder(i),
      loss: (z: Tensor) => ntXent(z, l.temperature),
    }));
    const { first } = this.plan.stages;
    this.#dtype = this.#stages[first].parameters()[0]?.dtype ?? "float32";
    const lateMessages = options.lateMessages ?? "keep-graph";
    if (!["keep-graph", "recompute"].includes(lateMessages)) {
      throw new RangeError(`lateMessages: expected "keep-graph" or "recompute", got ${JSON.stringify(lateMessages)}`);
    }
    this.lateMessages = lateMessages;
    const { rank, worldSize } = group;
    this.#activationsOut = rank < worldSize - 1 ? new ActivationSender(group, rank + 1, ACTIVATION_TAG) : null;
    this.#activationsIn = rank > 0 ? new ActivationReceiver(group, rank - 1, ACTIVATION_TAG, this.#dtype) : null;
  }

  /** The parameters this rank trains: its stages' and its losses' decoders'. */
  ownParameters(): Tensor[] {
    const { first, last } = this.plan.stages;
    return [
      ...this.#stages.slice(first, last + 1).flatMap((s) => s.parameters()),
      ...this.plan.losses.flatMap((i) => this.#learner.decoder(i).parameters()),
    ];
  }

  get stats(): StageRankStats {
    return { ...this.#stats };
  }

  resetStats(): void {
    this.#stats = { ...ZERO_STATS };
  }

  /** Bytes the counting allocator held at most on this rank (since the last resetPeakMemory). */
  peakBytes(): number {
    return memoryStats().peakBytes;
  }

  /**
   * Every rank's figures since the last call (or the start), as metrics.jsonl records, gathered
   * with one all-gather: every rank must call it at the same step; rank 0 gets the records (the
   * others an empty list) and writes them.
   */
  async rankRecords(step: number): Promise<StageRankRecord[]> {
    const s = this.#stats;
    const { first, last } = this.plan.stages;
    const mine = keep(
      tensor([s.steps, s.images, s.wallMs, s.waitMs, this.peakBytes(), first, last], { dtype: "float64" }),
    );
    this.resetStats();
    try {
      const all = await this.group.allGather(mine);
      const rows = all.map((t) => t.toArray());
      for (const t of all) t.dispose();
      if (this.group.rank !== 0) return [];
      return rows.map(([steps, images, wallMs, waitMs, peakBytes, f, l], rank): StageRankRecord => ({
        type: "stage-rank",
        step,
        rank,
        stages: [f + 1, l + 1],
        steps,
        busySeconds: (wallMs - waitMs) / 1000,
        waitSeconds: waitMs / 1000,
        imagesPerSecond: wallMs > 0 ? (images * 1000) / wallMs : 0,
        peakBytes,
      }));
    } finally {
      mine.dispose();
    }
  }

  /**
   * One step's forward and backward on this rank: gradients accumulate into ownParameters() (step
   * the optimizer afterwards). Rank 0 passes the 2N views; the others pass null and receive.
   */
  async step(views: Tensor | null): Promise<StageStepResult> {
    const started = performance.now();
    let waited = 0;
    const wait = async <T>(work: PromiseLike<T>): Promise<T> => {
      const t = performance.now();
      try {
        return await work;
      } finally {
        waited += performance.now() - t;
      }
    };
    const { rank } = this.group;
    if (rank === 0 && views === null) throw new TypeError("StageParallelWorker.step: rank 0 needs the batch");
    const lossValues = new Array<number>(this.#specs.length).fill(NaN);
    this.#messageMs = 0;
    this.#lateMs = 0;
    this.#forwardMs = 0;
    // Pipelined: the messages about the previous batch were sent during it; post their receives now.
    const stale = this.#stale;
    this.#stale = null;
    let input: Tensor | null = null;
    try {
      input = rank === 0 ? views! : await this.#activationsIn!.next(wait);
      const images = input.shape[0] / 2;
      await this.#forwardBackward(input, lossValues, wait);
      if (stale !== null) {
        const lateStarted = performance.now();
        const waitedBefore = waited;
        await this.#applyLate(stale, wait);
        this.#lateMs += performance.now() - lateStarted - (waited - waitedBefore);
      }
      await this.#settleSends(this.#stepIndex - 1, wait);
      const wallMs = performance.now() - started;
      this.#stats.steps++;
      this.#stats.images += images;
      this.#stats.wallMs += wallMs;
      this.#stats.waitMs += waited;
      this.#stats.lateMs += this.#lateMs;
      this.#stats.messageMs += this.#messageMs;
      this.#stats.forwardMs += this.#forwardMs;
      this.#stepIndex++;
      return { lossValues, wallMs, waitMs: waited };
    } finally {
      if (input !== null && input !== views) input.dispose();
      stale?.input?.dispose();
      stale?.route?.dispose();
    }
  }

  /** Runs `fn`, counting its time as message set-up. */
  #message<T>(fn: () => T): T {
    const t = performance.now();
    try {
      return fn();
    } finally {
      this.#messageMs += performance.now() - t;
    }
  }

  /**
   * Ends the run on this rank: completes the sends still in flight and, with the pipelined
   * schedule, receives (and drops) the messages about the last batch, which no update will use.
   * Sends the rank above the end of the activations, and takes the end from the rank below (it
   * answers the receive posted ahead), so every rank calls it after the same number of steps.
   */
  async finish(): Promise<void> {
    const started = performance.now();
    const stale = this.#stale;
    this.#stale = null;
    try {
      if (stale !== null) {
        for (const { work, buffer } of stale.late) {
          await work;
          buffer.dispose();
        }
      }
      if (this.#activationsOut !== null) {
        for (const send of this.#activationsOut.end()) this.#sends.push({ step: this.#stepIndex, ...send });
      }
      await this.#activationsIn?.end(async (w) => await w);
      await this.#settleSends(Infinity, async (w) => await w);
    } finally {
      stale?.input?.dispose();
      stale?.route?.dispose();
      const ms = performance.now() - started;
      this.#stats.wallMs += ms;
      this.#stats.waitMs += ms;
    }
  }

  /** This rank's stages and losses, and (sync) the messages from above. */
  async #forwardBackward(
    input: Tensor,
    lossValues: number[],
    wait: <T>(work: PromiseLike<T>) => Promise<T>,
  ): Promise<void> {
    const { stages, incoming, losses } = this.plan;
    const { first, last } = stages;
    const sync = this.schedule === "sync";
    const pipelinedLate = !sync && incoming.length > 0;
    const keepGraph = pipelinedLate && this.lateMessages === "keep-graph";
    // The lowest stage a late message reaches: its stages' graphs are kept (with stashed weights).
    const low = pipelinedLate ? last - Math.max(...incoming) : last + 1;
    const sources = [
      ...losses.map((i) => this.#specs[i]),
      ...(sync || keepGraph ? incoming.map((reach) => ({ stage: last, reach })) : []),
    ];
    const route = new SliceRoute(this.#stages, first, planPasses(sources, first));
    let kept = false;
    try {
      let h = input;
      let gradients: GradientReceives = [];
      for (let k = first; k <= last; k++) {
        const x = h;
        const forwardStarted = performance.now();
        h = keepGraph && k >= low ? withStashedWeights(() => route.forward(k, x)) : route.forward(k, x);
        this.#forwardMs += performance.now() - forwardStarted;
        if (k === last) {
          if (this.#activationsOut !== null) this.#sendActivation(h);
          // Posted now, before this stage's own losses: the messages can land while they run.
          if (sync || pipelinedLate) gradients = this.#receiveGradients(h.shape);
        }
        for (const i of losses) if (this.#specs[i].stage === k) lossValues[i] = route.loss(k, this.#specs[i]);
        this.#sendLeaving(route);
      }
      if (sync) {
        for (const { reach, work, buffer } of gradients) {
          await wait(work);
          route.deliver(last, reach, buffer);
          this.#sendLeaving(route);
        }
      } else if (keepGraph) {
        route.releaseBelow(low);
        this.#stale = { late: gradients, input: null, route };
        kept = true;
      } else if (pipelinedLate) {
        this.#stale = { late: gradients, input: keep(noGrad(() => route.inputOf(low).detach())), route: null };
      }
    } finally {
      if (!kept) route.dispose();
    }
  }

  /** Pipelined: the previous batch's messages, through its stages recomputed with the current weights. */
  async #applyLate(stale: StaleBatch, wait: <T>(work: PromiseLike<T>) => Promise<T>): Promise<void> {
    const { last } = this.plan.stages;
    const { late } = stale;
    if (stale.route !== null) {
      // keep-graph: the previous step's graph, recorded with the weights that batch ran with.
      for (const { reach, work, buffer } of late) {
        await wait(work);
        stale.route.deliver(last, reach, buffer);
      }
      return;
    }
    const low = last - Math.max(...this.plan.incoming);
    const route = new SliceRoute(
      this.#stages,
      low,
      planPasses(
        late.map(({ reach }) => ({ stage: last, reach })),
        low,
      ),
    );
    try {
      // Batch norm's running statistics already counted this batch.
      withoutRunningStatsUpdate(() => {
        let h = stale.input!;
        for (let k = low; k <= last; k++) h = route.forward(k, h);
      });
      for (const { reach, work, buffer } of late) {
        await wait(work);
        route.deliver(last, reach, buffer);
      }
    } finally {
      route.dispose();
    }
  }

  #sendActivation(h: Tensor): void {
    this.#message(() => {
      for (const send of this.#activationsOut!.post(h)) this.#sends.push({ step: this.#stepIndex, ...send });
    });
  }

  /** Posts the receives of the messages from the rank above (one per remaining reach). */
  #receiveGradients(shape: number[]): GradientReceives {
    const src = this.group.rank + 1;
    return this.#message(() =>
      this.plan.incoming.map((reach) => {
        const buffer = keep(empty(shape, { dtype: this.#dtype }));
        return { reach, buffer, work: this.group.recv(buffer, src, { tag: GRADIENT_TAG + reach }) };
      }),
    );
  }

  #sendLeaving(route: SliceRoute): void {
    this.#message(() => this.#postLeaving(route));
  }

  #postLeaving(route: SliceRoute): void {
    const dst = this.group.rank - 1;
    for (const { reach, gradient } of route.takeLeaving()) {
      const data = gradient.isContiguous() ? gradient : keep(noGrad(() => gradient.contiguous()));
      if (data !== gradient) gradient.dispose();
      this.#sends.push({
        step: this.#stepIndex,
        work: this.group.send(data, dst, { tag: GRADIENT_TAG + reach }),
        tensors: [data],
      });
    }
  }

  /** Waits for the sends of steps ≤ `upTo` (taken by the peer) and frees their tensors. */
  async #settleSends(upTo: number, wait: <T>(work: PromiseLike<T>) => Promise<T>): Promise<void> {
    const done = this.#sends.filter((s) => s.step <= upTo);
    this.#sends = this.#sends.filter((s) => s.step > upTo);
    try {
      for (const s of done) await wait(s.work);
    } finally {
      for (const s of done) for (const t of s.tensors) t.dispose();
    }
  }
}
