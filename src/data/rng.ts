// A small seeded PRNG for the data pipeline (shuffles, subsets, per-sample augmentation
// parameters). Pure JS, so the same numbers come out on the main thread and in a worker, and a
// stream is a pure function of the integers it was seeded with: the loader seeds one stream per
// (seed, epoch, batch), which is what makes an interrupted run resume exactly.
//
// Generator: sfc32 (Chris Doty-Humphrey's Small Fast Chaotic PRNG, 32-bit variant; passes
// PractRand to 2^40+ bytes). Seeding: the seed integers are mixed with splitmix32-style finalisers.

function mix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}

/** A seeded random stream. */
export class Rng {
  #a = 0;
  #b = 0;
  #c = 0;
  #d = 0;

  /**
   * Seeds from one or more integers (each taken modulo 2^53 and split into two 32-bit halves),
   * e.g. `new Rng(seed, epoch, batch)`: different tuples give independent streams.
   */
  constructor(...seed: number[]) {
    if (seed.length === 0) throw new TypeError("Rng: give at least one seed integer");
    let h = 0x9e3779b9;
    for (const s of seed) {
      if (!Number.isFinite(s)) throw new TypeError(`Rng: seed parts must be finite numbers, got ${s}`);
      const v = Math.trunc(Math.abs(s));
      const lo = v >>> 0;
      const hi = Math.floor(v / 4294967296) >>> 0;
      h = mix32(h ^ mix32(lo + 0x632be5ab));
      h = mix32(h ^ mix32(hi + 0x85157af5 + (s < 0 ? 1 : 0)));
    }
    this.#a = mix32(h ^ 0x243f6a88);
    this.#b = mix32(h ^ 0x85a308d3);
    this.#c = mix32(h ^ 0x13198a2e);
    this.#d = 1;
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  /** The next 32 random bits as an unsigned integer. */
  nextUint32(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  random(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform in [low, high). */
  uniform(low: number, high: number): number {
    return low + (high - low) * this.random();
  }

  /** An integer uniform in [low, high) (high exclusive, like torch.randint). */
  randint(low: number, high: number): number {
    if (!(high > low)) throw new RangeError(`Rng.randint: empty range [${low}, ${high})`);
    return low + Math.floor(this.random() * (high - low));
  }

  /** True with probability p. */
  bernoulli(p: number): boolean {
    return p >= 1 ? (this.random(), true) : this.random() < p;
  }

  /** A uniformly random permutation of 0 … n-1 (Fisher–Yates). */
  permutation(n: number): Int32Array {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = i;
    this.shuffle(out);
    return out;
  }

  /** Shuffles in place (Fisher–Yates). */
  shuffle<T extends { length: number; [i: number]: number }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.random() * (i + 1));
      const tmp = a[i];
      a[i] = a[j];
      a[j] = tmp;
    }
    return a;
  }

  /** The full state (four 32-bit words); restore it with setState to continue the same stream. */
  getState(): Uint32Array {
    return Uint32Array.of(this.#a, this.#b, this.#c, this.#d);
  }

  setState(state: ArrayLike<number>): this {
    if (state.length !== 4) throw new RangeError(`Rng.setState: expected 4 words, got ${state.length}`);
    this.#a = state[0] >>> 0;
    this.#b = state[1] >>> 0;
    this.#c = state[2] >>> 0;
    this.#d = state[3] >>> 0;
    return this;
  }
}

/** Python's round(): halves go to the even neighbour (torchvision's crop sampling uses it). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
