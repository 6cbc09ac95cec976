// The gradient router of docs/methods.md: losses at chosen stages, a reach per loss, and gradients moved
// between stages as explicit messages (vector-Jacobian products), in the memory-efficient order.
import { type Tensor, backward, noGrad, scope } from "../torch";

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
 * Runs one training step's forward and backward: parameters of stages and decoders accumulate
 * their gradients (call the optimizer afterwards). Each stage runs on a detached copy of its input,
 * so each has its own graph G_k; a loss at stage k sends the message ∂L_k/∂h_k down through its
 * reach, one backward pass per stage, asking autograd for the input gradient only when the message
 * continues below. Each loss is backpropagated as soon as its stage's forward is done, and the last
 * pass through a graph runs without retainGraph, which frees that graph's saved activations: with
 * reach r at most r+1 stage graphs are alive at once.
 *
 * Stages that no loss reaches run without recording a graph.
 */
export function routeStep(stages: readonly Forwardable[], losses: readonly StageLoss[], input: Tensor): RouteResult {
  validateLosses(stages.length, losses);
  const stageCount = stages.length;
  // Messages reaching stage j with the same remaining reach ρ are summed and sent in one pass
  // (docs/methods.md, "The gradient router"): count, per (stage, ρ), how many will arrive, and per stage how many
  // distinct passes it will see (the last one may free the stage's graph).
  const groups = new Set<string>();
  const expected = new Map<string, number>();
  const passesLeft = new Array<number>(stageCount).fill(0);
  const needsInputGrad = new Array<boolean>(stageCount).fill(false);
  for (const l of losses) {
    const own = `${l.stage}:${l.reach}`;
    expected.set(own, (expected.get(own) ?? 0) + 1);
    for (let j = l.stage; j >= l.stage - l.reach; j--) {
      const rho = l.reach - (l.stage - j);
      if (groups.has(`${j}:${rho}`)) continue;
      groups.add(`${j}:${rho}`);
      passesLeft[j]++;
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
  const passesPerStage = [...passesLeft];
  const lossAt = new Map(losses.map((l, i) => [l.stage, { spec: l, index: i }]));
  const top = Math.max(...losses.map((l) => l.stage));
  const stageParams = stages.map((s) => s.parameters());
  const lossValues = new Array<number>(losses.length).fill(NaN);

  scope(() => {
    const inputs: Tensor[] = [];
    const outputs: Tensor[] = [];
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
      if (wanted.length > 0) backward([outputs[j]], [sum], { retainGraph: passesLeft[j] > 0, inputs: wanted });
      sum.dispose();
      if (!continues) return;
      const next = inputs[j].grad;
      if (next === null) throw new Error(`routeStep: stage ${j} produced no input gradient`);
      inputs[j].grad = null;
      deliver(j - 1, rho - 1, next);
    };

    let previous = input;
    for (let k = 0; k <= top; k++) {
      const x = k === 0 ? previous : previous.detach();
      if (needsInputGrad[k]) x.requiresGrad_(true);
      const stage = stages[k];
      // The stage's own scope frees its intermediate handles at once: the activations then live
      // only in the graph, which the stage's last backward pass releases.
      const h = scope(() => (passesLeft[k] > 0 ? stage.forward(x) : noGrad(() => stage.forward(x))));
      inputs[k] = x;
      outputs[k] = h;
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
  return { lossValues, passesPerStage };
}
