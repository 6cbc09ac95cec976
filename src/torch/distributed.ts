// Process groups on libtorch's c10d (ProcessGroupGloo over a TCPStore), with PyTorch's rendezvous
// conventions: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE and LOCAL_RANK (see docs/distributed.md).
//
// Every operation returns a Work: await it (or its wait()) to block this async function until the
// operation completes on this rank; hold it to overlap communication with other work. Node's main
// thread never blocks on a peer: Gloo runs the operation on its own threads and the Promise is
// settled when it completes, fails, or times out. A failure names the rank and the operation, and
// the ranks found dead or behind; after one, the group refuses further operations.
import { type NativeGroup, native } from "./native";
import { Tensor } from "./tensor";
import { empty } from "./creation";
import { isFloatingDType } from "./dtype";
import { keep } from "./scope";

export type ReduceOp = "sum" | "avg" | "product" | "min" | "max";

const reduceOpCodes: Record<Exclude<ReduceOp, "avg">, number> = { sum: 0, product: 2, min: 3, max: 4 };

/** Errors of the distributed setup a user can fix (a missing or malformed variable or option). */
export class DistributedConfigError extends Error {
  readonly userFacing = true;
  constructor(message: string) {
    super(message);
    this.name = "DistributedConfigError";
  }
}

export interface InitOptions {
  /** This process's rank in [0, worldSize). Default: $RANK. */
  rank?: number;
  /** Number of processes. Default: $WORLD_SIZE. */
  worldSize?: number;
  /** Rank among the processes on this machine. Default: $LOCAL_RANK, else rank. */
  localRank?: number;
  /** Host of rank 0's rendezvous store. Default: $MASTER_ADDR, else 127.0.0.1. */
  masterAddr?: string;
  /** Port of the rendezvous store. Default: $MASTER_PORT, else 29500. */
  masterPort?: number;
  /**
   * Timeout of the rendezvous and, by default, of every operation, in milliseconds.
   * Default: $LOCO_DIST_TIMEOUT_MS, else 300000 (5 min).
   */
  timeoutMs?: number;
}

export interface OpOptions {
  /** This operation's timeout in milliseconds (default: the group's). */
  timeoutMs?: number;
}

export interface ReduceOptions extends OpOptions {
  /** Default "sum". "avg" sums, then divides by the world size (Gloo has no native average). */
  op?: ReduceOp;
}

export interface PointToPointOptions extends OpOptions {
  /** Matches a send with its recv when several are in flight between the same pair (default 0). */
  tag?: number;
}

/**
 * An operation in flight. `await work` (or `await work.wait()`) resolves to the operation's result
 * once it has completed on this rank, or rejects with the diagnosed failure. Tensors passed to an
 * operation must not be read or written until it completes.
 */
export class Work<T> implements PromiseLike<T> {
  readonly #done: Promise<T>;

  constructor(done: Promise<T>) {
    this.#done = done;
    // A Work nobody waits on must not crash the process with an unhandled rejection; waiting
    // on it still reports the error.
    done.catch(() => undefined);
  }

  wait(): Promise<T> {
    return this.#done;
  }

