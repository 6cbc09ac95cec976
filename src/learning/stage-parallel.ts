// Stage parallelism (docs/distributed.md, "Stage parallel"): each rank of a process group holds a
// contiguous group of a LocalLearner's stages with the decoders of their losses. Activations flow
// up with send/recv; gradient messages of the router that cross a rank boundary flow down.
// Usage per rank: `optimizer.zeroGrad(); await worker.step(views); optimizer.step();` with an
// optimizer over `worker.ownParameters()`; rank 0 passes the batch, the others pass null.
import { type Tensor, empty, keep, memoryStats, noGrad, tensor } from "../torch";
import type { ProcessGroup, Work } from "../torch/distributed";
import { withoutRunningStatsUpdate } from "../nn/layers";
import type { LocalLearner } from "./learner";
import type { StageRankRecord } from "./metrics";
import { ntXent } from "./ntxent";
import type { Forwardable, StageLoss } from "./router";
import { SliceRoute } from "./stage-route";
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

const HEADER_TAG = 1;
const ACTIVATION_TAG = 2;
/** Gradient messages use GRADIENT_TAG + their remaining reach. */
const GRADIENT_TAG = 16;
const MAX_DIMS = 7;

export interface StageParallelOptions {
  /** Default "sync". */
  schedule?: StageSchedule;
  /** Stages per rank (default assignStages: as even as possible by stage count). */
  layout?: RankStages[];
}

/** Time and throughput of a rank since the worker started (or since resetStats). */
export interface StageRankStats {
  steps: number;
  images: number;
  /** Wall time inside step() and finish(). */
  wallMs: number;
  /** Of which blocked on the network (recv, and sends not yet taken by the peer). */
  waitMs: number;
}

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

/** The previous batch's input, kept for the pipelined schedule's late messages. */
interface StaleInput {
  input: Tensor;
  outputShape: number[];
}

export class StageParallelWorker {
  readonly group: ProcessGroup;
  readonly schedule: StageSchedule;
  readonly layout: RankStages[];
  /** This rank's plan: its stages, losses and the messages it exchanges. */
  readonly plan: RankPlan;
  readonly #learner: LocalLearner;
  readonly #stages: Forwardable[];
  readonly #specs: StageLoss[];
  readonly #dtype: Tensor["dtype"];
  #sends: PendingSend[] = [];
  #stale: StaleInput | null = null;
  #stepIndex = 0;
  #stats: StageRankStats = { steps: 0, images: 0, wallMs: 0, waitMs: 0 };

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
    this.#stats = { steps: 0, images: 0, wallMs: 0, waitMs: 0 };
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
    // Pipelined: the messages about the previous batch were sent during it; post their receives now.
    const stale = this.#stale;
    this.#stale = null;
    const late = stale !== null ? this.#receiveGradients(stale.outputShape) : [];
    const input = rank === 0 ? views! : await this.#receiveActivation(wait);
    try {
      const images = input.shape[0] / 2;
      await this.#forwardBackward(input, lossValues, wait);
      if (stale !== null) await this.#applyLate(stale, late, wait);
      await this.#settleSends(this.#stepIndex - 1, wait);
      const wallMs = performance.now() - started;
      this.#stats.steps++;
      this.#stats.images += images;
      this.#stats.wallMs += wallMs;
      this.#stats.waitMs += waited;
      this.#stepIndex++;
      return { lossValues, wallMs, waitMs: waited };
    } finally {
      if (input !== views) input.dispose();
      stale?.input.dispose();
    }
  }

  /**
   * Ends the run on this rank: completes the sends still in flight and, with the pipelined
   * schedule, receives (and drops) the messages about the last batch, which no update will use.
   */
  async finish(): Promise<void> {
    const started = performance.now();
    const stale = this.#stale;
    this.#stale = null;
    try {
      if (stale !== null) {
        for (const { work, buffer } of this.#receiveGradients(stale.outputShape)) {
          await work;
          buffer.dispose();
        }
      }
      await this.#settleSends(Infinity, async (w) => await w);
    } finally {
      stale?.input.dispose();
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
    const sources = [
      ...losses.map((i) => this.#specs[i]),
      ...(sync ? incoming.map((reach) => ({ stage: last, reach })) : []),
    ];
    const route = new SliceRoute(this.#stages, first, planPasses(sources, first));
    try {
      let h = input;
      let outputShape: number[] = [];
      for (let k = first; k <= last; k++) {
        h = route.forward(k, h);
        if (k === last) {
          outputShape = h.shape;
          if (this.group.rank < this.group.worldSize - 1) this.#sendActivation(h);
        }
        for (const i of losses) if (this.#specs[i].stage === k) lossValues[i] = route.loss(k, this.#specs[i]);
        this.#sendLeaving(route);
      }
      if (sync) {
        for (const { reach, work, buffer } of this.#receiveGradients(outputShape)) {
          await wait(work);
          route.deliver(last, reach, buffer);
          this.#sendLeaving(route);
        }
      } else if (incoming.length > 0) {
        const low = last - Math.max(...incoming);
        this.#stale = { input: keep(noGrad(() => route.inputOf(low).detach())), outputShape };
      }
    } finally {
      route.dispose();
    }
  }

  /** Pipelined: the previous batch's messages, through its stages recomputed with the current weights. */
  async #applyLate(
    stale: StaleInput,
    late: { reach: number; work: Work<Tensor>; buffer: Tensor }[],
    wait: <T>(work: PromiseLike<T>) => Promise<T>,
  ): Promise<void> {
    const { last } = this.plan.stages;
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
        let h = stale.input;
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
    const dst = this.group.rank + 1;
    if (h.shape.length > MAX_DIMS) throw new RangeError(`stage parallel: activations of ${h.shape.length} dims`);
    const header = keep(
      tensor([h.shape.length, ...h.shape, ...new Array<number>(MAX_DIMS - h.shape.length).fill(0)], { dtype: "int32" }),
    );
    const data = keep(noGrad(() => h.detach().contiguous()));
    this.#sends.push({
      step: this.#stepIndex,
      work: this.group.send(header, dst, { tag: HEADER_TAG }),
      tensors: [header],
    });
    this.#sends.push({
      step: this.#stepIndex,
      work: this.group.send(data, dst, { tag: ACTIVATION_TAG }),
      tensors: [data],
    });
  }

  async #receiveActivation(wait: <T>(work: PromiseLike<T>) => Promise<T>): Promise<Tensor> {
    const src = this.group.rank - 1;
    const header = keep(empty([MAX_DIMS + 1], { dtype: "int32" }));
    try {
      await wait(this.group.recv(header, src, { tag: HEADER_TAG }));
      const [dims, ...rest] = header.toArray();
      const buffer = keep(empty(rest.slice(0, dims), { dtype: this.#dtype }));
      try {
        return await wait(this.group.recv(buffer, src, { tag: ACTIVATION_TAG }));
      } catch (error) {
        buffer.dispose();
        throw error;
      }
    } finally {
      header.dispose();
    }
  }

  /** Posts the receives of the messages from the rank above (one per remaining reach). */
  #receiveGradients(shape: number[]): { reach: number; work: Work<Tensor>; buffer: Tensor }[] {
    const src = this.group.rank + 1;
    return this.plan.incoming.map((reach) => {
      const buffer = keep(empty(shape, { dtype: this.#dtype }));
      return { reach, buffer, work: this.group.recv(buffer, src, { tag: GRADIENT_TAG + reach }) };
    });
  }

  #sendLeaving(route: SliceRoute): void {
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
