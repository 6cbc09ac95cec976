// The activation channel of stage parallelism (src/learning/stage-parallel.ts): rank r sends its
// last stage's output to rank r + 1, one message a step, with no header message before it.
//
// The protocol. The receiver always has one receive posted ahead: as soon as an activation has
// arrived it posts the next one, into a fresh buffer of the last shape plus a tail of TAIL
// elements, which it zeroes. A Gloo receive accepts a message shorter than its buffer and writes
// only the bytes sent (libtorch 1.13's Gloo checks length ≤ buffer size, not equality), so:
//   - an activation of the shape the receiver expects is sent as it is (no copy): it fills the
//     buffer up to the tail, and the tail stays zero;
//   - when the shape changes (the first step, the smaller last batch of an epoch, the next epoch's
//     first batch), the sender first sends a notice that fills the whole buffer, tail included: its
//     tail holds the new shape (first element 1), the rest is ignored. The receiver sees a non-zero
//     tail, posts a receive of the new shape and gets the activation in it;
//   - finish() sends a notice whose tail starts with 2 (the end): it answers the receive posted
//     ahead, which would otherwise stay pending until the timeout.
// Both sides know the expected shape without a message: it is the last shape the sender sent
// (none before the first step: the first receive is the tail alone). Messages with one tag between
// one pair arrive in order, so a notice is always the message the posted receive gets.
// Shapes travel as base-1024 digits, exact in every float dtype (float16 included).
import { type DType, type Tensor, empty, keep, noGrad, scope, tensor, zeros } from "../torch";
import type { ProcessGroup, Work } from "../torch/distributed";

/** Elements after the activation in a receive buffer (a multiple of 16: the data stays aligned). */
const TAIL = 32;
const MAX_DIMS = 7;
const DIGIT = 1024;
const DIGITS_PER_DIM = 3;
const NOTICE_SHAPE = 1;
const NOTICE_END = 2;

const numelOf = (shape: number[] | null): number => (shape === null ? 0 : shape.reduce((a, b) => a * b, 1));
const sameShape = (a: number[] | null, b: number[]): boolean =>
  a !== null && a.length === b.length && a.every((d, i) => d === b[i]);

function encodeTail(kind: number, shape: number[]): number[] {
  const tail = new Array<number>(TAIL).fill(0);
  tail[0] = kind;
  tail[1] = shape.length;
  shape.forEach((d, i) => {
    for (let j = 0; j < DIGITS_PER_DIM; j++) tail[2 + i * DIGITS_PER_DIM + j] = Math.floor(d / DIGIT ** j) % DIGIT;
  });
  return tail;
}

function decodeShape(tail: number[]): number[] {
  return Array.from({ length: tail[1] }, (_, i) => {
    let d = 0;
    for (let j = 0; j < DIGITS_PER_DIM; j++) d += tail[2 + i * DIGITS_PER_DIM + j] * DIGIT ** j;
    return d;
  });
}

/** A send in flight and the tensors to free once it has completed. */
export interface ActivationSend {
  work: Work<void>;
  tensors: Tensor[];
}

export class ActivationSender {
  /** The shape the receiver's posted receive expects (null: none sent yet). */
  #peerShape: number[] | null = null;
  /** The dtype of the activations sent (the notices match their size in bytes). */
  #dtype: DType = "float32";

  constructor(
    private readonly group: ProcessGroup,
    private readonly dst: number,
    private readonly tag: number,
  ) {}