  then<A = T, B = never>(
    onFulfilled?: ((value: T) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.#done.then(onFulfilled, onRejected);
  }
}

function integerFrom(name: string, explicit: number | undefined, envName: string, fallback?: number): number {
  if (explicit !== undefined) {
    if (!Number.isInteger(explicit)) throw new DistributedConfigError(`${name} must be an integer, got ${explicit}`);
    return explicit;
  }
  const raw = process.env[envName];
  if (raw === undefined || raw === "") {
    if (fallback !== undefined) return fallback;
    throw new DistributedConfigError(
      `${envName} is not set: start the ranks with \`loco launch\` (or torchrun-style variables), or pass ${name}`,
    );
  }
  if (!/^\d+$/.test(raw.trim())) {
    throw new DistributedConfigError(`${envName} must be a non-negative integer, got '${raw}'`);
  }
  return Number(raw);
}

export interface ResolvedInit {
  rank: number;
  worldSize: number;
  localRank: number;
  masterAddr: string;
  masterPort: number;
  timeoutMs: number;
}

/** Options filled in from the environment and checked, as initProcessGroup uses them. */
export function resolveInitOptions(options: InitOptions = {}): ResolvedInit {
  const worldSize = integerFrom("worldSize", options.worldSize, "WORLD_SIZE");
  const rank = integerFrom("rank", options.rank, "RANK");
  const localRank = integerFrom("localRank", options.localRank, "LOCAL_RANK", rank);
  const masterAddr = options.masterAddr ?? (process.env.MASTER_ADDR || "127.0.0.1");
  const masterPort = integerFrom("masterPort", options.masterPort, "MASTER_PORT", 29500);
  const timeoutMs = integerFrom("timeoutMs", options.timeoutMs, "LOCO_DIST_TIMEOUT_MS", 300_000);
  if (worldSize < 1) throw new DistributedConfigError(`WORLD_SIZE must be at least 1, got ${worldSize}`);
  if (rank < 0 || rank >= worldSize) {
    throw new DistributedConfigError(`RANK must be in [0, ${worldSize - 1}] (WORLD_SIZE ${worldSize}), got ${rank}`);
  }
  if (localRank < 0) throw new DistributedConfigError(`LOCAL_RANK must be non-negative, got ${localRank}`);
  if (masterPort < 1 || masterPort > 65535) {
    throw new DistributedConfigError(`MASTER_PORT must be in [1, 65535], got ${masterPort}`);
  }
  if (masterAddr.trim() === "") throw new DistributedConfigError("MASTER_ADDR is empty");
  if (timeoutMs < 1) throw new DistributedConfigError(`the timeout must be at least 1 ms, got ${timeoutMs}`);
  return { rank, worldSize, localRank, masterAddr, masterPort, timeoutMs };
}

/**
 * Joins the process group: rank 0 hosts the rendezvous store, every rank connects to it, and the
 * promise resolves once all `worldSize` ranks have arrived (or rejects after the timeout, naming
 * the ranks that never arrived).
 */
export async function initProcessGroup(options: InitOptions = {}): Promise<ProcessGroup> {
  const resolved = resolveInitOptions(options);
  const handle = await native.initProcessGroup(resolved);
  return new ProcessGroup(handle, resolved);
}

function checkTimeout(options: OpOptions | undefined): number | undefined {
  const ms = options?.timeoutMs;
  if (ms !== undefined && !(Number.isFinite(ms) && ms >= 1)) {
    throw new RangeError(`timeoutMs must be a number of milliseconds >= 1, got ${ms}`);
  }
  return ms;
}

function checkTag(options: PointToPointOptions | undefined): number {
  const tag = options?.tag ?? 0;
  if (!Number.isInteger(tag) || tag < 0) throw new RangeError(`tag must be a non-negative integer, got ${tag}`);
  return tag;
}

export class ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly masterAddr: string;
  readonly masterPort: number;
  readonly timeoutMs: number;
  #handle: NativeGroup | null;

  /** Use initProcessGroup(). */
  constructor(handle: NativeGroup, init: ResolvedInit) {
    this.#handle = handle;
    this.rank = init.rank;
    this.worldSize = init.worldSize;
    this.localRank = init.localRank;
    this.masterAddr = init.masterAddr;
    this.masterPort = init.masterPort;
    this.timeoutMs = init.timeoutMs;
  }

  get #group(): NativeGroup {
    if (this.#handle === null) throw new Error("ProcessGroup: used after destroy()");
    return this.#handle;
  }

