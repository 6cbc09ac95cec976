// The optimizer base class: parameter groups with per-group hyperparameters, a leak-free step(),
// zeroGrad(), and state dicts that a checkpoint can store as safetensors + JSON.
import { noGrad } from "../torch/autograd";
import { keep, scope } from "../torch/scope";
import { addOut, negOut } from "../torch/out";
import { StepScratch } from "./scratch";
import { Tensor } from "../torch/tensor";

/** A hyperparameter value: a number, a flag, or a tuple of numbers (Adam's betas). */
export type HyperValue = number | boolean | readonly number[];

/** An optimizer's hyperparameters by name (camelCase in TypeScript, snake_case in state dicts). */
export type Hyperparameters = { [name: string]: HyperValue };

/** Parameters with hyperparameters that override the optimizer's defaults for them. */
export type ParamGroup<H extends Hyperparameters> = { params: Tensor[] } & Partial<H>;

/** A parameter group with every hyperparameter resolved. Change `lr` here to change the learning rate. */
export type ResolvedParamGroup<H extends Hyperparameters> = H & { params: Tensor[] };

/** What an optimizer keeps for one parameter: tensors (momentum, moments) and numbers (step count). */
export type ParamState = { [key: string]: Tensor | number };

/** The per-parameter state an optimizer keeps (see Optimizer.stateSpec). */
export interface StateSpec {
  tensors: readonly string[];
  numbers: readonly string[];
  requiredTogether?: readonly string[];
}

/** JSON values (the `meta` half of a state dict). */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** The JSON half of an optimizer state dict, laid out like PyTorch's `optimizer.state_dict()`. */
export interface OptimizerStateMeta {
  /** The optimizer's class ("SGD", "Adam", "AdamW", "LARS"); loading into another class is an error. */
  optimizer: string;
  /** Non-tensor per-parameter state by parameter index, e.g. `{ "0": { "step": 3 } }`. */
  state: { [index: string]: { [key: string]: number } };
  /** One entry per group: its hyperparameters (snake_case, as PyTorch names them) and its parameter indices. */
  param_groups: ({ params: number[] } & { [name: string]: JsonValue })[];
}

/**
 * An optimizer's state, split for a checkpoint: `tensors` (safetensors-ready, keys
 * `state.<index>.<name>`, e.g. `state.3.exp_avg`) and `meta` (JSON). Parameters are referenced by
 * index, counting through the groups in order, as PyTorch does.
 */
export interface OptimizerStateDict {
  tensors: Map<string, Tensor>;
  meta: OptimizerStateMeta;
}

export interface StateDictOptions {
  /**
   * Return copies of the state tensors (the caller owns and disposes them). Default false: the map
   * holds the optimizer's own tensors, which must not be disposed and change at the next step().
   */
  clone?: boolean;
}

const camelToSnake = (s: string): string => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const snakeToCamel = (s: string): string => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

function sameKind(a: HyperValue, b: unknown): boolean {
  if (Array.isArray(a)) return Array.isArray(b) && b.length === a.length && b.every((x) => typeof x === "number");
  return typeof a === typeof b;
}

