// The gradient router of docs/methods.md: losses at chosen stages, a reach per loss, and gradients moved
// between stages as explicit messages (vector-Jacobian products), in the memory-efficient order.
import { type Tensor, backward, noGrad, scope } from "../torch";
import { withoutRunningStatsUpdate } from "../nn/batchnorm";

/** Anything with a forward pass and parameters: an encoder stage or a decoder. */
export interface Forwardable {
  forward(x: Tensor): Tensor;
  parameters(): Tensor[];
}

/** A loss attached to the output of one stage. */
export interface StageLoss {
  /** 0-based index of the stage whose output h_k the loss reads. */
  stage: number;
  /** How many stages below `stage` its gradient may travel (0: only its own stage). */
  reach: number;
  /** Maps h_k to the embedding z_k. */
  decoder: Forwardable;
  /** The loss of the embedding (e.g. NT-Xent with this stage's temperature). */
  loss: (z: Tensor) => Tensor;
}

export interface RouteResult {
  /** Loss value per entry of `losses`, in the same order. */
  lossValues: number[];
  /** Backward passes run through each stage's graph. */
  passesPerStage: number[];
  /** Forward passes recomputed for late messages, per stage (all 0 with overlap "retain"). */
  recomputesPerStage: number[];
  /**
   * Graph-free forward passes rerun per stage to restore an input or output that "recompute-min"
   * dropped during a pass below it (all 0 in the other modes).
   */
  restoresPerStage: number[];
}

/** Throws when the losses do not fit the stages. */
export function validateLosses(stageCount: number, losses: readonly StageLoss[]): void {
  const seen = new Set<number>();
  for (const [i, l] of losses.entries()) {
    if (!Number.isInteger(l.stage) || l.stage < 0 || l.stage >= stageCount) {
      throw new RangeError(`losses[${i}].stage: expected an integer in [0, ${stageCount - 1}], got ${l.stage}`);
    }
    if (!Number.isInteger(l.reach) || l.reach < 0 || l.reach > l.stage) {
      throw new RangeError(
        `losses[${i}].reach: expected an integer in [0, ${l.stage}] for stage ${l.stage}, got ${l.reach}`,
      );
    }
    if (seen.has(l.stage)) throw new RangeError(`losses[${i}]: stage ${l.stage} already has a loss`);
    seen.add(l.stage);
  }
}

/**
 * What happens to a stage's graph between its forward and its backward passes (docs/methods.md,
 * "Memory"):
 * - "retain": the graph is recorded in the forward and stays alive until its last pass (fast; LoCo
 *   then holds two stage graphs, its own and the one awaiting the bridge message from above);
 * - "recompute": a graph lives only for a pass at its stage's own time; a later message (LoCo's
 *   bridge from L_{k+1}, end to end's single loss) recomputes the stage from its saved input (batch
 *   norm running statistics untouched, so they are updated once per step), runs its pass and frees
 *   it again. About one extra forward pass per late pass; at most one stage graph alive, but it
 *   coexists with its stage's decoder graph;
 * - "recompute-all": no forward records a graph; every pass recomputes its stage from the saved
 *   input. A stage graph then never coexists with a decoder's graph (the decoder runs on the
 *   graph-free output first): the peak is the larger of the two instead of their sum, for one
 *   extra forward pass per pass;
 * - "recompute-min": "recompute-all", and a pass through stage j holds nothing of the stages above
 *   it: their inputs and outputs (LoCo's next-stage input during a bridge pass) are dropped before
 *   it and recomputed graph-free when next read (stage j+1's input is the pass's own recomputed
 *   output), and the message is handed to autograd, which frees it once its first node has read it.
 *   While a decoder runs, its stage's input is dropped too when the input below is held anyway.
 *   A pass then holds its stage's input, its graph and its backward buffers, as GIM's does; the
 *   cost is graph-free forwards (LoCo: two more per stage, five in all; see restoresPerStage).
 * All modes compute the same gradients for dropout-free stages.
 */
export type Overlap = "retain" | "recompute" | "recompute-all" | "recompute-min";
export const OVERLAP_MODES: readonly Overlap[] = ["retain", "recompute", "recompute-all", "recompute-min"];

export interface RouteOptions {
  /** Default "retain". */
  overlap?: Overlap;
}

