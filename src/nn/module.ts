// The Module base class: PyTorch's torch.nn.Module with explicit, typed registration.
//
// A module owns named parameters (trainable leaf tensors), buffers (state such as BatchNorm's
// running statistics) and child modules. Names compose with dots exactly as in PyTorch
// (`layer1.0.conv1.weight`), so state dicts interchange with PyTorch's by key.
//
// Ownership: parameters and buffers are taken out of scope management with keep() when they are
// registered, so a surrounding scope() never frees them; the module frees them in dispose().
// Activations created by forward() are ordinary tensors: a surrounding scope() frees them.
import { Tensor } from "../torch/tensor";
import { keep } from "../torch/scope";
import { noGrad } from "../torch/autograd";
import { type DType, type MemoryFormat, isDType, isFloatingDType } from "../torch/dtype";
import { type Device, checkDevice } from "../torch/device";

export interface LoadStateDictOptions {
  /**
   * When true (default) every key of the module must be present in the source and every key of
   * the source must belong to the module; otherwise loading throws before anything is copied.
   */
  strict?: boolean;
}

export interface LoadStateDictResult {
  /** Keys of the module that the source did not provide (left unchanged). */
  missingKeys: string[];
  /** Keys of the source that the module does not have (ignored). */
  unexpectedKeys: string[];
}

/** Thrown by loadStateDict; nothing has been copied when it is thrown. */
export class StateDictError extends Error {
  constructor(
    message: string,
    readonly missingKeys: string[],
    readonly unexpectedKeys: string[],
    readonly mismatches: string[],
  ) {
    super(message);
    this.name = "StateDictError";
  }
}

/** A state dict as accepted by loadStateDict: a Map or a plain object from key to tensor. */
export type StateDictSource = ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>;

const shapeText = (s: readonly number[]): string => `[${s.join(", ")}]`;

function checkName(kind: string, name: string): void {
  if (typeof name !== "string" || name.length === 0) throw new TypeError(`${kind} name must be a non-empty string`);
  if (name.includes(".")) throw new TypeError(`${kind} name '${name}' must not contain '.'`);
}

export class Module {
  /** Training mode (true) or evaluation mode (false); set it with train() / eval(). */
  training = true;

  readonly #parameters = new Map<string, Tensor | null>();
  readonly #buffers = new Map<string, Tensor | null>();
  readonly #nonPersistent = new Set<string>();
  readonly #modules = new Map<string, Module | null>();

  /** The computation. Subclasses override it; containers without a forward throw. */
  forward(_input: Tensor): Tensor {
    throw new Error(`${this.constructor.name} has no forward(): a Module subclass must override it`);
  }

  // ---- registration ----

