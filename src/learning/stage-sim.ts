// A pipeline simulator for stage parallelism (docs/distributed.md, "Predicting more ranks"): it
// replays what StageParallelWorker does on each rank, the router's passes included (planPasses),
// with measured per-stage times instead of tensors, and predicts each schedule's throughput and
// each rank's wait share; ranks sharing one machine can be slowed by a measured contention factor.
// Pure arithmetic: no tensors, no processes.
import {
  type MessageSource,
  type PassPlan,
  type RankStages,
  type StageSchedule,
  planPasses,
  planRanks,
} from "./stage-layout";

/** Measured milliseconds of one stage on one batch (profileStageCosts measures them). */
export interface StageCosts {
  /** The stage's forward, recording its graph. */
  forwardMs: number;
  /** A backward pass through the stage that also computes its input's gradient. */
  backwardInputMs: number;
  /** A backward pass through the stage for its parameters only. */
  backwardParamsMs: number;
  /** The decoder at the stage's output: forward, loss, backward and its update (when the stage has a loss). */
  decoderMs: number;
  /** The optimizer's update of the stage's parameters. */
  updateMs: number;
  /** Bytes of the stage's output (an activation or gradient message crossing a rank boundary). */
  outputBytes: number;
}

/** A point-to-point link: a message of b bytes takes latencyMs + b / bytesPerMs. */
export interface Link {
  latencyMs: number;
  bytesPerMs: number;
}

/** Loopback TCP between two processes of one machine, roughly (an assumption, not measured). */
export const LOOPBACK_LINK: Link = { latencyMs: 0.1, bytesPerMs: 1e6 };

export interface SimulationInput {
  costs: readonly StageCosts[];
  /** The losses (0-based stage, reach), as LocalLearner.losses. */
  losses: readonly MessageSource[];
  layout: readonly RankStages[];
  schedule: StageSchedule;
  /** Images per step. */
  images: number;
  /** Steps simulated (default 40; the second half is measured). */
  steps?: number;
  link?: Link;
  /** Pipelined: how late messages are applied, as StageParallelOptions.lateMessages (default "keep-graph"). */
  lateMessages?: "keep-graph" | "recompute";
  /**
   * How much slower a rank computes while another rank computes too (ranks sharing one machine's
   * cores, caches and memory bandwidth; measured: one process's time with a second busy one beside
   * it, over its time alone). Default 1: no contention (ranks on separate machines). Each rank's
   * compute is scaled by 1 + (contention − 1) × Σ (the other ranks' busy shares), iterated to a
   * fixed point.
   */
  contention?: number;
}

export interface SimulationResult {
  imagesPerSecond: number;
  /** Per rank: the share of its time blocked on messages, in the measured steps. */
  waitShare: number[];
  /** Milliseconds per step in the steady state. */
  stepMs: number;
  /** Per rank: milliseconds computing per step (contention included), the rest of stepMs waiting. */
  busyMs: number[];
  /** Per rank: the factor its compute was scaled by for contention (1 without). */
  slowdown: number[];
}

/** The router's passes with times: delivering a message advances a clock by the passes it runs. */
class TimedRoute {
  readonly #expected: Map<string, number>;
  readonly #first: number;
  readonly #costs: readonly StageCosts[];
  /** Messages leaving the first stage: remaining reach and the time they were produced. */
  leaving: { reach: number; at: number }[] = [];
  time: number;

  constructor(costs: readonly StageCosts[], first: number, plan: PassPlan, start: number) {
    this.#costs = costs;
    this.#first = first;
    this.#expected = new Map(plan.expected);
    this.time = start;
  }

