// The gradient router (router.ts, docs/methods.md) on one rank's slice of the stages: the rank's
// forward, its own losses and the messages from the rank above are delivered as in routeStep
// (summed per (stage, remaining reach) group, one backward pass each, the graph freed by its last
// pass); messages that leave the slice's first stage are collected for the rank below.
// Its methods are synchronous and keep every tensor they store, so a step can await the network
// between them (scopes cannot span an await).
import { type Tensor, backward, keep, noGrad, scope } from "../torch";
import type { Forwardable, StageLoss } from "./router";
import type { PassPlan } from "./stage-layout";

/** A message leaving the slice for the stage below it. */
export interface LeavingMessage {
  reach: number;
  gradient: Tensor;
}

export class SliceRoute {
  readonly #stages: readonly Forwardable[];
  readonly #first: number;
  readonly #plan: PassPlan;
  readonly #expected: Map<string, number>;
  readonly #passesLeft: Map<number, number>;
  readonly #inputs = new Map<number, Tensor>();
  readonly #outputs = new Map<number, Tensor>();
  readonly #pending = new Map<string, Tensor>();
  /** Messages for the rank below, in the order they were produced; the caller takes them. */
  leaving: LeavingMessage[] = [];

  /** `stages` are indexed globally; the slice starts at `first`. */
  constructor(stages: readonly Forwardable[], first: number, plan: PassPlan) {
    this.#stages = stages;
    this.#first = first;
    this.#plan = plan;
    this.#expected = new Map(plan.expected);
    this.#passesLeft = new Map(plan.passes);
  }

  /**
   * Runs stage k on `x` (the slice's input for its first stage, else stage k−1's output), recording
   * a graph when a pass will use it. Returns h_k (owned by the route).
   */
  forward(k: number, x: Tensor): Tensor {
    return scope(() => {
      const input = k === this.#first ? x : x.detach();
      if (this.#plan.needsInputGrad.has(k) && !input.requiresGrad) input.requiresGrad_(true);
      const record = (this.#passesLeft.get(k) ?? 0) > 0;
      const stage = this.#stages[k];
      const h = scope(() => (record ? stage.forward(input) : noGrad(() => stage.forward(input))));
      if (input !== x) keep(input);
      this.#inputs.set(k, input);
      this.#outputs.set(k, keep(h));
      return h;
    });
  }

  /** Runs a loss on h_k (its decoder's graph is its own) and delivers its message; returns the loss value. */
  loss(k: number, spec: StageLoss): number {
    let value = NaN;
    const message = scope(() => {
      const hDetached = this.#outputs.get(k)!.detach().requiresGrad_(true);
      const loss = spec.loss(spec.decoder.forward(hDetached));
      value = loss.item();
      loss.backward();
      return keep(hDetached.grad as Tensor);
    });
    this.deliver(k, spec.reach, message);
    return value;
  }

  /**
   * Delivers a message to stage j's output (the route takes `g`); runs the group's pass once every
   * message of its (j, ρ) group is in, and passes the input gradient on.
   */
  deliver(j: number, rho: number, g: Tensor): void {
    const key = `${j}:${rho}`;
    const waiting = this.#pending.get(key);
    let sum = g;
    if (waiting !== undefined) {
      sum = keep(noGrad(() => waiting.add(g)));
      waiting.dispose();
      g.dispose();
    }
    const remaining = (this.#expected.get(key) ?? 0) - 1;
    if (remaining < 0) throw new Error(`stage parallel: unexpected gradient message for stage ${j + 1} (reach ${rho})`);
    this.#expected.set(key, remaining);
    if (remaining > 0) {
      this.#pending.set(key, sum);
      return;
    }
    this.#pending.delete(key);
    const passesLeft = this.#passesLeft.get(j)! - 1;
    this.#passesLeft.set(j, passesLeft);
    const continues = rho > 0 && j > 0;
    const input = this.#inputs.get(j)!;
    const params = this.#stages[j].parameters();
    const wanted = continues ? [input, ...params] : params;
    if (wanted.length > 0) {
      scope(() => backward([this.#outputs.get(j)!], [sum], { retainGraph: passesLeft > 0, inputs: wanted }));
    }
    sum.dispose();
    if (!continues) return;
    const next = input.grad;
    if (next === null) throw new Error(`stage parallel: stage ${j + 1} produced no input gradient`);
    input.grad = null;
    keep(next);
    if (j === this.#first) this.leaving.push({ reach: rho - 1, gradient: next });
    else this.deliver(j - 1, rho - 1, next);
  }

  /** The input stage k ran on this step (owned by the route, or the caller's for the first stage). */
  inputOf(k: number): Tensor {
    const x = this.#inputs.get(k);
    if (x === undefined) throw new Error(`stage parallel: stage ${k + 1} has not run`);
    return x;
  }

  /**
   * Frees the activations of the stages below `k` (their passes are done): what a route kept for a
   * later pass through stages ≥ k still holds.
   */
  releaseBelow(k: number): void {
    for (const [j, t] of [...this.#inputs.entries()]) {
      if (j >= k || j === this.#first) continue;
      t.dispose();
      this.#inputs.delete(j);
    }
    for (const [j, t] of [...this.#outputs.entries()]) {
      if (j >= k) continue;
      t.dispose();
      this.#outputs.delete(j);
    }
  }

  /** Takes the messages produced for the rank below since the last call. */
  takeLeaving(): LeavingMessage[] {
    const out = this.leaving;
    this.leaving = [];
    return out;
  }

  /** Frees the route's activations and graphs (messages not yet taken included). */
  dispose(): void {
    // The first stage's input is the caller's (the batch, or the buffer a recv filled).
    const inputs = [...this.#inputs.entries()].flatMap(([k, t]) => (k === this.#first ? [] : [t]));
    for (const t of [...inputs, ...this.#outputs.values(), ...this.#pending.values()]) {
      if (!t.isDisposed) t.dispose();
    }
    for (const m of this.leaving) m.gradient.dispose();
    this.#inputs.clear();
    this.#outputs.clear();
    this.#pending.clear();
    this.leaving = [];
  }
}
