// Memory gauges: live tensor handles and the bytes libtorch holds on the CPU (current and peak),
// counted by the addon's allocator.
import * as v8 from "node:v8";
import * as vm from "node:vm";
import { native } from "./native";

export interface MemoryStats {
  /** Bytes held by libtorch's CPU allocations now. */
  currentBytes: number;
  /** Most bytes held since the last resetPeakMemory(). */
  peakBytes: number;
  /** Allocations made since the process started. */
  allocations: number;
  /** Tensor handles neither disposed nor collected. */
  liveTensors: number;
  /** Generators neither disposed nor collected (libtorch's default generator not counted). */
  liveGenerators: number;
  /**
   * Bytes of freed large blocks the allocator keeps for reuse (not counted in currentBytes; capped
   * by LOCO_CACHE_MB, else by 2048 MiB or 1.5x the most tensor bytes held at once, whichever is
   * more). emptyCache() returns them to the system.
   */
  cachedBytes: number;
}

export function memoryStats(): MemoryStats {
  return native.memoryStats();
}

/** Number of live tensor handles (not disposed, not garbage collected). */
export function liveTensors(): number {
  return native.memoryStats().liveTensors;
}

/** Returns the allocator's cached blocks to the system. */
export function emptyCache(): void {
  native.emptyCache();
}

/** Restarts peak tracking from the bytes held now. */
export function resetPeakMemory(): void {
  native.resetPeakMemory();
}

export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}

export function getNumThreads(): number {
  return native.getNumThreads();
}

let gc: (() => void) | undefined;

/**
 * Runs a full garbage collection now: tensors the program dropped without dispose() are freed
 * before it returns (the addon's finalizers run inside the collection). Memory measurements call
 * it before they start: a collection that happens to run during the measured work frees older
 * garbage and lowers the measured peak by its size (a LoCo step at width 16 whose peak is 21.0 MB
 * measured 8.4 MB with 12 MB of dropped tensors collected early in its forward; CI once measured
 * 9.1 MB). Node starts without --expose-gc; the flag is set at run time, once.
 */
export function collectGarbage(): void {
  if (gc === undefined) {
    v8.setFlagsFromString("--expose-gc");
    gc = vm.runInNewContext("gc") as () => void;
  }
  gc();
}