/** The backward passes a step will run, planned before its forward. */
interface PassPlan {
  /** Messages each (stage, remaining reach) group waits for before its pass runs. */
  expected: Map<string, number>;
  /** Passes through each stage's graph. */
  passes: number[];
  /** Whether a pass through the stage sends a message further down (needs the input gradient). */
  needsInputGrad: boolean[];
  /** Whether the stage's own loss runs its pass at once (no message from above joins its group). */
  onTime: boolean[];
}

/**
 * Messages reaching stage j with the same remaining reach ρ are summed and sent in one pass
 * (docs/methods.md, "The gradient router"): counts, per (stage, ρ), how many will arrive, and per stage how many
 * distinct passes it will see (the last one may free the stage's graph).
 */
function planPasses(stageCount: number, losses: readonly StageLoss[]): PassPlan {
  const groups = new Set<string>();
  const expected = new Map<string, number>();
  const passes = new Array<number>(stageCount).fill(0);
  const needsInputGrad = new Array<boolean>(stageCount).fill(false);
  for (const l of losses) {
    const own = `${l.stage}:${l.reach}`;
    expected.set(own, (expected.get(own) ?? 0) + 1);
    for (let j = l.stage; j >= l.stage - l.reach; j--) {
      const rho = l.reach - (l.stage - j);
      if (groups.has(`${j}:${rho}`)) continue;
      groups.add(`${j}:${rho}`);
      passes[j]++;
      if (rho > 0 && j > 0) needsInputGrad[j] = true;
    }
  }
  // A group's pass sends one (summed) message to the group below it.
  for (const key of groups) {
    const [j, rho] = key.split(":").map(Number);
    if (rho > 0 && j > 0) {
      const below = `${j - 1}:${rho - 1}`;
      expected.set(below, (expected.get(below) ?? 0) + 1);
    }
  }
  const onTime = new Array<boolean>(stageCount).fill(false);
  for (const l of losses) onTime[l.stage] = expected.get(`${l.stage}:${l.reach}`) === 1;
  return { expected, passes, needsInputGrad, onTime };
}

/**
 * One step's bookkeeping: the stage inputs and outputs it holds, the messages waiting for the rest
 * of their group, and the passes left per stage. Every method runs inside routeStep's scope (not a
 * nested one), so the tensors they create live until the step ends unless disposed earlier.
 */
class StepRoute {
  /** x_k per stage; undefined: dropped by "recompute-min", recomputed when next read. */
  readonly #inputs: (Tensor | undefined)[] = [];
  /** h_k per stage; undefined as for inputs. */
  readonly #outputs: (Tensor | undefined)[] = [];
  /** Whether outputs[k] still carries stage k's graph. */
  readonly #hasGraph: boolean[] = [];
  readonly #pending = new Map<string, Tensor>();
  readonly #passesLeft: number[];
  readonly #stageParams: Tensor[][];
  readonly recomputes: number[];
  readonly restores: number[];
  /** The last stage whose forward has run. */
  #current = -1;

  readonly #stages: readonly Forwardable[];
  readonly #plan: PassPlan;
  readonly #overlap: Overlap;
  /** The highest stage with a loss: the step's last forward. */
  readonly #top: number;

  constructor(stages: readonly Forwardable[], plan: PassPlan, overlap: Overlap, top: number) {
    this.#stages = stages;
    this.#plan = plan;
    this.#overlap = overlap;
    this.#top = top;
    this.#passesLeft = [...plan.passes];
    this.#stageParams = stages.map((s) => s.parameters());
    this.recomputes = new Array<number>(stages.length).fill(0);
    this.restores = new Array<number>(stages.length).fill(0);
  }

  /** Runs stage k's forward (on the batch for k = 0), recording a graph only when a pass will use it. */
  forward(k: number, batch: Tensor): Tensor {
    const x = k === 0 ? batch : this.#inputOf(k);
    this.#inputs[k] = x;
    this.#release(k);
    const retain = this.#overlap === "retain";
    // Recording a graph that no pass will use before it is recomputed would only cost memory.
    const record = this.#passesLeft[k] > 0 && (retain || (this.#overlap === "recompute" && this.#plan.onTime[k]));
    const stage = this.#stages[k];
    // The stage's own scope frees its intermediate handles at once: the activations then live
    // only in the graph, which the stage's last backward pass releases.
    const h = scope(() => (record ? stage.forward(x) : noGrad(() => stage.forward(x))));
    this.#outputs[k] = h;
    this.#hasGraph[k] = record;
    this.#current = k;
    return h;
  }

