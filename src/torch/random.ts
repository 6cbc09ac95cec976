// Seeded random number generators, so a run is reproducible. A Generator owns a native handle with
// the same lifetime as a tensor's: dispose() frees it now, and a dropped Generator is freed when
// the garbage collector collects it (the addon tells V8 its size, so many dropped generators
// trigger a collection).
import { type NativeGeneratorHandle, native } from "./native";

const wrapDefault = Symbol("defaultGenerator");

/** A libtorch CPU generator (Mersenne Twister). Pass it to random factories and initialisers. */
export class Generator {
  #handle: NativeGeneratorHandle | null;
  readonly #isDefault: boolean;

  /** A new generator seeded with `seed` (default: the current time). */
  constructor(seed?: number | typeof wrapDefault) {
    this.#isDefault = seed === wrapDefault;
    if (seed === wrapDefault) {
      this.#handle = native.defaultGenerator();
    } else {
      const s = seed ?? Date.now();
      if (!Number.isSafeInteger(s) || s < 0)
        throw new RangeError(`Generator: the seed must be a non-negative integer, got ${String(s)}`);
      this.#handle = native.newGenerator(s);
    }
  }

  /** The native handle (for src/torch only); throws a clear error after dispose(). */
  get handle(): NativeGeneratorHandle {
    if (this.#handle === null) throw new Error("Generator was used after dispose()");
    return this.#handle;
  }

  get isDisposed(): boolean {
    return this.#handle === null;
  }

  /** Frees the generator now (optional: a dropped generator is freed by the garbage collector). */
  dispose(): void {
    if (this.#isDefault) throw new Error("Generator.dispose(): the default generator cannot be disposed");
    if (this.#handle === null) throw new Error("Generator.dispose(): the generator was already disposed");
    native.disposeGenerator(this.#handle);
    this.#handle = null;
  }

  manualSeed(seed: number): this {
    native.generatorSeed(this.handle, seed);
    return this;
  }

  /** The full generator state (restore it with setState to continue the same sequence). */
  getState(): Uint8Array {
    return new Uint8Array(native.generatorGetState(this.handle));
  }

  setState(state: Uint8Array): this {
    native.generatorSetState(this.handle, state);
    return this;
  }
}

/** libtorch's default CPU generator, used when a call names none. */
export const defaultGenerator = new Generator(wrapDefault);

/** Seeds the default generator (like torch.manual_seed). */
export function manualSeed(seed: number): void {
  if (!Number.isSafeInteger(seed) || seed < 0)
    throw new RangeError(`manualSeed: expected a non-negative integer, got ${seed}`);
  native.manualSeed(seed);
}

/** Generators created and neither disposed nor collected (the default generator not counted). */
export function liveGenerators(): number {
  return native.memoryStats().liveGenerators;
}