  /** Reduces `tensor` over all ranks, in place on every rank; resolves to `tensor`. */
  allReduce(tensor: Tensor, options: ReduceOptions = {}): Work<Tensor> {
    const op = options.op ?? "sum";
    if (op === "avg") {
      if (!isFloatingDType(tensor.dtype)) {
        throw new TypeError(`allReduce: op "avg" needs a floating-point tensor, got ${tensor.dtype}`);
      }
      const done = native.allReduce(this.#group, tensor.handle, reduceOpCodes.sum, checkTimeout(options));
      return new Work(done.then(() => tensor.div_(this.worldSize)));
    }
    const code = reduceOpCodes[op];
    if (code === undefined) {
      throw new RangeError(`allReduce: unknown op '${String(op)}' (expected sum, avg, product, min or max)`);
    }
    return new Work(native.allReduce(this.#group, tensor.handle, code, checkTimeout(options)).then(() => tensor));
  }

  /**
   * Every rank's `tensor` (same shape and dtype on all ranks), indexed by rank. The returned tensors
   * belong to the caller (they escape any scope).
   */
  allGather(tensor: Tensor, options: OpOptions = {}): Work<Tensor[]> {
    const outputs = Array.from({ length: this.worldSize }, () => keep(empty(tensor.shape, { dtype: tensor.dtype })));
    const done = native.allGather(
      this.#group,
      outputs.map((t) => t.handle),
      tensor.handle,
      checkTimeout(options),
    );
    return new Work(done.then(() => outputs));
  }

  /** Copies rank `root`'s `tensor` into `tensor` on every rank; resolves to `tensor`. */
  broadcast(tensor: Tensor, root: number, options: OpOptions = {}): Work<Tensor> {
    this.#checkRank("broadcast: root", root);
    return new Work(native.broadcast(this.#group, tensor.handle, root, checkTimeout(options)).then(() => tensor));
  }

  /** Sends `tensor` to rank `dst`; resolves once it has been handed over. */
  send(tensor: Tensor, dst: number, options: PointToPointOptions = {}): Work<void> {
    return new Work(native.send(this.#group, tensor.handle, dst, checkTag(options), checkTimeout(options)));
  }

  /** Receives into `tensor` (its shape and dtype must match the sender's) from rank `src`. */
  recv(tensor: Tensor, src: number, options: PointToPointOptions = {}): Work<Tensor> {
    const done = native.recv(this.#group, tensor.handle, src, checkTag(options), checkTimeout(options));
    return new Work(done.then(() => tensor));
  }

  /** Resolves once every rank has reached this barrier. */
  barrier(options: OpOptions = {}): Work<void> {
    return new Work(native.barrier(this.#group, checkTimeout(options)));
  }

  /**
   * Σ over ranks of `tensor`, differentiable: the gradient of `tensor` is the sum over ranks of the
   * result's gradients (every rank's loss depends on the sum). For use inside a forward pass
   * (SyncBatchNorm), which is synchronous: it blocks this thread, at most for the group's timeout,
   * in forward and again in backward. Every rank must call it in the same order.
   */
  allReduceWithGrad(tensor: Tensor): Tensor {
    return new Tensor(native.allReduceSumWithGrad(this.#group, tensor.handle));
  }

  /**
   * Every rank's `tensor` concatenated along dim 0 in rank order, differentiable (as solo-learn's
   * and lightly's gather layers): the gradient of `tensor` is its own slice of the sum over ranks of
   * the result's gradients. Same shape on every rank. Blocks like allReduceWithGrad.
   */
  allGatherWithGrad(tensor: Tensor): Tensor {
    return new Tensor(native.allGatherWithGrad(this.#group, tensor.handle));
  }

  /**
   * Leaves the group: waits (within the timeout) until every rank has arrived here, so rank 0's
   * store outlives the others' last use, then releases Gloo's threads. After a failure (already
   * reported by the operation that failed) it skips the wait and does not throw again.
   * `wait: false` leaves without waiting for the others (this rank is failing on its own: the
   * others then fail on their next operation, naming it, instead of waiting for the timeout).
   */
  async destroy(options: { wait?: boolean } = {}): Promise<void> {
    const handle = this.#handle;
    if (handle === null) return;
    try {
      if (this.failure === null && options.wait !== false) await this.barrier();
    } finally {
      this.#handle = null;
      await native.destroyProcessGroup(handle);
    }
  }

  /** The message of the group's first failed operation, or null while it is healthy. */
  get failure(): string | null {
    if (this.#handle === null) return null;
    return native.processGroupFailure(this.#handle) || null;
  }

  #checkRank(what: string, rank: number): void {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.worldSize) {
      throw new RangeError(`${what} must be a rank in [0, ${this.worldSize - 1}], got ${rank}`);
    }
  }
}
