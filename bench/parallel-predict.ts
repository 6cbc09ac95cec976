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
  simulate(c: Case, cuts: number[], ranks = cuts.length + 1): SimulationResult {
    const k = cuts.length + 1;
    return simulatePipeline({
      costs: mergeBlockCosts(this.costsOf(c.method), cuts),
      losses: resolveLosses(methodPreset(c.method, k), k),
      layout: assignStages(k, ranks),
      schedule: ranks === 1 ? "sync" : c.schedule,
      images: this.images,
      link: this.link,
    });
  }

  /** The cuts into K stages the simulator finds fastest for the case. */
  bestCuts(c: Case, k: number): number[] {
    const compute = this.blocks.conv.map((b) => b.forwardMs + b.backwardInputMs);
    return bestCuts(
      this.costsOf(c.method),
      k,
      (_, cuts) => this.simulate(c, cuts).imagesPerSecond,
      balancedCuts(compute, k),
    );
  }

  /** K ranks of one stage each (cuts: the best for the case unless given). */
  predict(c: Case, k: number, cuts = this.bestCuts(c, k)): Prediction {
    const parallel = this.simulate(c, cuts);
    const oneProcess = this.simulate(c, cuts, 1);
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