  /** Posts `h` (a notice first if its shape is not the one the receiver expects). */
  post(h: Tensor): ActivationSend[] {
    const shape = h.shape;
    if (shape.length > MAX_DIMS) throw new RangeError(`stage parallel: activations of ${shape.length} dims`);
    if (shape.some((d) => d >= DIGIT ** DIGITS_PER_DIM))
      throw new RangeError(`stage parallel: activation shape [${shape}]`);
    const sends: ActivationSend[] = [];
    this.#dtype = h.dtype;
    if (!sameShape(this.#peerShape, shape)) {
      sends.push(this.#notice(NOTICE_SHAPE, shape));
      this.#peerShape = shape;
    }
    // In a scope: the detached alias is freed at once. Left to the garbage collector (as it was),
    // it held the activation's storage for several steps, so the allocator mapped and zeroed a new
    // block for it every step (measured: 4% of rank 0's CPU time clearing fresh huge pages).
    const data = keep(scope(() => noGrad(() => h.detach().contiguous())));
    sends.push({ work: this.group.send(data, this.dst, { tag: this.tag }), tensors: [data] });
    return sends;
  }

  /** Posts the end notice (nothing if no activation was ever sent: no receive is posted then). */
  end(): ActivationSend[] {
    return this.#peerShape === null ? [] : [this.#notice(NOTICE_END, [])];
  }

  /** A message that fills the receiver's posted buffer, tail included. */
  #notice(kind: number, shape: number[]): ActivationSend {
    const n = numelOf(this.#peerShape);
    const dtype = this.#dtype;
    const message = keep(zeros([n + TAIL], { dtype }));
    scope(() => {
      message.narrow(0, n, TAIL).copy_(tensor(encodeTail(kind, shape), { dtype }));
    });
    return { work: this.group.send(message, this.dst, { tag: this.tag }), tensors: [message] };
  }
}

type Waiter = <T>(work: PromiseLike<T>) => Promise<T>;

export class ActivationReceiver {
  /** The shape of the activation the posted receive expects (null before the first). */
  #shape: number[] | null = null;
  #posted: { work: Work<Tensor>; buffer: Tensor } | null = null;

  constructor(
    private readonly group: ProcessGroup,
    private readonly src: number,
    private readonly tag: number,
    private readonly dtype: DType,
  ) {}

  /** The next activation (the caller disposes it); the receive of the one after is posted before it returns. */
  async next(wait: Waiter): Promise<Tensor> {
    let message = await this.#take(wait);
    if (message.tail[0] === NOTICE_SHAPE) {
      message.buffer.dispose();
      this.#shape = decodeShape(message.tail);
      message = await this.#take(wait);
    }
    const { buffer, tail } = message;
    try {
      const shape = this.#shape;
      if (tail[0] !== 0 || shape === null) {
        throw new Error(`stage parallel: rank ${this.src} ended while this rank still steps`);
      }
      const activation = keep(scope(() => buffer.narrow(0, 0, numelOf(shape)).view(shape)));
      this.#post();
      return activation;
    } finally {
      buffer.dispose();
    }
  }

  /** Takes the end notice (nothing if no activation was ever asked for). */
  async end(wait: Waiter): Promise<void> {
    if (this.#posted === null) return;
    const { buffer, tail } = await this.#take(wait);
    buffer.dispose();
    if (tail[0] !== NOTICE_END) {
      throw new Error(`stage parallel: rank ${this.src} sent an activation after this rank's last step`);
    }
  }

  /** Waits for the posted receive (posting one first if none is) and reads its tail. */
  async #take(wait: Waiter): Promise<{ buffer: Tensor; tail: number[] }> {
    if (this.#posted === null) this.#post();
    const { work, buffer } = this.#posted!;
    this.#posted = null;
    try {
      await wait(work);
    } catch (error) {
      buffer.dispose();
      throw error;
    }
    const n = numelOf(this.#shape);
    return { buffer, tail: scope(() => buffer.narrow(0, n, TAIL).toArray()) };
  }

  #post(): void {
    const n = numelOf(this.#shape);
    const buffer = keep(empty([n + TAIL], { dtype: this.dtype }));
    // A block, not an arrow's value: a view returned from scope() would escape it, and hold the
    // buffer until the garbage collector freed it.
    scope(() => {
      buffer.narrow(0, n, TAIL).zero_();
    });
    this.#posted = { buffer, work: this.group.recv(buffer, this.src, { tag: this.tag }) };
  }
}
