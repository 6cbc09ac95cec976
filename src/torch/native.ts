// Loads the compiled addon (build/Release/loco_native.node) and types its surface. Nothing above
// src/torch touches this module directly. Every export is registered through one guard in
// native/addon.cpp, so a C++ exception becomes a JS Error whose message starts with its name.
import * as fs from "node:fs";
import * as path from "node:path";

/** An opaque handle to a libtorch tensor owned by the addon. */
export type NativeHandle = { readonly __nativeTensor: unique symbol };
/** An opaque handle to a libtorch random generator owned by the addon. */
export type NativeGeneratorHandle = { readonly __nativeGenerator: unique symbol };

export interface MemoryStatsRaw {
  currentBytes: number;
  peakBytes: number;
  allocations: number;
  liveTensors: number;
  liveGenerators: number;
  cachedBytes: number;
}

/** An opaque handle to a c10d process group (distributed.cpp). */
export type NativeGroup = { readonly __nativeGroup: unique symbol };

export interface NativeGroupOptions {
  masterAddr: string;
  masterPort: number;
  rank: number;
  worldSize: number;
  timeoutMs: number;
}

export interface NativeAddon {
  resolveOp(name: string, overload: string): number;
  callOp(id: number, ...args: unknown[]): unknown;
  callOpVoid(id: number, ...args: unknown[]): void;
  opSchema(id: number): string;
  dispose(handle: NativeHandle): boolean;
  isDisposed(handle: NativeHandle): boolean;
  /** Reports a live tensor's bytes to V8 as external memory, if not reported yet. */
  accountExternal(handle: NativeHandle): void;
  /** Whether new handles report their bytes to V8 (off while a scope is open); returns the previous. */
  setExternalAccounting(enabled: boolean): boolean;
  fromBuffer(data: ArrayBufferView, shape: readonly number[], scalarType: number): NativeHandle;
  toBuffer(handle: NativeHandle): ArrayBuffer;
  shape(handle: NativeHandle): number[];
  strides(handle: NativeHandle): number[];
  scalarType(handle: NativeHandle): number;
  /** The tensor's device as libtorch names it ("cpu", "cuda:0"). */
  device(handle: NativeHandle): string;
  numel(handle: NativeHandle): number;
  dim(handle: NativeHandle): number;
  isContiguous(handle: NativeHandle, memoryFormat: number): boolean;
  item(handle: NativeHandle): number | boolean;
  isAliasOf(a: NativeHandle, b: NativeHandle): boolean;
  requiresGrad(handle: NativeHandle): boolean;
  gradFnName(handle: NativeHandle): string | null;
  setRequiresGrad(handle: NativeHandle, value: boolean): void;
  isLeaf(handle: NativeHandle): boolean;
  grad(handle: NativeHandle): NativeHandle | null;
  setGrad(handle: NativeHandle, grad: NativeHandle | null): void;
  backward(
    tensors: NativeHandle[],
    grads: (NativeHandle | null)[],
    retainGraph: boolean,
    createGraph: boolean,
    inputs: NativeHandle[],
  ): void;
  autogradGrad(
    outputs: NativeHandle[],
    inputs: NativeHandle[],
    gradOutputs: (NativeHandle | null)[],
    retainGraph: boolean,
    createGraph: boolean,
    allowUnused: boolean,
  ): (NativeHandle | null)[];
  setGradEnabled(enabled: boolean): boolean;
  isGradEnabled(): boolean;
  manualSeed(seed: number): void;
  newGenerator(seed: number): NativeGeneratorHandle;
  /** A handle to libtorch's default generator (never released). */
  defaultGenerator(): NativeGeneratorHandle;
  disposeGenerator(generator: NativeGeneratorHandle): boolean;
  generatorSeed(generator: NativeGeneratorHandle, seed: number): void;
  generatorGetState(generator: NativeGeneratorHandle): ArrayBuffer;
  generatorSetState(generator: NativeGeneratorHandle, state: Uint8Array): void;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  hardwareConcurrency(): number;
  /**
   * SIGINT/SIGTERM handled in native code (native/signals.cpp): the first prints `first` and is
   * counted, the second prints `second` and exits with 128 + signal at once.
   */
  installInterruptHandler(first: string, second: string): void;
  removeInterruptHandler(): void;
  interruptCount(): number;
  /** Sends this process SIGTERM when its parent `parentPid` is gone, and again `graceMs` later. */
  stopWithParent(parentPid: number, graceMs: number): void;
  memoryStats(): MemoryStatsRaw;
  resetPeakMemory(): void;
  emptyCache(): void;
  /** Device types this libtorch build can use ("cpu" always). */
  availableDevices(): string[];
  /** The canonical name of an available device, or an error naming what is available. */
  checkDevice(name: string): string;
  feedbackConv2d(
    input: NativeHandle,
    weight: NativeHandle,
    bias: NativeHandle | null,
    feedback: NativeHandle,
    stride: number[],
    padding: number[],
    dilation: number[],
    groups: number,
  ): NativeHandle;
  feedbackLinear(
    input: NativeHandle,
    weight: NativeHandle,
    bias: NativeHandle | null,
    feedback: NativeHandle,
  ): NativeHandle;
  /** relu(batch_norm(...) + residual) in one autograd node where it can (batchnorm_relu.cpp). */
  batchNormReLU(
    input: NativeHandle,
    residual: NativeHandle | null,
    weight: NativeHandle | null,
    bias: NativeHandle | null,
    runningMean: NativeHandle | null,
    runningVar: NativeHandle | null,
    training: boolean,
    momentum: number,
    eps: number,
  ): NativeHandle;
  setFusedBatchNormReLU(enabled: boolean): void;
  fusedBatchNormReLUEnabled(): boolean;
  // Process groups (distributed.cpp). Each operation returns a Promise settled off the main thread.
  initProcessGroup(options: NativeGroupOptions): Promise<NativeGroup>;
  destroyProcessGroup(group: NativeGroup): Promise<void>;
  /** The group's first failure message, "" while healthy. */
  processGroupFailure(group: NativeGroup): string;
  /** opCode: 0 sum, 2 product, 3 min, 4 max (c10d::ReduceOp). */
  allReduce(group: NativeGroup, tensor: NativeHandle, opCode: number, timeoutMs?: number): Promise<void>;
  allGather(group: NativeGroup, outputs: NativeHandle[], input: NativeHandle, timeoutMs?: number): Promise<void>;
  broadcast(group: NativeGroup, tensor: NativeHandle, root: number, timeoutMs?: number): Promise<void>;
  barrier(group: NativeGroup, timeoutMs?: number): Promise<void>;
  send(group: NativeGroup, tensor: NativeHandle, dst: number, tag: number, timeoutMs?: number): Promise<void>;
  recv(group: NativeGroup, tensor: NativeHandle, src: number, tag: number, timeoutMs?: number): Promise<void>;
  allReduceSumWithGrad(group: NativeGroup, tensor: NativeHandle): NativeHandle;
  allGatherWithGrad(group: NativeGroup, tensor: NativeHandle): NativeHandle;
}

function findPackageRoot(start: string): string {
  let dir = start;
  for (;;) {
    if (fs.existsSync(path.join(dir, "binding.gyp"))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`loco: cannot find the package root above ${start}`);
    dir = parent;
  }
}

function loadAddon(): NativeAddon {
  const root = findPackageRoot(__dirname);
  const candidates = [
    path.join(root, "build", "Release", "loco_native.node"),
    path.join(root, "build", "Debug", "loco_native.node"),
  ];
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) {
    throw new Error(
      `loco: the native addon is not built (looked for ${candidates.join(", ")}). ` +
        "Run `npm run build:native` (needs libtorch: `apt-get install libtorch-dev`, or set LIBTORCH).",
    );
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const addon = require(found) as NativeAddon;
  // libtorch starts with one thread in a fresh process (and in every worker thread): default to
  // the machine's cores unless the user chose a count.
  const requested = Number(process.env.LOCO_NUM_THREADS ?? process.env.OMP_NUM_THREADS ?? 0);
  addon.setNumThreads(requested >= 1 ? Math.floor(requested) : Math.max(1, addon.hardwareConcurrency()));
  return addon;
}

export const native: NativeAddon = loadAddon();
