// Stage parallelism's layout (docs/distributed.md, "Stage parallel"): which contiguous stages each
// rank holds, and which gradient messages of the router (docs/methods.md, "The gradient router")
// cross a rank boundary. Pure planning: no tensors, no communication.
import { balancedCuts } from "./split";

/** The stages one rank holds: first … last, 0-based and inclusive. */
export interface RankStages {
  first: number;
  last: number;
}

/**
 * How a run's schedule treats gradient messages that cross a rank boundary:
 * - "sync": a rank waits for the messages from the rank above before its update. Equal to the
 *   single-process router (end to end: every rank waits for the whole backward above it).
 * - "pipelined": a rank goes on with the next batch; a message from above is applied one step
 *   later (one step stale), through the graph its stages kept from that batch (with the weights it
 *   ran with) or through those stages recomputed with the current weights (StageParallelOptions'
 *   lateMessages). Only for messages that stop on the rank that receives them (LoCo's, GIM has none).
 */
export type StageSchedule = "sync" | "pipelined";
export const STAGE_SCHEDULES: readonly StageSchedule[] = ["sync", "pipelined"];

/** A source of gradient: a loss at `stage`, or a message arriving at `stage`, with its remaining reach. */
export interface MessageSource {
  stage: number;
  reach: number;
}

/**
 * Stages per rank: contiguous groups minimising the largest group's cost (`costs` per stage,
 * default 1 each, so with equal costs every rank gets ⌊K/R⌋ or ⌈K/R⌉ stages).
 */
export function assignStages(stageCount: number, ranks: number, costs?: readonly number[]): RankStages[] {
  if (!Number.isInteger(ranks) || ranks < 1 || ranks > stageCount) {
    throw new RangeError(
      `stage parallel: ${ranks} ranks need between 1 and ${stageCount} ranks for ${stageCount} stages (each rank holds at least one stage)`,
    );
  }
  const weights = costs ?? new Array<number>(stageCount).fill(1);
  if (weights.length !== stageCount)
    throw new RangeError(`assignStages: ${weights.length} costs for ${stageCount} stages`);
  const bounds = [0, ...balancedCuts(weights, ranks), stageCount];
  return bounds.slice(1).map((end, r) => ({ first: bounds[r], last: end - 1 }));
}

/** The passes a set of gradient sources causes on stages first … (and messages leaving below first). */
export interface PassPlan {
  /** Messages each (stage, remaining reach) group waits for before its pass runs. */
  expected: Map<string, number>;
  /** Passes through each stage's graph, by stage index. */
  passes: Map<number, number>;
  /** Stages whose passes send a message further down (they need their input's gradient). */
  needsInputGrad: Set<number>;
  /** Remaining reach of the messages that leave stage `first` for the stage below it. */
  leaving: number[];
}

/**
 * The router's grouping (docs/methods.md): messages reaching stage j with the same remaining reach ρ
 * are summed and sent on in one pass. Plans the groups of `sources` on stages ≥ first.
 */
export function planPasses(sources: readonly MessageSource[], first: number): PassPlan {
  const groups = new Set<string>();
  const expected = new Map<string, number>();
  const passes = new Map<number, number>();
  const needsInputGrad = new Set<number>();
  const add = (key: string): void => void expected.set(key, (expected.get(key) ?? 0) + 1);
  for (const s of sources) {
    add(`${s.stage}:${s.reach}`);
    for (let j = s.stage; j >= Math.max(first, s.stage - s.reach); j--) {
      const rho = s.reach - (s.stage - j);
      if (groups.has(`${j}:${rho}`)) continue;
      groups.add(`${j}:${rho}`);
      passes.set(j, (passes.get(j) ?? 0) + 1);
      if (rho > 0 && j > 0) needsInputGrad.add(j);
    }
  }
  const leaving: number[] = [];
  for (const key of groups) {
    const [j, rho] = key.split(":").map(Number);
    if (rho === 0 || j === 0) continue;
    if (j === first) leaving.push(rho - 1);
    else add(`${j - 1}:${rho - 1}`);
  }
  return { expected, passes, needsInputGrad, leaving: leaving.sort((a, b) => a - b) };
}

/** What one rank computes and exchanges. */
export interface RankPlan {
  rank: number;
  stages: RankStages;
  /** Indices (into the losses) of the losses at this rank's stages. */
  losses: number[];
  /** Remaining reach of each message the rank above sends into this rank's last stage. */
  incoming: number[];
  /** Remaining reach of each message this rank sends into the last stage of the rank below. */
  outgoing: number[];
}

/** Every rank's plan for `losses` (0-based stages, reach) on `layout`. */
export function planRanks(layout: readonly RankStages[], losses: readonly MessageSource[]): RankPlan[] {
  const plans = layout.map((stages, rank): RankPlan => {
    const own = losses.flatMap((l, i) => (l.stage >= stages.first && l.stage <= stages.last ? [i] : []));
    return { rank, stages, losses: own, incoming: [], outgoing: [] };
  });
  // Top down: a rank's sources are its own losses and what the rank above sends it.
  for (let r = layout.length - 1; r >= 0; r--) {
    const sources = [
      ...plans[r].losses.map((i) => losses[i]),
      ...plans[r].incoming.map((reach) => ({ stage: layout[r].last, reach })),
    ];
    const { leaving } = planPasses(sources, layout[r].first);
    plans[r].outgoing = layout[r].first === 0 ? [] : leaving;
    if (r > 0) plans[r - 1].incoming = plans[r].outgoing;
  }
  return plans;
}

/**
 * Throws unless the pipelined schedule applies: every message from the rank above must stop on the
 * rank that receives it (otherwise a late message would travel on, later still, to the ranks below).
 */
export function checkPipelined(plans: readonly RankPlan[]): void {
  for (const p of plans) {
    const span = p.stages.last - p.stages.first;
    const far = p.incoming.find((reach) => reach > span);
    if (far !== undefined) {
      throw new RangeError(
        `schedule "pipelined": a gradient message from rank ${p.rank + 1} would cross rank ${p.rank} (stages ${p.stages.first + 1}-${p.stages.last + 1}) to the ranks below; ` +
          `pipelining needs messages that stop on the next rank down (LoCo's reach 1, GIM): use schedule "sync"`,
      );
    }
  }
}
