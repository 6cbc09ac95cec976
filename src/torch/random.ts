// Seeded random number generators, so a run is reproducible.
import { native } from "./native";

/** A libtorch CPU generator (Mersenne Twister). Pass it to random factories and initialisers. */
export class Generator {
  /** The addon's index of this generator (0 is libtorch's default generator). */
  readonly id: number;

  constructor(seed?: number, id?: number) {
    this.id = id ?? native.newGenerator(seed ?? Date.now());
  }

  manualSeed(seed: number): this {
    native.generatorSeed(this.id, seed);
    return this;
  }

  /** The full generator state (restore it with setState to continue the same sequence). */
  getState(): Uint8Array {
    return new Uint8Array(native.generatorGetState(this.id));
  }

  setState(state: Uint8Array): this {
    native.generatorSetState(this.id, state);
    return this;
  }
}

/** libtorch's default CPU generator, used when a call names none. */
export const defaultGenerator = new Generator(undefined, 0);

/** Seeds the default generator (like torch.manual_seed). */
export function manualSeed(seed: number): void {
  if (!Number.isInteger(seed) || seed < 0)
    throw new RangeError(`manualSeed: expected a non-negative integer, got ${seed}`);
  native.manualSeed(seed);
}
