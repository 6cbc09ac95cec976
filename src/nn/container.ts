// Containers: Sequential (children "0", "1", … or given names) and ModuleList.
import type { Tensor } from "../torch/tensor";
import { Module } from "./module";
import { BatchNormBase } from "./batchnorm";
import { ReLU } from "./layers";

/** Runs its children in order, each on the previous one's output. */
export class Sequential extends Module {
  #layers: Module[] = [];

  /** Children named "0", "1", … as in PyTorch's Sequential(*modules). */
  constructor(...modules: Module[]) {
    super();
    for (const m of modules) this.append(m);
  }

  /**
   * A Sequential with named children, like Sequential(OrderedDict(...)): its state-dict keys use
   * these names (`conv1.weight`). Accepts [name, module] pairs or a plain object.
   */
  static named(entries: readonly (readonly [string, Module])[] | Readonly<Record<string, Module>>): Sequential {
    const s = new Sequential();
    const list = Array.isArray(entries) ? entries : Object.entries(entries);
    for (const [name, m] of list as [string, Module][]) s.add(name, m);
    return s;
  }

  /** Adds a child under the next index name ("0", "1", …). */
  append(module: Module): this {
    return this.add(String(this.#layers.length), module);
  }

  /** Adds a child under `name`. */
  add(name: string, module: Module): this {
    this.registerModule(name, module);
    this.#layers.push(module);
    return this;
  }

  get length(): number {
    return this.#layers.length;
  }

  /** The i-th child (negative counts from the end). */
  at(index: number): Module {
    const i = index < 0 ? index + this.#layers.length : index;
    const m = this.#layers[i];
    if (m === undefined)
      throw new RangeError(`Sequential.at: index ${index} out of range (length ${this.#layers.length})`);
    return m;
  }

  [Symbol.iterator](): Iterator<Module> {
    return this.#layers[Symbol.iterator]();
  }

  /** Each child in turn; a batch norm followed by a ReLU runs as BatchNormBase.forwardReLU. */
  override forward(input: Tensor): Tensor {
    let x = input;
    const layers = this.#layers;
    for (let i = 0; i < layers.length; i++) {
      const m = layers[i];
      if (m instanceof BatchNormBase && layers[i + 1] instanceof ReLU) {
        x = m.forwardReLU(x);
        i++;
      } else {
        x = m.forward(x);
      }
    }
    return x;
  }
}

/** Holds modules under "0", "1", … so their parameters are registered; it has no forward. */
export class ModuleList extends Module {
  #items: Module[] = [];

  constructor(modules: readonly Module[] = []) {
    super();
    for (const m of modules) this.append(m);
  }

  append(module: Module): this {
    this.registerModule(String(this.#items.length), module);
    this.#items.push(module);
    return this;
  }

  get length(): number {
    return this.#items.length;
  }

  at(index: number): Module {
    const i = index < 0 ? index + this.#items.length : index;
    const m = this.#items[i];
    if (m === undefined)
      throw new RangeError(`ModuleList.at: index ${index} out of range (length ${this.#items.length})`);
    return m;
  }

  [Symbol.iterator](): Iterator<Module> {
    return this.#items[Symbol.iterator]();
  }
}
