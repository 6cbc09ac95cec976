// The gradient router of docs/methods.md: losses at chosen stages, a reach per loss, and gradients moved
// between stages as explicit messages (vector-Jacobian products), in the memory-efficient order.
import { type Tensor, backward, noGrad, scope } from "../torch";
import { withoutRunningStatsUpdate } from "../nn/layers";

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
 *   extra forward pass per pass.
 * All modes compute the same gradients for dropout-free stages.
 */
export type Overlap = "retain" | "recompute" | "recompute-all";
export const OVERLAP_MODES: readonly Overlap[] = ["retain", "recompute", "recompute-all"];

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
 * Runs one training step's forward and backward: parameters of stages and decoders accumulate
 * their gradients (call the optimizer afterwards). Each stage runs on a detached copy of its input,
 * so each has its own graph G_k; a loss at stage k sends the message ∂L_k/∂h_k down through its
 * reach, one backward pass per stage, asking autograd for the input gradient only when the message
 * continues below. Each loss is backpropagated as soon as its stage's forward is done, and the last
 * pass through a graph runs without retainGraph, which frees that graph's saved activations: with
 * reach r at most r+1 stage graphs are alive at once ("retain"), or one ("recompute"), never beside a
 * decoder graph ("recompute-all", see Overlap).
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
  const retain = overlap === "retain";
  const { expected, passes, needsInputGrad, onTime } = planPasses(stages.length, losses);
  const passesLeft = [...passes];
  const recomputes = new Array<number>(stages.length).fill(0);
  const lossAt = new Map(losses.map((l, i) => [l.stage, { spec: l, index: i }]));
  const top = Math.max(...losses.map((l) => l.stage));
  const stageParams = stages.map((s) => s.parameters());
  const lossValues = new Array<number>(losses.length).fill(NaN);

  scope(() => {
    const inputs: Tensor[] = [];
    const outputs: Tensor[] = [];
    /** Whether outputs[k] still carries stage k's graph. */
    const hasGraph: boolean[] = [];
    const pending = new Map<string, Tensor>();

    // Delivers a message to stage j; runs the pass once every message of its (j, ρ) group is in.
    const deliver = (j: number, rho: number, g: Tensor): void => {
      const key = `${j}:${rho}`;
      const waiting = pending.get(key);
      let sum = g;
      if (waiting !== undefined) {
        sum = waiting.add(g);
        waiting.dispose();
        g.dispose();
      }
      const remaining = expected.get(key)! - 1;
      expected.set(key, remaining);
      if (remaining > 0) {
        pending.set(key, sum);
        return;
      }
      pending.delete(key);
      passesLeft[j]--;
      const continues = rho > 0 && j > 0;
      const wanted = continues ? [inputs[j], ...stageParams[j]] : stageParams[j];
      if (wanted.length > 0) {
        // A pass without a recorded graph (a late message with "recompute", every pass with
        // "recompute-all"): rebuild the graph from the saved input, without counting the batch in
        // batch norm's running statistics a second time.
        let output = outputs[j];
        if (!hasGraph[j]) {
          output = scope(() => withoutRunningStatsUpdate(() => stages[j].forward(inputs[j])));
          recomputes[j]++;
        }
        const retainGraph = retain && passesLeft[j] > 0;
        backward([output], [sum], { retainGraph, inputs: wanted });
        if (!retainGraph) hasGraph[j] = false;
        if (output !== outputs[j]) output.dispose();
      }
      sum.dispose();
      if (!continues) return;
      const next = inputs[j].grad;
      if (next === null) throw new Error(`routeStep: stage ${j} produced no input gradient`);
      inputs[j].grad = null;
      deliver(j - 1, rho - 1, next);
    };

    // Stage inputs and outputs that no pass and no recompute will read again are released as the
    // step goes on, instead of at its end: before S_k's forward, x_j and h_j of every stage j < k
    // whose passes are done (x_k, a detached h_{k-1}, keeps the storage it shares).
    const release = (k: number): void => {
      for (let j = 0; j < k; j++) {
        if (passesLeft[j] > 0) continue;
        if (j > 0 && !inputs[j].isDisposed) inputs[j].dispose();
        if (!outputs[j].isDisposed) outputs[j].dispose();
      }
    };

    let previous = input;
    for (let k = 0; k <= top; k++) {
      const x = k === 0 ? previous : previous.detach();
      release(k);
      if (needsInputGrad[k]) x.requiresGrad_(true);
      const stage = stages[k];
      // Recording a graph that no pass will use before it is recomputed would only cost memory.
      const record = passesLeft[k] > 0 && (retain || (overlap === "recompute" && onTime[k]));
      // The stage's own scope frees its intermediate handles at once: the activations then live
      // only in the graph, which the stage's last backward pass releases.
      const h = scope(() => (record ? stage.forward(x) : noGrad(() => stage.forward(x))));
      inputs[k] = x;
      outputs[k] = h;
      hasGraph[k] = record;
      previous = h;

      const entry = lossAt.get(k);
      if (entry === undefined) continue;
      // The decoder's graph is its own: backprop the loss into the decoder and a detached h_k,
      // whose gradient is the message for stage k.
      const message = scope(() => {
        const hDetached = h.detach().requiresGrad_(true);
        const value = entry.spec.loss(entry.spec.decoder.forward(hDetached));
        lossValues[entry.index] = value.item();
        value.backward();
        return hDetached.grad as Tensor;
      });
      deliver(k, entry.spec.reach, message);
    }
  });
  return { lossValues, passesPerStage: passes, recomputesPerStage: recomputes };
}
