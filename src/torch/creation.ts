// Factory functions: zeros, ones, full, arange, random tensors, and tensors from JS data. Each takes
// a `device` option ("cpu" today; see device.ts): factories that call an ATen factory pass it
// through (the schema's `Device? device`, after `ScalarType? dtype` and `Layout? layout`);
// tensors built from JS data are made on the CPU and moved.
import { native } from "./native";
import { type Device, checkDevice } from "./device";
import { type DType, type TypedArray, dtypeOfTypedArray, isDType, scalarTypeCode } from "./dtype";
import { type NestedArray, type Shape, Tensor, callTensor } from "./tensor";
import type { Generator } from "./random";

export interface FactoryOptions {
  dtype?: DType;
  /** Where the tensor lives (default "cpu"; an unavailable device is an error naming it). */
  device?: Device;
  requiresGrad?: boolean;
}

export interface RandomOptions extends FactoryOptions {
  generator?: Generator;
}

function code(options: FactoryOptions | undefined, fallback?: DType): number | null {
  const dtype = options?.dtype ?? fallback;
  if (dtype === undefined) return null;
  if (!isDType(dtype))
    throw new TypeError(`unknown dtype '${String(dtype)}' (expected one of ${Object.keys(scalarTypeCode).join(", ")})`);
  return scalarTypeCode[dtype];
}

/** The schema's `Layout? layout, Device? device` pair: the default layout and the checked device. */
function place(options: FactoryOptions | undefined, fn: string): [null, string | null] {
  return [null, options?.device === undefined ? null : checkDevice(options.device, fn)];
}

/** Moves a tensor made on the CPU to options.device (no-op for the CPU). */
function moved(t: Tensor, options: FactoryOptions | undefined, fn: string): Tensor {
  if (options?.device === undefined || checkDevice(options.device, fn) === t.device) return t;
  const out = t.to(options.device);
  t.dispose();
  return out;
}

function finish(t: Tensor, options?: FactoryOptions): Tensor {
  if (options?.requiresGrad) t.requiresGrad_(true);
  return t;
}