  #checkFree(kind: string, name: string): void {
    checkName(kind, name);
    if (this.#parameters.has(name) || this.#buffers.has(name) || this.#modules.has(name)) {
      throw new Error(`${this.constructor.name}: '${name}' is already registered`);
    }
  }

  /**
   * Registers a trainable tensor under `name` (null: an absent optional parameter, such as a
   * conv's bias with bias=false, which is not part of the state dict). The module takes ownership:
   * the tensor is kept out of scopes, made to require grad, and freed by dispose().
   */
  registerParameter(name: string, value: Tensor | null): Tensor | null {
    this.#checkFree("parameter", name);
    if (value !== null) adoptParameter(value, true, `${this.constructor.name}.registerParameter('${name}')`);
    this.#parameters.set(name, value);
    return value;
  }

  /**
   * Registers a state tensor that is not trained (e.g. running statistics). Persistent buffers
   * (default) are part of the state dict. The module takes ownership as for parameters.
   */
  registerBuffer(name: string, value: Tensor | null, options: { persistent?: boolean } = {}): Tensor | null {
    this.#checkFree("buffer", name);
    if (value !== null) keep(value);
    this.#buffers.set(name, value);
    if (options.persistent === false) this.#nonPersistent.add(name);
    return value;
  }

  /** Registers a child module; its parameters get the prefix `name.`. Returns the child. */
  registerModule<M extends Module | null>(name: string, module: M): M {
    this.#checkFree("module", name);
    if (module !== null && !(module instanceof Module)) throw new TypeError(`registerModule('${name}'): not a Module`);
    this.#modules.set(name, module);
    return module;
  }

  // ---- lookup ----

  /** The module at a dotted path ("" is this module), like get_submodule. */
  getSubmodule(path: string): Module {
    if (path === "") return this;
    return path.split(".").reduce<Module>((m, part) => {
      const child = m.#modules.get(part);
      if (child === undefined || child === null) {
        throw new Error(`${this.constructor.name}.getSubmodule: no submodule '${part}' in '${path}'`);
      }
      return child;
    }, this);
  }

  #owner(path: string): [Module, string] {
    const dot = path.lastIndexOf(".");
    return dot < 0 ? [this, path] : [this.getSubmodule(path.slice(0, dot)), path.slice(dot + 1)];
  }

  /** The parameter at a (dotted) name; null for an absent optional one; throws if unknown. */
  getParameter(path: string): Tensor | null {
    const [m, name] = this.#owner(path);
    if (!m.#parameters.has(name)) throw new Error(`${this.constructor.name}: no parameter '${path}'`);
    return m.#parameters.get(name) ?? null;
  }

  /** The buffer at a (dotted) name; null for an absent optional one; throws if unknown. */
  getBuffer(path: string): Tensor | null {
    const [m, name] = this.#owner(path);
    if (!m.#buffers.has(name)) throw new Error(`${this.constructor.name}: no buffer '${path}'`);
    return m.#buffers.get(name) ?? null;
  }

  /** For subclasses' typed getters: the parameter `name`, which must be present. */
  protected param(name: string): Tensor {
    const t = this.#parameters.get(name);
    if (t === undefined || t === null) throw new Error(`${this.constructor.name}: parameter '${name}' is not set`);
    return t;
  }

  /** For subclasses' typed getters: the parameter `name` or null. */
  protected optionalParam(name: string): Tensor | null {
    return this.#parameters.get(name) ?? null;
  }

  /** For subclasses' typed getters: the buffer `name` or null. */
  protected buffer(name: string): Tensor | null {
    return this.#buffers.get(name) ?? null;
  }

  /**
   * Replaces the value of a registered parameter (dotted names allowed): the module takes
   * ownership of `value` (kept out of scopes, requiresGrad as the old one had, true if there was
   * none) and disposes the old tensor unless `disposeOld` is false. `value` must be a leaf.
   */
  setParameter(path: string, value: Tensor | null, options: { disposeOld?: boolean } = {}): void {
    const [m, name] = this.#owner(path);
    if (!m.#parameters.has(name)) throw new Error(`${this.constructor.name}.setParameter: no parameter '${path}'`);
    const old = m.#parameters.get(name) ?? null;
    if (value === old) return;
    if (value !== null) {
      adoptParameter(value, old === null || old.isDisposed ? true : old.requiresGrad, `setParameter('${path}')`);
    }
    m.#parameters.set(name, value);
    if (old !== null && options.disposeOld !== false) old.release();
  }

  /** Replaces the value of a registered buffer (dotted names allowed), as setParameter does. */
  setBuffer(path: string, value: Tensor | null, options: { disposeOld?: boolean } = {}): void {
    const [m, name] = this.#owner(path);
    if (!m.#buffers.has(name)) throw new Error(`${this.constructor.name}.setBuffer: no buffer '${path}'`);
    const old = m.#buffers.get(name) ?? null;
    if (value === old) return;
    if (value !== null) keep(value);
    m.#buffers.set(name, value);
    if (old !== null && options.disposeOld !== false) old.release();
  }

  // ---- traversal ----

  /** Direct children with their names (registration order; absent optional children skipped). */
  namedChildren(): [string, Module][] {
    const out: [string, Module][] = [];
    for (const [name, m] of this.#modules) if (m !== null) out.push([name, m]);
    return out;
  }

  children(): Module[] {
    return this.namedChildren().map(([, m]) => m);
  }

  /** This module and all descendants in pre-order, with dotted names ("" for this one). */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [];
    const seen = new Set<Module>();
    const visit = (m: Module, name: string): void => {
      if (seen.has(m)) return;
      seen.add(m);
      out.push([name, m]);
      for (const [childName, child] of m.namedChildren())
        visit(child, name === "" ? childName : `${name}.${childName}`);
    };
    visit(this, prefix);
    return out;
  }

  modules(): Module[] {
    return this.namedModules().map(([, m]) => m);
  }

  /** Parameters with their dotted names, in PyTorch's order (each tensor once). */
  namedParameters(options: { recurse?: boolean } = {}): [string, Tensor][] {
    return this.#namedTensors(
      (m) => m.#parameters,
      options.recurse ?? true,
      () => true,
    );
  }

  parameters(options: { recurse?: boolean } = {}): Tensor[] {
    return this.namedParameters(options).map(([, t]) => t);
  }

  /** Buffers with their dotted names (persistent and non-persistent), each tensor once. */
  namedBuffers(options: { recurse?: boolean } = {}): [string, Tensor][] {
    return this.#namedTensors(
      (m) => m.#buffers,
      options.recurse ?? true,
      () => true,
    );
  }

  buffers(options: { recurse?: boolean } = {}): Tensor[] {
    return this.namedBuffers(options).map(([, t]) => t);
  }

  #namedTensors(
    pick: (m: Module) => Map<string, Tensor | null>,
    recurse: boolean,
    include: (m: Module, name: string) => boolean,
  ): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    const seen = new Set<Tensor>();
    const modules: [string, Module][] = recurse ? this.namedModules() : [["", this]];
    for (const [prefix, m] of modules) {
      for (const [name, t] of pick(m)) {
        if (t === null || seen.has(t) || !include(m, name)) continue;
        seen.add(t);
        out.push([prefix === "" ? name : `${prefix}.${name}`, t]);
      }
    }
    return out;
  }

  /** Number of parameter elements (only those requiring grad when `trainableOnly`). */
  numParameters(options: { trainableOnly?: boolean } = {}): number {
    let n = 0;
    for (const p of this.parameters()) if (!options.trainableOnly || p.requiresGrad) n += p.numel();
    return n;
  }

  // ---- modes ----

  /** Sets training mode on this module and every descendant. */
  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }

  /** Evaluation mode (train(false)): BatchNorm uses running statistics, Dropout is off. */
  eval(): this {
    return this.train(false);
  }

  /** Calls fn on every descendant (children first) and then on this module, like Module.apply. */
  apply(fn: (m: Module) => void): this {
    for (const child of this.children()) child.apply(fn);
    fn(this);
    return this;
  }

  /** Sets requiresGrad on every parameter (false freezes the module). */
  requiresGrad_(requiresGrad = true): this {
    for (const p of this.parameters()) p.requiresGrad_(requiresGrad);
    return this;
  }

  /** Drops every parameter's gradient (sets it to null, like zero_grad(set_to_none=True)). */
  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }

  // ---- state dict ----

  /**
   * The parameters and persistent buffers under PyTorch's keys (parameters then buffers of each
   * module, then its children, recursively). The values are the module's LIVE tensors, not
   * copies: read or copy them, but never dispose them or modify them in place under autograd.
   */
  stateDict(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [prefix, m] of this.namedModules()) {
      const key = (name: string): string => (prefix === "" ? name : `${prefix}.${name}`);
      for (const [name, t] of m.#parameters) if (t !== null) out.set(key(name), t);
      for (const [name, t] of m.#buffers) if (t !== null && !m.#nonPersistent.has(name)) out.set(key(name), t);
    }
    return out;
  }

  /**
   * Keys (relative to this module) that a state dict may omit without counting as missing.
   * BatchNorm declares `num_batches_tracked`, as PyTorch accepts state dicts saved without it.
   */
  protected optionalStateKeys(): readonly string[] {
    return [];
  }

  /**
   * Copies the values of `source` into this module's parameters and buffers, in place and without
   * recording a graph (tensors keep their identity, layout and requiresGrad). Every key's shape
   * and dtype must match exactly; with `strict` (default) the key sets must match too. All checks
   * run before anything is copied, and a failure throws a StateDictError naming the keys.
   */
  loadStateDict(source: StateDictSource, options: LoadStateDictOptions = {}): LoadStateDictResult {
    const strict = options.strict ?? true;
    const entries: Map<string, Tensor> =
      source instanceof Map
        ? (source as Map<string, Tensor>)
        : new Map(Object.entries(source as Record<string, Tensor>));
    const own = this.stateDict();
    const optional = new Set<string>();
    for (const [prefix, m] of this.namedModules()) {
      for (const k of m.optionalStateKeys()) optional.add(prefix === "" ? k : `${prefix}.${k}`);
    }

    const missingKeys: string[] = [];
    const mismatches: string[] = [];
    const copies: [Tensor, Tensor][] = [];
    for (const [key, target] of own) {
      const value = entries.get(key);
      if (value === undefined) {
        if (!optional.has(key)) missingKeys.push(key);
        continue;
      }
      if (!(value instanceof Tensor)) {
        mismatches.push(`'${key}': expected a Tensor, got ${typeof value}`);
        continue;
      }
      if (value.isDisposed) {
        mismatches.push(`'${key}': the source tensor was disposed`);
        continue;
      }
      const [ts, vs] = [target.shape, value.shape];
      const [td, vd] = [target.dtype, value.dtype];
      if (ts.length !== vs.length || ts.some((d, i) => d !== vs[i])) {
        mismatches.push(`'${key}': shape mismatch, expected ${shapeText(ts)} (${td}), got ${shapeText(vs)} (${vd})`);
      } else if (td !== vd) {
        mismatches.push(`'${key}': dtype mismatch, expected ${td}, got ${vd} (shape ${shapeText(vs)})`);
      } else {
        copies.push([target, value]);
      }
    }
    const unexpectedKeys = [...entries.keys()].filter((k) => !own.has(k));

    const problems: string[] = [...mismatches];
    if (strict && missingKeys.length > 0) problems.push(`missing keys: ${missingKeys.map((k) => `'${k}'`).join(", ")}`);
    if (strict && unexpectedKeys.length > 0)
      problems.push(`unexpected keys: ${unexpectedKeys.map((k) => `'${k}'`).join(", ")}`);
    if (problems.length > 0) {
      throw new StateDictError(
        `${this.constructor.name}.loadStateDict: nothing was loaded:\n  ${problems.join("\n  ")}`,
        missingKeys,
        unexpectedKeys,
        mismatches,
      );
    }
    noGrad(() => {
      for (const [target, value] of copies) if (target !== value) target.copy_(value);
    });
    return { missingKeys, unexpectedKeys };
  }

  // ---- conversion and lifetime ----

  #mapTensors(fn: (t: Tensor) => Tensor | null): void {
    noGrad(() => {
      for (const m of this.modules()) {
        for (const [name, p] of m.#parameters) {
          if (p === null) continue;
          const q = fn(p);
          if (q === null) continue;
          const requiresGrad = p.requiresGrad;
          m.#parameters.set(name, adoptParameter(q, requiresGrad, "to()"));
          p.release();
        }
        for (const [name, b] of m.#buffers) {
          if (b === null) continue;
          const q = fn(b);
          if (q === null) continue;
          m.#buffers.set(name, keep(q));
          b.release();
        }
      }
    });
  }

  /**
   * Converts floating-point parameters and buffers to `dtype` (integer buffers such as
   * num_batches_tracked are left alone), or moves every parameter and buffer to `device`
   * ("cpu" today; an unavailable device is an error naming it and what is available). Gradients
   * are dropped. Returns this module.
   */
  to(target: DType | Device): this {
    if (isDType(target)) {
      if (!isFloatingDType(target)) throw new TypeError(`Module.to: expected a floating dtype, got '${target}'`);
      this.#mapTensors((t) => (isFloatingDType(t.dtype) && t.dtype !== target ? t.to(target) : null));
      return this;
    }
    const device = checkDevice(target, "Module.to");
    this.#mapTensors((t) => (t.device !== device ? t.to(target) : null));
    return this;
  }

  /**
   * Stores 4-D parameters and buffers (conv weights) in `format`, like PyTorch's
   * `model.to(memory_format=torch.channels_last)`. Values are unchanged.
   */
  toMemoryFormat(format: MemoryFormat): this {
    this.#mapTensors((t) => (t.ndim === 4 && !t.isContiguous(format) ? t.contiguous(format) : null));
    return this;
  }

  /**
   * Frees every parameter and buffer of this module and its descendants (shared submodules
   * included). Using the module afterwards throws. Disposing twice is harmless.
   */
  dispose(): void {
    for (const m of this.modules()) {
      for (const t of m.#parameters.values()) t?.release();
      for (const t of m.#buffers.values()) t?.release();
    }
  }

  // ---- printing ----

  /** Extra text shown in toString(), e.g. a layer's sizes. */
  extraRepr(): string {
    return "";
  }

  toString(): string {
    const children = this.namedChildren();
    const head = `${this.constructor.name}(${this.extraRepr()}`;
    if (children.length === 0) return `${head})`;
    const lines = children.map(([name, m]) => `  (${name}): ${m.toString().split("\n").join("\n  ")}`);
    return `${head}\n${lines.join("\n")}\n)`;
  }
}

/** Prepares a tensor to be a parameter: a floating leaf, kept out of scopes, requiring grad. */
function adoptParameter(t: Tensor, requiresGrad: boolean, what: string): Tensor {
  if (!isFloatingDType(t.dtype)) throw new TypeError(`${what}: a parameter must have a floating dtype, got ${t.dtype}`);
  if (!t.isLeaf) throw new TypeError(`${what}: a parameter must be a leaf tensor (pass t.detach())`);
  keep(t);
  if (t.requiresGrad !== requiresGrad) t.requiresGrad_(requiresGrad);
  return t;
}