  deliver(j: number, rho: number): void {
    const key = `${j}:${rho}`;
    const remaining = (this.#expected.get(key) ?? 0) - 1;
    this.#expected.set(key, remaining);
    if (remaining > 0) return;
    const continues = rho > 0 && j > 0;
    this.time += continues ? this.#costs[j].backwardInputMs : this.#costs[j].backwardParamsMs;
    if (!continues) return;
    if (j === this.#first) this.leaving.push({ reach: rho - 1, at: this.time });
    else this.deliver(j - 1, rho - 1);
  }
}

/** Simulates `steps` steps of the schedule on the layout and measures the second half. */
export function simulatePipeline(input: SimulationInput): SimulationResult {
  const contention = input.contention ?? 1;
  const ranks = input.layout.length;
  let slowdown = new Array<number>(ranks).fill(1);
  let result = simulateWith(input, slowdown);
  if (contention === 1 || ranks === 1) return result;
  // A fixed point: the slowdowns change the busy shares, which set the slowdowns.
  for (let i = 0; i < 50; i++) {
    const busy = result.waitShare.map((w) => 1 - w);
    const total = busy.reduce((a, b) => a + b, 0);
    const next = busy.map((b) => 1 + (contention - 1) * (total - b));
    const moved = Math.max(...next.map((x, r) => Math.abs(x - slowdown[r])));
    if (moved < 1e-9) break;
    slowdown = next;
    result = simulateWith(input, slowdown);
  }
  return result;
}

/** Per-stage costs with the compute times scaled (bytes unchanged). */
const scaled = (c: StageCosts, f: number): StageCosts => ({
  forwardMs: c.forwardMs * f,
  backwardInputMs: c.backwardInputMs * f,
  backwardParamsMs: c.backwardParamsMs * f,
  decoderMs: c.decoderMs * f,
  updateMs: c.updateMs * f,
  outputBytes: c.outputBytes,
});

function simulateWith(input: SimulationInput, slowdown: readonly number[]): SimulationResult {
  const { losses, layout, schedule, images } = input;
  const keepGraph = (input.lateMessages ?? "keep-graph") === "keep-graph";
  // Each rank's view of the costs: its own stages scaled by its slowdown.
  const rankCosts = layout.map((_, r) => input.costs.map((c) => scaled(c, slowdown[r])));
  const costs = input.costs;
  const steps = input.steps ?? 40;
  const link = input.link ?? LOOPBACK_LINK;
  const plans = planRanks(layout, losses);
  const ranks = layout.length;
  // Gloo hands a message over once its receiver has posted the receive: the data leaves when both
  // the send is posted and the receiver's notice has crossed the link, and arrives a latency and
  // its bytes later; the sender's operation completes once the bytes are written.
  const handOver = (sent: number, posted: number, bytes: number): { arrival: number; taken: number } => {
    const start = Math.max(sent, posted + link.latencyMs);
    return { arrival: start + link.latencyMs + bytes / link.bytesPerMs, taken: start + bytes / link.bytesPerMs };
  };
  const boundaryBytes = (r: number): number => costs[layout[r].first - 1].outputBytes;
  const free = new Array<number>(ranks).fill(0);
  const waits: number[][] = [];
  const ends: number[][] = [];
  /** messages[s][r]: when rank r+1 sent rank r the messages (by reach) of step s. */
  const messages: Map<number, number>[][] = [];
  const lossesOf = (r: number): MessageSource[] => plans[r].losses.map((i) => losses[i]);
  // A rank ends step s by waiting for its sends of step s−1 to be taken (StageParallelWorker's settle).
  /**
   * posted[s][r]: when rank r posted the receive of step s's activation: a step ahead, when it took
   * step s−1's (the start of its step s−1; src/learning/stage-activations.ts); step 0's at once.
   */
  const activationPosted: number[][] = [];
  /** starts[r]: when rank r started its last step. */
  const starts = new Array<number>(ranks).fill(0);
  /** activationTaken[s][r]: when rank r+1 took rank r's activation of step s. */
  const activationTaken: number[][] = [];
  /** When rank r posted the receives of the messages about step s: once its forward had sent the activation. */
  const gradientPosted: number[][] = [];
  /** Keep-graph: each rank's previous route, waiting for the late messages. */
  let stale: (TimedRoute | null)[] = layout.map(() => null);

  for (let s = 0; s < steps; s++) {
    const wait = new Array<number>(ranks).fill(0);
    const arrivals = layout.map(() => new Map<number, number>());
    messages.push(arrivals);
    const activation = new Array<number>(ranks).fill(0);
    const blockUntil = (r: number, t: number, at: number): number => {
      if (at > t) wait[r] += at - t;
      return Math.max(t, at);
    };
    const sendDown = (r: number, route: TimedRoute): void => {
      for (const m of route.leaving) arrivals[r - 1].set(m.reach, m.at);
      route.leaving = [];
    };
    /** When the message rank r receives (sent by r+1 at step `step`) arrives. */
    const gradientArrival = (r: number, step: number, reach: number): number =>
      handOver(messages[step][r].get(reach)!, gradientPosted[step][r], boundaryBytes(r + 1)).arrival;
    const routes: TimedRoute[] = [];
    const kept: (TimedRoute | null)[] = layout.map(() => null);
    activationPosted.push([...starts]);
    activationTaken.push(new Array<number>(ranks).fill(0));
    gradientPosted.push(new Array<number>(ranks).fill(0));
    // Up: each rank's forward, its own losses and the passes they complete.
    for (let r = 0; r < ranks; r++) {
      const { first, last } = layout[r];
      const sync = schedule === "sync";
      const c = rankCosts[r];
      // Keep-graph: the late messages' passes are planned with the step's own (the router's groups).
      const planned = sync || keepGraph;
      const sources = [...lossesOf(r), ...(planned ? plans[r].incoming.map((reach) => ({ stage: last, reach })) : [])];
      const start = r === 0 ? free[r] : blockUntil(r, free[r], activation[r]);
      starts[r] = start;
      const route = new TimedRoute(c, first, planPasses(sources, first), start);
      for (let k = first; k <= last; k++) {
        route.time += c[k].forwardMs;
        if (k === last && r < ranks - 1) {
          const sent = handOver(route.time, activationPosted[s][r + 1], costs[k].outputBytes);
          activation[r + 1] = sent.arrival;
          activationTaken[s][r] = sent.taken;
        }
        if (k === last) gradientPosted[s][r] = route.time;
        for (const l of lossesOf(r)) {
          if (l.stage !== k) continue;
          route.time += c[k].decoderMs;
          route.deliver(k, l.reach);
        }
      }
      sendDown(r, route);
      if (!sync && keepGraph && plans[r].incoming.length > 0) {
        // Pipelined, keep-graph: the previous step's messages, through the previous step's graph.
        const previous = stale[r];
        if (previous !== null) {
          previous.time = route.time;
          for (const reach of plans[r].incoming) {
            previous.time = blockUntil(r, previous.time, gradientArrival(r, s - 1, reach));
            previous.deliver(last, reach);
          }
          route.time = previous.time;
        }
        kept[r] = route;
      } else if (!sync && s > 0 && plans[r].incoming.length > 0) {
        // Pipelined, recompute: the previous step's messages, through the stages recomputed for them.
        const low = last - Math.max(...plans[r].incoming);
        for (let k = low; k <= last; k++) route.time += c[k].forwardMs;
        const late = new TimedRoute(
          c,
          low,
          planPasses(
            plans[r].incoming.map((reach) => ({ stage: last, reach })),
            low,
          ),
          route.time,
        );
        for (const reach of plans[r].incoming) {
          late.time = blockUntil(r, late.time, gradientArrival(r, s - 1, reach));
          late.deliver(last, reach);
        }
        route.time = late.time;
      }
      routes.push(route);
    }
    // Down (sync): the messages from above, top rank first.
    for (let r = ranks - 1; r >= 0; r--) {
      const route = routes[r];
      if (schedule === "sync") {
        for (const reach of plans[r].incoming) {
          route.time = blockUntil(r, route.time, gradientArrival(r, s, reach));
          route.deliver(layout[r].last, reach);
        }
        if (r > 0) sendDown(r, route);
      }
      if (s > 0) {
        let taken = r < ranks - 1 ? activationTaken[s - 1][r] : 0;
        for (const sent of r > 0 ? messages[s - 1][r - 1].values() : []) {
          taken = Math.max(taken, handOver(sent, gradientPosted[s - 1][r - 1], boundaryBytes(r)).taken);
        }
        route.time = blockUntil(r, route.time, taken);
      }
      for (let k = layout[r].first; k <= layout[r].last; k++) route.time += rankCosts[r][k].updateMs;
      free[r] = route.time;
    }
    stale = kept;
    waits.push(wait);
    ends.push([...free]);
  }
  const from = Math.floor(steps / 2) - 1;
  const span = Math.max(...ends[steps - 1]) - Math.max(...ends[from]);
  const measured = steps - 1 - from;
  const waitShare = layout.map((_, r) => {
    let w = 0;
    for (let s = from + 1; s < steps; s++) w += waits[s][r];
    return Math.min(1, w / span);
  });
  const stepMs = span / measured;
  return {
    imagesPerSecond: (images * 1000) / stepMs,
    waitShare,
    stepMs,
    busyMs: waitShare.map((w) => stepMs * (1 - w)),
    slowdown: [...slowdown],
  };
}

/**
 * Costs of coarser stages from per-block costs: stage s holds blocks cuts[s−1] … cuts[s]−1. Its
 * forward and input-gradient backward add up; a parameters-only pass still needs the input
 * gradients inside the stage (all blocks but its first); its decoder is the one at its last block.
 */
export function mergeBlockCosts(blocks: readonly StageCosts[], cuts: readonly number[]): StageCosts[] {
  const bounds = [0, ...cuts, blocks.length];
  return bounds.slice(1).map((end, s) => {
    const group = blocks.slice(bounds[s], end);
    const sum = (f: (c: StageCosts) => number): number => group.reduce((a, c) => a + f(c), 0);
    return {
      forwardMs: sum((c) => c.forwardMs),
      backwardInputMs: sum((c) => c.backwardInputMs),
      backwardParamsMs: group[0].backwardParamsMs + sum((c) => c.backwardInputMs) - group[0].backwardInputMs,
      decoderMs: group[group.length - 1].decoderMs,
      updateMs: sum((c) => c.updateMs),
      outputBytes: group[group.length - 1].outputBytes,
    };
  });
}

/**
 * The cuts of `blocks` into K stages, one per rank, under which the simulator predicts the most
 * images/s for the schedule: starting from cuts that balance forward + backward time, each cut
 * moves one block at a time while that helps (a local search: the decoders and messages make the
 * cost of a stage depend on where it ends, so no additive cost balances it exactly).
 */
export function bestCuts(
  blocks: readonly StageCosts[],
  k: number,
  simulate: (costs: StageCosts[], cuts: number[]) => number,
  start: number[],
): number[] {
  let cuts = [...start];
  let best = simulate(mergeBlockCosts(blocks, cuts), cuts);
  for (let improved = true; improved;) {
    improved = false;
    for (let i = 0; i < k - 1; i++) {
      for (const delta of [-1, 1]) {
        const candidate = [...cuts];
        candidate[i] += delta;
        const low = i === 0 ? 1 : candidate[i - 1] + 1;
        const high = i === k - 2 ? blocks.length - 1 : candidate[i + 1] - 1;
        if (candidate[i] < low || candidate[i] > high) continue;
        const value = simulate(mergeBlockCosts(blocks, candidate), candidate);
        if (value > best * (1 + 1e-9)) {
          best = value;
          cuts = candidate;
          improved = true;
        }
      }
    }
  }
  return cuts;
}