function checkShape(shape: Shape, fn: string): number[] {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new TypeError(`${fn}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  return [...shape];
}

export function zeros(shape: Shape, options?: FactoryOptions): Tensor {
  return finish(callTensor("zeros", checkShape(shape, "zeros"), code(options), ...place(options, "zeros")), options);
}

export function ones(shape: Shape, options?: FactoryOptions): Tensor {
  return finish(callTensor("ones", checkShape(shape, "ones"), code(options), ...place(options, "ones")), options);
}

export function full(shape: Shape, value: number, options?: FactoryOptions): Tensor {
  return finish(
    callTensor("full", checkShape(shape, "full"), value, code(options, "float32"), ...place(options, "full")),
    options,
  );
}

export function empty(shape: Shape, options?: FactoryOptions): Tensor {
  return finish(
    callTensor("empty.memory_format", checkShape(shape, "empty"), code(options), ...place(options, "empty")),
    options,
  );
}

export function zerosLike(t: Tensor, options?: FactoryOptions): Tensor {
  return finish(callTensor("zeros_like", t.handle, code(options), ...place(options, "zerosLike")), options);
}

export function onesLike(t: Tensor, options?: FactoryOptions): Tensor {
  return finish(callTensor("ones_like", t.handle, code(options), ...place(options, "onesLike")), options);
}

export function fullLike(t: Tensor, value: number, options?: FactoryOptions): Tensor {
  return finish(callTensor("full_like", t.handle, value, code(options), ...place(options, "fullLike")), options);
}

/** Values start, start+step, … below end (int64 when all arguments are integers, as in PyTorch). */
export function arange(start: number, end?: number, step = 1, options?: FactoryOptions): Tensor {
  if (end === undefined) [start, end] = [0, start];
  return finish(callTensor("arange.start_step", start, end, step, code(options), ...place(options, "arange")), options);
}

export function linspace(start: number, end: number, steps: number, options?: FactoryOptions): Tensor {
  return finish(callTensor("linspace", start, end, steps, code(options), ...place(options, "linspace")), options);
}

export function eye(n: number, options?: FactoryOptions): Tensor {
  return finish(callTensor("eye", n, code(options), ...place(options, "eye")), options);
}

/** Samples of U[0, 1). */
export function rand(shape: Shape, options?: RandomOptions): Tensor {
  const s = checkShape(shape, "rand");
  return finish(
    options?.generator
      ? callTensor("rand.generator", s, options.generator.handle, code(options), ...place(options, "rand"))
      : callTensor("rand", s, code(options), ...place(options, "rand")),
    options,
  );
}

/** Samples of N(0, 1). */
export function randn(shape: Shape, options?: RandomOptions): Tensor {
  const s = checkShape(shape, "randn");
  return finish(
    options?.generator
      ? callTensor("randn.generator", s, options.generator.handle, code(options), ...place(options, "randn"))
      : callTensor("randn", s, code(options), ...place(options, "randn")),
    options,
  );
}

/** Integers uniform in [low, high) (int64 unless dtype says otherwise). */
export function randint(low: number, high: number, shape: Shape, options?: RandomOptions): Tensor {
  const s = checkShape(shape, "randint");
  return finish(
    options?.generator
      ? callTensor(
          "randint.low_generator",
          low,
          high,
          s,
          options.generator.handle,
          code(options, "int64"),
          ...place(options, "randint"),
        )
      : callTensor("randint.low", low, high, s, code(options, "int64"), ...place(options, "randint")),
    options,
  );
}

/** A random permutation of 0 … n-1 (int64). */
export function randperm(n: number, options?: RandomOptions): Tensor {
  return options?.generator
    ? callTensor(
        "randperm.generator",
        n,
        options.generator.handle,
        code(options, "int64"),
        ...place(options, "randperm"),
      )
    : callTensor("randperm", n, code(options, "int64"), ...place(options, "randperm"));
}

/** Bernoulli samples with probability p, shaped like `shape`. */
export function bernoulli(shape: Shape, p: number, options?: RandomOptions): Tensor {
  const probs = full(shape, p, { dtype: options?.dtype ?? "float32", device: options?.device });
  const out = callTensor("bernoulli", probs.handle, options?.generator?.handle ?? null);
  probs.dispose();
  return out;
}

/** A tensor holding a copy of a typed array's values, with the given shape (default: 1-D). */
export function fromTypedArray(data: TypedArray, shape?: Shape, options?: FactoryOptions): Tensor {
  const s = checkShape(shape ?? [data.length], "fromTypedArray");
  const natural = dtypeOfTypedArray(data);
  const storageDType: DType = options?.dtype === "bool" && natural === "uint8" ? "bool" : natural;
  const numel = s.reduce((a, b) => a * b, 1);
  if (numel !== data.length) {
    throw new RangeError(
      `fromTypedArray: ${data.length} values cannot fill shape [${s.join(", ")}] (${numel} elements)`,
    );
  }
  let t = new Tensor(native.fromBuffer(data, s, scalarTypeCode[storageDType]));
  if (options?.dtype && options.dtype !== storageDType) {
    const converted = t.to(options.dtype);
    t.dispose();
    t = converted;
  }
  return finish(moved(t, options, "fromTypedArray"), options);
}

function inferShape(data: NestedArray): number[] {
  const shape: number[] = [];
  let level: NestedArray = data;
  while (Array.isArray(level)) {
    shape.push(level.length);
    level = level[0] as NestedArray;
  }
  return shape;
}

/**
 * A tensor from (nested) JS numbers or booleans. Default dtype: float32 for numbers, bool for
 * booleans (integers stay float32 unless dtype is given: JS does not tell 1 from 1.0).
 */
export function tensor(data: NestedArray | TypedArray, options?: FactoryOptions): Tensor {
  if (ArrayBuffer.isView(data)) return fromTypedArray(data as TypedArray, undefined, options);
  const shape = inferShape(data);
  const flat = (Array.isArray(data) ? (data as unknown[]).flat(Infinity) : [data]) as (number | boolean)[];
  const numel = shape.reduce((a, b) => a * b, 1);
  if (flat.length !== numel)
    throw new RangeError(
      `tensor: ragged nested array (shape [${shape.join(", ")}] implies ${numel} values, found ${flat.length})`,
    );
  const isBool = flat.length > 0 && typeof flat[0] === "boolean";
  const dtype = options?.dtype ?? (isBool ? "bool" : "float32");
  let t: Tensor;
  if (dtype === "float64") t = fromTypedArray(Float64Array.from(flat, Number), shape);
  else if (dtype === "int64")
    t = fromTypedArray(
      BigInt64Array.from(flat, (v) => BigInt(Math.trunc(Number(v)))),
      shape,
    );
  else if (dtype === "bool" || dtype === "uint8") t = fromTypedArray(Uint8Array.from(flat, Number), shape, { dtype });
  else {
    const f = fromTypedArray(Float32Array.from(flat, Number), shape);
    if (dtype === "float32") t = f;
    else {
      t = f.to(dtype);
      f.dispose();
    }
  }
  return finish(moved(t, options, "tensor"), options);
}

/** A 0-d tensor holding one value. */
export function scalarTensor(value: number, options?: FactoryOptions): Tensor {
  return finish(
    callTensor("scalar_tensor", value, code(options, "float32"), ...place(options, "scalarTensor")),
    options,
  );
}

export function cat(tensors: readonly Tensor[], dim = 0): Tensor {
  return callTensor(
    "cat",
    tensors.map((t) => t.handle),
    dim,
  );
}

export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  return callTensor(
    "stack",
    tensors.map((t) => t.handle),
    dim,
  );
}

/** Elementwise choice: `condition ? a : b`. */
export function where(condition: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof a === "number" && typeof b === "number") return callTensor("where.Scalar", condition.handle, a, b);
  if (typeof a === "number") return callTensor("where.ScalarSelf", condition.handle, a, (b as Tensor).handle);
  if (typeof b === "number") return callTensor("where.ScalarOther", condition.handle, a.handle, b);
  return callTensor("where.self", condition.handle, a.handle, b.handle);
}
