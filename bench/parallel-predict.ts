// The pipeline simulator's predictions for `npm run bench:parallel` and bench/pipeline-sim.ts:
// per-block times in, K ranks of one stage each out, per schedule.
import {
  type Link,
  type MethodName,
  type SimulationResult,
  type StageCosts,
  type StageSchedule,
  assignStages,
  balancedCuts,
  bestCuts,
  mergeBlockCosts,
  methodPreset,
  resolveLosses,
  simulatePipeline,
} from "../src/learning";

export interface Case {
  name: string;
  method: MethodName;
  schedule: StageSchedule;
}

export const CASES: Case[] = [
  { name: "end to end", method: "simclr", schedule: "sync" },
  { name: "GIM", method: "gim", schedule: "sync" },
  { name: "LoCo sync", method: "loco", schedule: "sync" },
  { name: "LoCo pipelined", method: "loco", schedule: "pipelined" },
];

/** Per-block times with LoCo's conv decoders and with MLP decoders (GIM, end to end). */
export interface BlockCosts {
  conv: StageCosts[];
  mlp: StageCosts[];
}

/** Corrections from measurements of the same run (bench:parallel's 2-rank check). */
export interface Tuning {
  /** Multiplies every per-block time (the measured one-process step over the simulated one). */
  scale?: number;
  /** SimulationInput.contention (default 1: none). */
  contention?: number;
}

export interface Prediction {
  name: string;
  ranks: number;
  cuts: number[];
  imagesPerSecond: number;
  /** Over the same K-stage learner in one process. */
  speedup: number;
  waitShare: number[];
}

const fixed = (x: number, digits = 2): number => Number(x.toFixed(digits));

export class Predictor {
  constructor(
    readonly blocks: BlockCosts,
    readonly images: number,
    readonly link?: Link,
  ) {}

  costsOf(method: MethodName): StageCosts[] {
    return method === "loco" ? this.blocks.conv : this.blocks.mlp;
  }

  /** The case on K stages cut at `cuts`, on `ranks` ranks (default one stage each). */
  simulate(c: Case, cuts: number[], ranks = cuts.length + 1, tuning: Tuning = {}): SimulationResult {
    const k = cuts.length + 1;
    const f = tuning.scale ?? 1;
    const blocks = this.costsOf(c.method).map((b) => ({
      ...b,
      forwardMs: b.forwardMs * f,
      backwardInputMs: b.backwardInputMs * f,
      backwardParamsMs: b.backwardParamsMs * f,
      decoderMs: b.decoderMs * f,
      updateMs: b.updateMs * f,
    }));
    return simulatePipeline({
      costs: mergeBlockCosts(blocks, cuts),
      contention: ranks === 1 ? 1 : tuning.contention,
      losses: resolveLosses(methodPreset(c.method, k), k),
      layout: assignStages(k, ranks),
      schedule: ranks === 1 ? "sync" : c.schedule,
      images: this.images,
      link: this.link,
    });
  }

  /**
   * The cuts into K stages the simulator finds fastest for the case: its own decoders, messages,
   * passes and (pipelined) late messages weigh in, so each case gets its own.
   */
  bestCuts(c: Case, k: number, tuning: Tuning = {}): number[] {
    const compute = this.costsOf(c.method).map((b) => b.forwardMs + b.backwardInputMs);
    return bestCuts(
      this.costsOf(c.method),
      k,
      (_, cuts) => this.simulate(c, cuts, cuts.length + 1, tuning).imagesPerSecond,
      balancedCuts(compute, k),
    );
  }

  /**
   * The cut into 2 stages that balances the case's work over 2 ranks: the smallest largest busy
   * time per step (its decoders, messages and late passes included). For the local methods it is
   * also the fastest cut; end to end and LoCo synchronous wait whatever the cut, and the fastest
   * cut for them would leave one rank almost nothing to do.
   */
  balancedSplit(c: Case): number[] {
    let best: number[] = [1];
    let bestBusy = Infinity;
    for (let cut = 1; cut < this.costsOf(c.method).length; cut++) {
      const busy = Math.max(...this.simulate(c, [cut], 2).busyMs);
      if (busy < bestBusy) {
        best = [cut];
        bestBusy = busy;
      }
    }
    return best;
  }

  /** K ranks of one stage each (cuts: the best for the case unless given). */
  predict(c: Case, k: number, cuts = this.bestCuts(c, k), tuning: Tuning = {}): Prediction {
    const parallel = this.simulate(c, cuts, k, tuning);
    const oneProcess = this.simulate(c, cuts, 1, tuning);
    return {
      name: c.name,
      ranks: k,
      cuts,
      imagesPerSecond: fixed(parallel.imagesPerSecond),
      speedup: fixed(parallel.imagesPerSecond / oneProcess.imagesPerSecond),
      waitShare: parallel.waitShare.map((w) => fixed(w, 3)),
    };
  }
}