function describe(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/**
 * Base class of the optimizers. Subclasses implement `updateParam` (one parameter's update, called
 * without autograd and inside a scope) and `validate` (hyperparameter checks).
 *
 * Ownership: the optimizer owns its state tensors (created with `this.keepState`) and frees them in
 * `dispose()` or when a state dict is loaded over them. `step()` frees every temporary it creates.
 */
export abstract class Optimizer<H extends Hyperparameters> {
  /** The hyperparameters a group gets unless it overrides them. */
  readonly defaults: Readonly<H>;
  /** The parameter groups; hyperparameters may be changed between steps (schedulers set `lr`). */
  readonly paramGroups: ResolvedParamGroup<H>[] = [];
  /** Per-parameter state, created lazily at a parameter's first update. */
  protected readonly state = new Map<Tensor, ParamState>();
  /** Where scratchAdd and scratchNeg write (not state: never saved, freed by dispose()). */
  private readonly scratch = new StepScratch();
  #disposed = false;

  protected constructor(
    /** The class name, used in errors and stored in state dicts. */
    readonly name: string,
    params: readonly Tensor[] | readonly ParamGroup<H>[],
    defaults: H,
  ) {
    this.defaults = Object.freeze({ ...defaults });
    if (!Array.isArray(params))
      throw new TypeError(`${name}: params must be an array of tensors or of parameter groups`);
    if (params.length === 0) throw new Error(`${name}: optimizer got an empty parameter list`);
    const groups: ParamGroup<H>[] =
      params[0] instanceof Tensor ? [{ params: params as Tensor[] } as ParamGroup<H>] : (params as ParamGroup<H>[]);
    for (const g of groups) this.addParamGroup(g);
    if (this.paramGroups.every((g) => g.params.length === 0)) {
      throw new Error(`${name}: optimizer got an empty parameter list (every group is empty)`);
    }
  }

  /** Checks a resolved group's hyperparameters; throws an error naming the field, value and expectation. */
  protected abstract validate(group: H): void;

  /**
   * Updates one parameter in place from its gradient. Runs under noGrad and inside a scope, so
   * temporaries are freed automatically; tensors that must outlive the step go through keepState().
   */
  protected abstract updateParam(param: Tensor, grad: Tensor, state: ParamState, group: ResolvedParamGroup<H>): void;

  /**
   * The per-parameter state a state dict may hold: tensor keys, number keys, and the keys that must
   * all be present once any is (checked by loadStateDict).
   */
  protected abstract stateSpec(): StateSpec;

  /**
   * `input + alpha·other`, the values `input.add(other, alpha)` gives (the same kernel computes
   * them), written into a buffer the optimizer reuses for every parameter and step instead of a new
   * tensor. Holds its value until the next scratch call for another parameter; `input` may be the
   * buffer itself (then the update is in place). Where `param` is not dense, a new tensor as before.
   */
  protected scratchAdd(param: Tensor, input: Tensor, other: Tensor, alpha: number): Tensor {
    const out = this.scratch.viewFor(param, () => this.parameters());
    return out === null ? input.add(other, alpha) : addOut(out, input, other, alpha);
  }

  /** `−input` into the reused buffer (see scratchAdd). */
  protected scratchNeg(param: Tensor, input: Tensor): Tensor {
    const out = this.scratch.viewFor(param, () => this.parameters());
    return out === null ? input.neg() : negOut(out, input);
  }

  /** Marks a tensor as optimizer state (it survives the step's scope; the optimizer frees it). */
  protected keepState(t: Tensor): Tensor {
    return keep(t);
  }

  /** Adds a group (hyperparameters it leaves out come from the defaults), like PyTorch's add_param_group. */
  addParamGroup(group: ParamGroup<H>): void {
    this.checkAlive();
    if (typeof group !== "object" || group === null || !Array.isArray(group.params)) {
      throw new TypeError(`${this.name}: a parameter group must be an object with a 'params' array of tensors`);
    }
    const index = this.paramGroups.length;
    const resolved: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(this.defaults)) resolved[key] = Array.isArray(value) ? [...value] : value;
    for (const [key, value] of Object.entries(group)) {
      if (key === "params") continue;
      if (!(key in this.defaults)) {
        throw new Error(
          `${this.name}: parameter group ${index} has an unknown hyperparameter '${key}' (known: ${Object.keys(this.defaults).join(", ")})`,
        );
      }
      if (value === undefined) continue;
      if (!sameKind(this.defaults[key], value)) {
        throw new TypeError(
          `${this.name}: parameter group ${index}: '${key}' must be of the same kind as its default ${describe(this.defaults[key])}, got ${describe(value)}`,
        );
      }
      resolved[key] = Array.isArray(value) ? [...value] : value;
    }
    const seen = new Set<Tensor>();
    for (const g of this.paramGroups) for (const p of g.params) seen.add(p);
    group.params.forEach((p, i) => {
      if (!(p instanceof Tensor))
        throw new TypeError(`${this.name}: parameter group ${index}: params[${i}] is not a Tensor`);
      if (p.isDisposed) throw new Error(`${this.name}: parameter group ${index}: params[${i}] was disposed`);
      if (seen.has(p))
        throw new Error(
          `${this.name}: some parameters appear in more than one parameter group (group ${index}, params[${i}])`,
        );
      seen.add(p);
    });
    resolved.params = [...group.params];
    this.validate(resolved as H);
    this.paramGroups.push(resolved as ResolvedParamGroup<H>);
  }

  /** Every parameter, in group order (index i here is parameter i of the state dict). */
  parameters(): Tensor[] {
    return this.paramGroups.flatMap((g) => g.params);
  }

  /**
   * One update of every parameter that has a gradient (parameters without one are skipped). Runs
   * without autograd; all temporaries are freed before it returns.
   */
  step(): void {
    this.checkAlive();
    noGrad(() =>
      scope(() => {
        for (const group of this.paramGroups) {
          this.validate(group); // hyperparameters may have been edited since the last step
          for (const param of group.params) {
            scope(() => {
              const grad = param.grad;
              if (grad === null) return;
              let st = this.state.get(param);
              if (st === undefined) {
                st = {};
                this.state.set(param, st);
              }
              this.updateParam(param, grad, st, group);
            });
          }
        }
      }),
    );
  }

  /** Clears the gradients: sets them to null (default, as PyTorch 2 does) or, with false, zeroes them in place. */
  zeroGrad(setToNone = true): void {
    this.checkAlive();
    for (const group of this.paramGroups) {
      for (const p of group.params) {
        if (setToNone) {
          p.grad = null;
        } else {
          const g = p.grad;
          if (g !== null) {
            noGrad(() => g.zero_());
            g.dispose();
          }
        }
      }
    }
  }

  /** The optimizer's state for a checkpoint (see OptimizerStateDict). */
  stateDict(options: StateDictOptions = {}): OptimizerStateDict {
    this.checkAlive();
    const tensors = new Map<string, Tensor>();
    const meta: OptimizerStateMeta = { optimizer: this.name, state: {}, param_groups: [] };
    let index = 0;
    for (const group of this.paramGroups) {
      const entry: { [name: string]: JsonValue } = {};
      for (const key of Object.keys(this.defaults)) {
        const v = group[key];
        entry[camelToSnake(key)] = Array.isArray(v) ? [...v] : (v as JsonValue);
      }
      const ids: number[] = [];
      for (const p of group.params) {
        const st = this.state.get(p);
        if (st !== undefined) {
          const scalars: { [key: string]: number } = {};
          for (const [key, value] of Object.entries(st)) {
            if (value instanceof Tensor) {
              tensors.set(`state.${index}.${key}`, options.clone ? noGrad(() => value.clone()) : value);
            } else {
              scalars[key] = value;
            }
          }
          if (Object.keys(scalars).length > 0) meta.state[String(index)] = scalars;
        }
        ids.push(index++);
      }
      meta.param_groups.push({ ...entry, params: ids });
    }
    return { tensors, meta };
  }

  /**
   * Restores state saved by stateDict() (the tensors are copied: the caller keeps ownership of
   * its map). Groups and parameters are matched by position, as in PyTorch; the saved group
   * hyperparameters replace the current ones. Everything is validated before anything changes.
   */
  loadStateDict(stateDict: OptimizerStateDict): void {
    this.checkAlive();
    const where = `${this.name}.loadStateDict`;
    const { tensors, meta } = stateDict ?? ({} as OptimizerStateDict);
    if (!(tensors instanceof Map) || typeof meta !== "object" || meta === null) {
      throw new TypeError(`${where}: expected { tensors: Map<string, Tensor>, meta: object }`);
    }
    if (meta.optimizer !== undefined && meta.optimizer !== this.name) {
      throw new Error(`${where}: the state dict was saved by ${meta.optimizer}, not ${this.name}`);
    }
    const savedGroups = meta.param_groups;
    if (!Array.isArray(savedGroups)) throw new TypeError(`${where}: meta.param_groups must be an array`);
    if (savedGroups.length !== this.paramGroups.length) {
      throw new Error(
        `${where}: the state dict has ${savedGroups.length} parameter groups, the optimizer has ${this.paramGroups.length}`,
      );
    }

    // Saved parameter index -> current parameter, and the new hyperparameters of each group.
    const byIndex = new Map<number, Tensor>();
    const newHypers: Record<string, unknown>[] = [];
    savedGroups.forEach((saved, gi) => {
      const group = this.paramGroups[gi];
      if (!Array.isArray(saved.params) || saved.params.some((i) => !Number.isInteger(i) || i < 0)) {
        throw new TypeError(`${where}: param_groups[${gi}].params must be an array of parameter indices`);
      }
      if (saved.params.length !== group.params.length) {
        throw new Error(
          `${where}: parameter group ${gi} has ${saved.params.length} parameters in the state dict, ${group.params.length} in the optimizer`,
        );
      }
      saved.params.forEach((idx, j) => {
        if (byIndex.has(idx)) throw new Error(`${where}: parameter index ${idx} appears twice in param_groups`);
        byIndex.set(idx, group.params[j]);
      });
      const hypers: Record<string, unknown> = { ...group };
      for (const [snake, value] of Object.entries(saved)) {
        if (snake === "params") continue;
        const key = snakeToCamel(snake);
        if (!(key in this.defaults)) {
          throw new Error(`${where}: param_groups[${gi}] has an unknown hyperparameter '${snake}' for ${this.name}`);
        }
        if (!sameKind(this.defaults[key], value)) {
          throw new TypeError(
            `${where}: param_groups[${gi}].${snake} must be of the same kind as ${describe(this.defaults[key])}, got ${describe(value)}`,
          );
        }
        hypers[key] = Array.isArray(value) ? [...value] : value;
      }
      this.validate(hypers as H);
      newHypers.push(hypers);
    });

    // Check every state entry before building anything.
    const numericState = meta.state ?? {};
    if (typeof numericState !== "object") throw new TypeError(`${where}: meta.state must be an object`);
    for (const [idx, entries] of Object.entries(numericState)) {
      if (!byIndex.has(Number(idx)))
        throw new Error(`${where}: meta.state has parameter index ${idx}, which no group lists`);
      for (const [key, value] of Object.entries(entries ?? {})) {
        if (typeof value !== "number" || !Number.isFinite(value)) {
          throw new TypeError(`${where}: meta.state[${idx}].${key} must be a finite number, got ${describe(value)}`);
        }
      }
    }
    const parsed: { param: Tensor; index: number; key: string; tensor: Tensor }[] = [];
    for (const [name, tensor] of tensors) {
      const m = /^state\.(\d+)\.([A-Za-z0-9_]+)$/.exec(name);
      if (m === null) throw new Error(`${where}: unexpected tensor key '${name}' (expected state.<index>.<name>)`);
      const index = Number(m[1]);
      const param = byIndex.get(index);
      if (param === undefined)
        throw new Error(`${where}: tensor '${name}' refers to parameter ${index}, which no group lists`);
      if (!(tensor instanceof Tensor) || tensor.isDisposed)
        throw new TypeError(`${where}: tensor '${name}' is not a live Tensor`);
      const expected = param.shape;
      const got = tensor.shape;
      if (got.length !== expected.length || got.some((d, i) => d !== expected[i])) {
        throw new Error(
          `${where}: state tensor '${name}' has shape ${shapeText(got)}, but parameter ${index} has shape ${shapeText(expected)}`,
        );
      }
      parsed.push({ param, index, key: m[2], tensor });
    }

    // Check the keys of each parameter's state against what this optimizer keeps.
    const spec = this.stateSpec();
    const keysByIndex = new Map<number, { tensors: string[]; numbers: string[] }>();
    const keysOf = (i: number) => {
      let k = keysByIndex.get(i);
      if (k === undefined) {
        k = { tensors: [], numbers: [] };
        keysByIndex.set(i, k);
      }
      return k;
    };
    for (const [idx, entries] of Object.entries(numericState))
      keysOf(Number(idx)).numbers.push(...Object.keys(entries ?? {}));
    for (const { index, key } of parsed) keysOf(index).tensors.push(key);
    for (const [index, { tensors: tk, numbers: nk }] of keysByIndex) {
      for (const k of tk) {
        if (!spec.tensors.includes(k)) {
          throw new Error(
            `${where}: unknown state tensor '${k}' for parameter ${index} (${this.name} keeps: ${spec.tensors.join(", ") || "none"})`,
          );
        }
      }
      for (const k of nk) {
        if (!spec.numbers.includes(k)) {
          throw new Error(
            `${where}: unknown state value '${k}' for parameter ${index} (${this.name} keeps: ${spec.numbers.join(", ") || "none"})`,
          );
        }
      }
      const present = [...tk, ...nk];
      const together = spec.requiredTogether ?? [];
      const missing = together.filter((k) => !present.includes(k));
      if (missing.length > 0 && missing.length < together.length) {
        throw new Error(`${where}: the state of parameter ${index} lacks ${missing.join(", ")}`);
      }
    }

    // Build the new state (copies in the parameter's dtype), then swap it in.
    const fresh = new Map<Tensor, ParamState>();
    const entryFor = (p: Tensor): ParamState => {
      let st = fresh.get(p);
      if (st === undefined) {
        st = {};
        fresh.set(p, st);
      }
      return st;
    };
    for (const [idx, entries] of Object.entries(numericState)) {
      Object.assign(entryFor(byIndex.get(Number(idx)) as Tensor), entries);
    }
    noGrad(() => {
      for (const { param, key, tensor } of parsed) {
        const copy = tensor.dtype === param.dtype ? tensor.clone() : tensor.to(param.dtype);
        entryFor(param)[key] = keep(copy);
      }
    });
    this.releaseState();
    for (const [p, st] of fresh) this.state.set(p, st);
    newHypers.forEach((h, gi) => Object.assign(this.paramGroups[gi], h, { params: this.paramGroups[gi].params }));
  }

  /** The state of one parameter (undefined before its first update); for inspection and tests. */
  stateOf(param: Tensor): Readonly<ParamState> | undefined {
    return this.state.get(param);
  }

  /** Frees the optimizer's state tensors. The optimizer cannot be used afterwards. */
  dispose(): void {
    if (this.#disposed) return;
    this.releaseState();
    this.scratch.dispose();
    this.#disposed = true;
  }

  get isDisposed(): boolean {
    return this.#disposed;
  }

  private releaseState(): void {
    for (const st of this.state.values()) {
      for (const v of Object.values(st)) if (v instanceof Tensor) v.release();
    }
    this.state.clear();
  }

  private checkAlive(): void {
    if (this.#disposed) throw new Error(`${this.name}: the optimizer was used after dispose()`);
  }
}

// ---- shared hyperparameter checks ----

export function checkNonNegative(owner: string, name: string, value: unknown): void {
  if (typeof value !== "number" || !(value >= 0) || !Number.isFinite(value)) {
    throw new RangeError(`${owner}: ${name} must be a finite number >= 0, got ${describe(value)}`);
  }
}

export function checkUnitInterval(owner: string, name: string, value: unknown, closedAbove = false): void {
  if (typeof value !== "number" || !(value >= 0) || !(closedAbove ? value <= 1 : value < 1)) {
    throw new RangeError(`${owner}: ${name} must be in [0, 1${closedAbove ? "]" : ")"}, got ${describe(value)}`);
  }
}

export function checkBoolean(owner: string, name: string, value: unknown): void {
  if (typeof value !== "boolean") throw new TypeError(`${owner}: ${name} must be a boolean, got ${describe(value)}`);
}
