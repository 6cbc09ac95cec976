// The tensor engine's public surface: `import { torch } from "loco"` or `import * as torch from "loco/torch"`.
export { Tensor, opSchema, callOp, callTensor, type Shape, type NestedArray, type TensorOrScalar } from "./tensor";
export * from "./creation";
export { type Device, availableDevices, checkDevice, isDeviceAvailable } from "./device";
export { type DType, type MemoryFormat, type TypedArray, isFloatingDType, bytesPerElement } from "./dtype";
export { scope, keep, scopeDepth } from "./scope";
export { backward, grad, noGrad, enableGrad, isGradEnabled, setGradEnabled } from "./autograd";
export { Generator, manualSeed, defaultGenerator, liveGenerators } from "./random";
export {
  memoryStats,
  liveTensors,
  resetPeakMemory,
  emptyCache,
  collectGarbage,
  setNumThreads,
  getNumThreads,
  type MemoryStats,
} from "./memory";
export * as F from "./functional";
export { addOut, negOut } from "./out";
export * as autograd from "./autograd";
export {
  saveSafetensors,
  loadSafetensors,
  serializeSafetensors,
  deserializeSafetensors,
  readSafetensorsHeader,
  parseSafetensorsHeader,
  SafetensorsError,
  type SafetensorsDType,
  type SafetensorsContents,
  type SafetensorsEntry,
  type SafetensorsHeader,
  type TensorDict,
} from "./safetensors";
export * as distributed from "./distributed";