  /**
   * Before stage k's decoder runs on h_k: with "recompute-min", x_k is dropped while the decoder's
   * graph is alive when x_{k-1} is held anyway (stage k-1 awaits a pass: LoCo's bridge); S_k's own
   * pass then recomputes it with one graph-free forward of S_{k-1}.
   */
  beforeLoss(k: number): void {
    if (this.#overlap !== "recompute-min" || k === 0 || this.#passesLeft[k - 1] === 0) return;
    const below = this.#inputs[k - 1];
    if (below === undefined || below.isDisposed) return;
    this.#drop(this.#inputs, k);
    this.#drop(this.#outputs, k - 1);
  }

  /** Delivers a message to stage j; runs the pass once every message of its (j, ρ) group is in. */
  deliver(j: number, rho: number, g: Tensor): void {
    const key = `${j}:${rho}`;
    const waiting = this.#pending.get(key);
    let sum = g;
    if (waiting !== undefined) {
      sum = waiting.add(g);
      waiting.dispose();
      g.dispose();
    }
    const remaining = this.#plan.expected.get(key)! - 1;
    this.#plan.expected.set(key, remaining);
    if (remaining > 0) {
      this.#pending.set(key, sum);
      return;
    }
    this.#pending.delete(key);
    this.#passesLeft[j]--;
    const continues = rho > 0 && j > 0;
    const x = this.#inputOf(j);
    const wanted = continues ? [x, ...this.#stageParams[j]] : this.#stageParams[j];
    if (wanted.length === 0) {
      sum.dispose();
      return;
    }
    if (this.#overlap === "recompute-min") this.#leanPass(j, sum, wanted);
    else this.#pass(j, sum, wanted);
    if (!continues) return;
    const next = x.grad;
    if (next === null) throw new Error(`routeStep: stage ${j} produced no input gradient`);
    x.grad = null;
    this.deliver(j - 1, rho - 1, next);
  }

  /** A pass through stage j's recorded graph, or (without one) through a graph recomputed from x_j. */
  #pass(j: number, sum: Tensor, wanted: Tensor[]): void {
    // Without a recorded graph (a late message with "recompute", every pass with "recompute-all"),
    // rebuild it from the saved input, without counting the batch in batch norm's running
    // statistics a second time.
    const output = this.#hasGraph[j] ? this.#outputs[j]! : this.#recompute(j);
    const retainGraph = this.#overlap === "retain" && this.#passesLeft[j] > 0;
    backward([output], [sum], { retainGraph, inputs: wanted });
    if (!retainGraph) this.#hasGraph[j] = false;
    if (output !== this.#outputs[j]) output.dispose();
    sum.dispose();
  }

  /**
   * "recompute-min"'s pass: everything held above stage j is dropped first (it can be recomputed
   * from x_j), and the message reaches autograd only as a saved tensor of ⟨h_j, g⟩, whose backward
   * node hands on 1·g (the same values) and then frees it.
   */
  #leanPass(j: number, sum: Tensor, wanted: Tensor[]): void {
    for (let m = j; m <= this.#current; m++) {
      this.#drop(this.#outputs, m);
      if (m > j) this.#drop(this.#inputs, m);
    }
    const output = this.#recompute(j);
    const root = scope(() => output.mul(sum).sum());
    sum.dispose();
    backward([root], [], { inputs: wanted });
    root.dispose();
    // The recomputed h_j is stage j+1's input, from which anything above is recomputed: keep it if
    // that will be read again.
    if (this.#readAgainAbove(j)) this.#outputs[j] = output.detach();
    output.dispose();
  }

  #recompute(j: number): Tensor {
    const x = this.#inputOf(j);
    this.recomputes[j]++;
    return scope(() => withoutRunningStatsUpdate(() => this.#stages[j].forward(x)));
  }

  /**
   * Whether an input of a stage above j will be read again: by a forward still to come, or by a
   * recompute for a pass still to come.
   */
  #readAgainAbove(j: number): boolean {
    return this.#current < this.#top || this.#passesLeft.slice(j + 1, this.#current + 1).some((n) => n > 0);
  }

  #drop(tensors: (Tensor | undefined)[], m: number): void {
    const t = tensors[m];
    if (t !== undefined && !t.isDisposed) t.dispose();
    tensors[m] = undefined;
  }

  /** x_k, recomputed from below if "recompute-min" dropped it. */
  #inputOf(k: number): Tensor {
    let x = this.#inputs[k];
    if (x === undefined) {
      x = this.#outputOf(k - 1).detach();
      if (this.#plan.needsInputGrad[k]) x.requiresGrad_(true);
      this.#inputs[k] = x;
    }
    return x;
  }

  /** h_k, recomputed graph-free (batch norm statistics untouched) if "recompute-min" dropped it. */
  #outputOf(k: number): Tensor {
    let h = this.#outputs[k];
    if (h === undefined) {
      const x = this.#inputOf(k);
      h = scope(() => withoutRunningStatsUpdate(() => noGrad(() => this.#stages[k].forward(x))));
      this.restores[k]++;
      this.#outputs[k] = h;
      this.#hasGraph[k] = false;
    }
    return h;
  }

  /**
   * Stage inputs and outputs that no pass and no recompute will read again are released as the
   * step goes on, instead of at its end: before S_k's forward, x_j and h_j of every stage j < k
   * whose passes are done (x_k, a detached h_{k-1}, keeps the storage it shares).
   */
  #release(k: number): void {
    for (let j = 0; j < k; j++) {
      if (this.#passesLeft[j] > 0) continue;
      if (j > 0) this.#drop(this.#inputs, j);
      this.#drop(this.#outputs, j);
    }
  }
}

/**
 * Runs one training step's forward and backward: parameters of stages and decoders accumulate
 * their gradients (call the optimizer afterwards). Each stage runs on a detached copy of its input,
 * so each has its own graph G_k; a loss at stage k sends the message ∂L_k/∂h_k down through its
 * reach, one backward pass per stage, asking autograd for the input gradient only when the message
 * continues below. Each loss is backpropagated as soon as its stage's forward is done, and the last
 * pass through a graph runs without retainGraph, which frees that graph's saved activations: with
 * reach r at most r+1 stage graphs are alive at once ("retain"), or one ("recompute"), never beside a
 * decoder graph ("recompute-all"), nor beside anything of the stages above ("recompute-min"; see
 * Overlap).
 *
 * Stages that no loss reaches run without recording a graph.
 */
export function routeStep(
  stages: readonly Forwardable[],
  losses: readonly StageLoss[],
  input: Tensor,
  options: RouteOptions = {},
): RouteResult {
  validateLosses(stages.length, losses);
  const overlap = options.overlap ?? "retain";
  if (!OVERLAP_MODES.includes(overlap)) {
    throw new RangeError(`overlap: expected one of ${OVERLAP_MODES.join(", ")}, got ${JSON.stringify(overlap)}`);
  }
  const plan = planPasses(stages.length, losses);
  const lossAt = new Map(losses.map((l, i) => [l.stage, { spec: l, index: i }]));
  const top = Math.max(...losses.map((l) => l.stage));
  const lossValues = new Array<number>(losses.length).fill(NaN);
  const route = new StepRoute(stages, plan, overlap, top);
  scope(() => {
    for (let k = 0; k <= top; k++) {
      const h = route.forward(k, input);
      const entry = lossAt.get(k);
      if (entry === undefined) continue;
      route.beforeLoss(k);
      // The decoder's graph is its own: backprop the loss into the decoder and a detached h_k,
      // whose gradient is the message for stage k.
      const message = scope(() => {
        const hDetached = h.detach().requiresGrad_(true);
        const value = entry.spec.loss(entry.spec.decoder.forward(hDetached));
        lossValues[entry.index] = value.item();
        value.backward();
        return hDetached.grad as Tensor;
      });
      route.deliver(k, entry.spec.reach, message);
    }
  });
  return {
    lossValues,
    passesPerStage: plan.passes,
    recomputesPerStage: route.recomputes,
    restoresPerStage: route.restores,
  };
}
