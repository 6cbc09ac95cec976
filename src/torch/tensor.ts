// The Tensor class: a handle to a libtorch tensor with PyTorch's methods in camelCase.
import { type NativeHandle, native } from "./native";
import {
  type DType,
  type MemoryFormat,
  type TypedArray,
  dtypeFromCode,
  isDType,
  memoryFormatCode,
  scalarTypeCode,
  typedArrayFor,
} from "./dtype";
import { type Scoped, track } from "./scope";
import type { Generator } from "./random";
import { type Device, availableDevices, checkDevice } from "./device";

// ---- operator resolution --------------------------------------------------------------------

const opIds = new Map<string, number>();

/** The addon's id for `aten::name.overload`, resolved once. `qualified` is "name" or "name.overload". */
export function opId(qualified: string): number {
  let id = opIds.get(qualified);
  if (id === undefined) {
    const dot = qualified.indexOf(".");
    const name = dot < 0 ? qualified : qualified.slice(0, dot);
    const overload = dot < 0 ? "" : qualified.slice(dot + 1);
    id = native.resolveOp(name.includes("::") ? name : `aten::${name}`, overload);
    opIds.set(qualified, id);
  }
  return id;
}

/** The schema of an ATen operator, as libtorch prints it (for docs and error messages). */
export function opSchema(qualified: string): string {
  return native.opSchema(opId(qualified));
}

/** Calls an ATen operator that returns one tensor. Arguments are positional, as in its schema. */
export function callTensor(qualified: string, ...args: unknown[]): Tensor {
  return new Tensor(native.callOp(opId(qualified), ...args) as NativeHandle);
}

/** Calls an ATen operator that returns several tensors. */
export function callTensors(qualified: string, ...args: unknown[]): Tensor[] {
  const out = native.callOp(opId(qualified), ...args) as (NativeHandle | null)[];
  return out.map((h) => (h === null ? (null as unknown as Tensor) : new Tensor(h)));
}

/** Calls an in-place ATen operator (its result aliases an argument). */
export function callInPlace(qualified: string, ...args: unknown[]): void {
  native.callOpVoid(opId(qualified), ...args);
}

/** Calls any ATen operator, converting tensors in both directions. */
export function callOp(qualified: string, ...args: unknown[]): unknown {
  const converted = args.map(toNativeArg);
  return fromNativeResult(native.callOp(opId(qualified), ...converted));
}

function toNativeArg(a: unknown): unknown {
  if (a instanceof Tensor) return a.handle;
  if (Array.isArray(a)) return a.map(toNativeArg);
  return a;
}

function fromNativeResult(r: unknown): unknown {
  if (Array.isArray(r)) return r.map(fromNativeResult);
  if (typeof r === "object" && r !== null) return new Tensor(r as NativeHandle);
  return r;
}

// ---- helpers ----------------------------------------------------------------------------------

export type Shape = readonly number[];
export type TensorOrScalar = Tensor | number;
/** A nested array of numbers or booleans, as accepted by tensor(). */
export type NestedArray = number | boolean | readonly NestedArray[];

const handles = (ts: readonly Tensor[]): NativeHandle[] => ts.map((t) => t.handle);

function normDim(dim: number, ndim: number): number {
  return dim < 0 ? dim + ndim : dim;
}

// ---- the class --------------------------------------------------------------------------------

export class Tensor implements Scoped {
  #handle: NativeHandle | null;
  scopeDepth = -1;

  /** Wraps a native handle; user code creates tensors with the factory functions instead. */
  constructor(handle: NativeHandle) {
    this.#handle = handle;
    track(this);
  }

  /** The native handle; throws a clear error after dispose(). */
  get handle(): NativeHandle {
    const h = this.#handle;
    if (h === null) throw new Error("Tensor was used after dispose()");
    return h;
  }

  get isDisposed(): boolean {
    return this.#handle === null;
  }

  /** Frees the native tensor now. Disposing twice is an error (it usually hides an ownership bug). */
  dispose(): void {
    if (this.#handle === null) throw new Error("Tensor.dispose(): the tensor was already disposed");
    this.release();
  }

  /** Reports the tensor's bytes to V8 once it has left every scope (scopes and keep() use this). */
  accountExternal(): void {
    if (this.#handle !== null) native.accountExternal(this.#handle);
  }

  /** Frees the native tensor if it is still alive (scopes use this). */
  release(): void {
    if (this.#handle === null) return;
    native.dispose(this.#handle);
    this.#handle = null;
  }

  // ---- metadata ----

  get shape(): number[] {
    return native.shape(this.handle);
  }
  size(dim?: number): number | number[] {
    const s = this.shape;
    return dim === undefined ? s : s[normDim(dim, s.length)];
  }
  get strides(): number[] {
    return native.strides(this.handle);
  }
  get dtype(): DType {
    return dtypeFromCode(native.scalarType(this.handle));
  }
  /** Where the tensor lives, as libtorch names it ("cpu", "cuda:0"). */
  get device(): string {
    return native.device(this.handle);
  }
  get ndim(): number {
    return native.dim(this.handle);
  }
  dim(): number {
    return native.dim(this.handle);
  }
  numel(): number {
    return native.numel(this.handle);
  }
  isContiguous(memoryFormat: MemoryFormat = "contiguous"): boolean {
    return native.isContiguous(this.handle, memoryFormatCode[memoryFormat]);
  }
  /** True when both tensors view the same storage. */
  isAliasOf(other: Tensor): boolean {
    return native.isAliasOf(this.handle, other.handle);
  }

  // ---- data out ----

  /** The single value of a one-element tensor. */
  item(): number {
    const v = native.item(this.handle);
    return typeof v === "boolean" ? Number(v) : v;
  }
  /** A copy of the values in row-major order, as the matching typed array. */
  data(): TypedArray {
    return typedArrayFor(this.dtype, native.toBuffer(this.handle));
  }
  /** A copy of the values as a flat array of JS numbers (int64 converted with Number()). */
  toArray(): number[] {
    const d = this.data();
    return d instanceof BigInt64Array ? Array.from(d, Number) : Array.from(d as ArrayLike<number>);
  }
  /** The values as nested arrays, like PyTorch's tolist(). */
  tolist(): NestedArray {
    const flat = this.toArray();
    const shape = this.shape;
    if (shape.length === 0) return flat[0];
    let offset = 0;
    const build = (d: number): NestedArray[] => {
      const out: NestedArray[] = [];
      for (let i = 0; i < shape[d]; i++) out.push(d === shape.length - 1 ? flat[offset++] : build(d + 1));
      return out;
    };
    return build(0);
  }
  toString(): string {
    if (this.isDisposed) return "Tensor(<disposed>)";
    return `Tensor(shape=[${this.shape.join(", ")}], dtype=${this.dtype}${this.requiresGrad ? ", requiresGrad" : ""})`;
  }

  // ---- autograd ----

  get requiresGrad(): boolean {
    return native.requiresGrad(this.handle);
  }
  set requiresGrad(value: boolean) {
    native.setRequiresGrad(this.handle, value);
  }
  requiresGrad_(value = true): this {
    native.setRequiresGrad(this.handle, value);
    return this;
  }
  /** The name of the autograd node that made this tensor ("AddBackward0"), null for a leaf. */
  get gradFnName(): string | null {
    return native.gradFnName(this.handle);
  }
  get isLeaf(): boolean {
    return native.isLeaf(this.handle);
  }
  /** The accumulated gradient (a new handle each read: dispose it or read it inside a scope). */
  get grad(): Tensor | null {
    const g = native.grad(this.handle);
    return g === null ? null : new Tensor(g);
  }
  set grad(value: Tensor | null) {
    if (value !== null) {
      // As PyTorch's setter does: a gradient must match its tensor (later accumulation relies on it).
      const [shape, gshape] = [this.shape, value.shape];
      if (shape.length !== gshape.length || shape.some((d, i) => d !== gshape[i])) {
        throw new Error(`Tensor.grad: assigned grad has shape [${gshape.join(", ")}], expected [${shape.join(", ")}]`);
      }
      if (value.dtype !== this.dtype) {
        throw new Error(`Tensor.grad: assigned grad has dtype ${value.dtype}, expected ${this.dtype}`);
      }
    }
    native.setGrad(this.handle, value === null ? null : value.handle);
  }
  /** Backpropagates from this tensor; `gradient` is required unless it has one element. */
  backward(gradient?: Tensor, options: BackwardOptions = {}): void {
    runBackward([this], gradient ? [gradient] : [], options);
  }
  detach(): Tensor {
    return callTensor("detach", this.handle);
  }
  detach_(): this {
    callInPlace("detach_", this.handle);
    return this;
  }

  // ---- conversion and copies ----

  /**
   * A copy (or this tensor's values, aliased, when nothing changes) converted to a dtype or moved to
   * a device: `x.to("float64")`, `x.to("cpu")`, `x.to({ device: "cpu", dtype: "float32" })`.
   */
  to(target: DType | Device | { dtype?: DType; device?: Device }): Tensor {
    const { dtype, device } =
      typeof target === "object" && target !== null
        ? target
        : isDType(target)
          ? { dtype: target, device: undefined }
          : { dtype: undefined, device: target as Device };
    if (dtype !== undefined && !isDType(dtype)) {
      const known = Object.keys(scalarTypeCode).join(", ");
      throw new TypeError(`Tensor.to: unknown dtype '${String(dtype)}' (expected one of ${known})`);
    }
    if (device === undefined)
      return callTensor("to.dtype", this.handle, scalarTypeCode[dtype ?? this.dtype], false, false);
    if (typeof device !== "string" || !/^[a-z]+(:\d+)?$/.test(device)) {
      const known = Object.keys(scalarTypeCode).join(", ");
      throw new TypeError(
        `Tensor.to: unknown dtype '${String(device)}' (expected one of ${known}) or device (available: ${availableDevices().join(", ")})`,
      );
    }
    const name = checkDevice(device, "Tensor.to");
    return callTensor("to.device", this.handle, name, scalarTypeCode[dtype ?? this.dtype], false, false);
  }
  float(): Tensor {
    return this.to("float32");
  }
  double(): Tensor {
    return this.to("float64");
  }
  long(): Tensor {
    return this.to("int64");
  }
  bool(): Tensor {
    return this.to("bool");
  }
  clone(memoryFormat?: MemoryFormat): Tensor {
    return callTensor("clone", this.handle, memoryFormat ? memoryFormatCode[memoryFormat] : undefined);
  }
  contiguous(memoryFormat: MemoryFormat = "contiguous"): Tensor {
    return callTensor("contiguous", this.handle, memoryFormatCode[memoryFormat]);
  }
  /** Same values, channels-last memory layout (NHWC strides), as oneDNN prefers for convolutions. */
  channelsLast(): Tensor {
    return this.contiguous("channelsLast");
  }

  // ---- shape ops ----

  reshape(...shape: number[] | [Shape]): Tensor {
    return callTensor("reshape", this.handle, flatShape(shape));
  }
  view(...shape: number[] | [Shape]): Tensor {
    return callTensor("view", this.handle, flatShape(shape));
  }
  /** A view of this tensor's storage with the given sizes, strides and offset (elements), as torch.as_strided. */
  asStrided(size: Shape, stride: Shape, storageOffset = 0): Tensor {
    return callTensor("as_strided", this.handle, [...size], [...stride], storageOffset);
  }
  flatten(startDim = 0, endDim = -1): Tensor {
    return callTensor("flatten.using_ints", this.handle, startDim, endDim);
  }
  permute(...dims: number[] | [Shape]): Tensor {
    return callTensor("permute", this.handle, flatShape(dims));
  }
  transpose(dim0: number, dim1: number): Tensor {
    return callTensor("transpose.int", this.handle, dim0, dim1);
  }
  /** Transpose of a matrix. */
  t(): Tensor {
    return callTensor("t", this.handle);
  }
  get T(): Tensor {
    return this.t();
  }
  squeeze(dim?: number): Tensor {
    return dim === undefined ? callTensor("squeeze", this.handle) : callTensor("squeeze.dim", this.handle, dim);
  }
  unsqueeze(dim: number): Tensor {
    return callTensor("unsqueeze", this.handle, dim);
  }
  narrow(dim: number, start: number, length: number): Tensor {
    return callTensor("narrow", this.handle, dim, start, length);
  }
  select(dim: number, index: number): Tensor {
    return callTensor("select.int", this.handle, dim, index);
  }
  slice(dim: number, start?: number, end?: number, step = 1): Tensor {
    return callTensor("slice.Tensor", this.handle, dim, start, end, step);
  }
  indexSelect(dim: number, index: Tensor): Tensor {
    return callTensor("index_select", this.handle, dim, index.handle);
  }
  /** Advanced indexing with one index tensor per leading dimension (null skips a dimension). */
  index(indices: (Tensor | null)[]): Tensor {
    return callTensor(
      "index.Tensor",
      this.handle,
      indices.map((t) => (t === null ? null : t.handle)),
    );
  }
  gather(dim: number, index: Tensor): Tensor {
    return callTensor("gather", this.handle, dim, index.handle, false);
  }
  scatter(dim: number, index: Tensor, src: TensorOrScalar): Tensor {
    return typeof src === "number"
      ? callTensor("scatter.value", this.handle, dim, index.handle, src)
      : callTensor("scatter.src", this.handle, dim, index.handle, src.handle);
  }
  /** `scatter` that sums: out[index[i][j]][j] += src[i][j] along `dim` (out starts as this). */
  scatterAdd(dim: number, index: Tensor, src: Tensor): Tensor {
    return callTensor("scatter_add", this.handle, dim, index.handle, src.handle);
  }
  /** A copy with the slices `index` along `dim` replaced by the slices of `source`. */
  indexCopy(dim: number, index: Tensor, source: Tensor): Tensor {
    return callTensor("index_copy", this.handle, dim, index.handle, source.handle);
  }
  maskedFill(mask: Tensor, value: number): Tensor {
    return callTensor("masked_fill.Scalar", this.handle, mask.handle, value);
  }
  chunk(chunks: number, dim = 0): Tensor[] {
    return callTensors("chunk", this.handle, chunks, dim);
  }
  split(splitSize: number | number[], dim = 0): Tensor[] {
    return typeof splitSize === "number"
      ? callTensors("split.Tensor", this.handle, splitSize, dim)
      : callTensors("split_with_sizes", this.handle, splitSize, dim);
  }
  expand(...shape: number[] | [Shape]): Tensor {
    return callTensor("expand", this.handle, flatShape(shape), false);
  }
  expandAs(other: Tensor): Tensor {
    return callTensor("expand_as", this.handle, other.handle);
  }
  repeat(...repeats: number[] | [Shape]): Tensor {
    return callTensor("repeat", this.handle, flatShape(repeats));
  }
  flip(dims: number[]): Tensor {
    return callTensor("flip", this.handle, dims);
  }
  roll(shifts: number | number[], dims: number | number[]): Tensor {
    return callTensor("roll", this.handle, [shifts].flat(), [dims].flat());
  }

  // ---- elementwise math ----

  add(other: TensorOrScalar, alpha = 1): Tensor {
    return typeof other === "number"
      ? callTensor("add.Scalar", this.handle, other, alpha)
      : callTensor("add.Tensor", this.handle, other.handle, alpha);
  }
  sub(other: TensorOrScalar, alpha = 1): Tensor {
    return typeof other === "number"
      ? callTensor("sub.Scalar", this.handle, other, alpha)
      : callTensor("sub.Tensor", this.handle, other.handle, alpha);
  }
  mul(other: TensorOrScalar): Tensor {
    return typeof other === "number"
      ? callTensor("mul.Scalar", this.handle, other)
      : callTensor("mul.Tensor", this.handle, other.handle);
  }
  div(other: TensorOrScalar, roundingMode?: "trunc" | "floor"): Tensor {
    if (roundingMode !== undefined) {
      return typeof other === "number"
        ? callTensor("div.Scalar_mode", this.handle, other, roundingMode)
        : callTensor("div.Tensor_mode", this.handle, other.handle, roundingMode);
    }
    return typeof other === "number"
      ? callTensor("div.Scalar", this.handle, other)
      : callTensor("div.Tensor", this.handle, other.handle);
  }
  /** `other - this` (Python's `2 - x`). */
  rsub(other: number): Tensor {
    return callTensor("rsub.Scalar", this.handle, other, 1);
  }
  remainder(other: TensorOrScalar): Tensor {
    return typeof other === "number"
      ? callTensor("remainder.Scalar", this.handle, other)
      : callTensor("remainder.Tensor", this.handle, other.handle);
  }
  /** C's fmod: the remainder with the sign of the dividend (remainder() takes the divisor's sign). */
  fmod(other: TensorOrScalar): Tensor {
    return typeof other === "number"
      ? callTensor("fmod.Scalar", this.handle, other)
      : callTensor("fmod.Tensor", this.handle, other.handle);
  }
  pow(exponent: TensorOrScalar): Tensor {
    return typeof exponent === "number"
      ? callTensor("pow.Tensor_Scalar", this.handle, exponent)
      : callTensor("pow.Tensor_Tensor", this.handle, exponent.handle);
  }
  neg(): Tensor {
    return callTensor("neg", this.handle);
  }
  abs(): Tensor {
    return callTensor("abs", this.handle);
  }
  exp(): Tensor {
    return callTensor("exp", this.handle);
  }
  log(): Tensor {
    return callTensor("log", this.handle);
  }
  log1p(): Tensor {
    return callTensor("log1p", this.handle);
  }
  sqrt(): Tensor {
    return callTensor("sqrt", this.handle);
  }
  rsqrt(): Tensor {
    return callTensor("rsqrt", this.handle);
  }
  square(): Tensor {
    return callTensor("square", this.handle);
  }
  reciprocal(): Tensor {
    return callTensor("reciprocal", this.handle);
  }
  sign(): Tensor {
    return callTensor("sign", this.handle);
  }
  floor(): Tensor {
    return callTensor("floor", this.handle);
  }
  ceil(): Tensor {
    return callTensor("ceil", this.handle);
  }
  round(): Tensor {
    return callTensor("round", this.handle);
  }
  sin(): Tensor {
    return callTensor("sin", this.handle);
  }
  cos(): Tensor {
    return callTensor("cos", this.handle);
  }
  sigmoid(): Tensor {
    return callTensor("sigmoid", this.handle);
  }
  tanh(): Tensor {
    return callTensor("tanh", this.handle);
  }
  relu(): Tensor {
    return callTensor("relu", this.handle);
  }
  clamp(min?: number, max?: number): Tensor {
    return callTensor("clamp", this.handle, min ?? null, max ?? null);
  }
  clampMin(min: number): Tensor {
    return callTensor("clamp_min", this.handle, min);
  }
  clampMax(max: number): Tensor {
    return callTensor("clamp_max", this.handle, max);
  }
  lerp(end: Tensor, weight: number): Tensor {
    return callTensor("lerp.Scalar", this.handle, end.handle, weight);
  }

  // ---- comparisons and logic ----

  eq(other: TensorOrScalar): Tensor {
    return compare("eq", this, other);
  }
  ne(other: TensorOrScalar): Tensor {
    return compare("ne", this, other);
  }
  lt(other: TensorOrScalar): Tensor {
    return compare("lt", this, other);
  }
  le(other: TensorOrScalar): Tensor {
    return compare("le", this, other);
  }
  gt(other: TensorOrScalar): Tensor {
    return compare("gt", this, other);
  }
  ge(other: TensorOrScalar): Tensor {
    return compare("ge", this, other);
  }
  logicalNot(): Tensor {
    return callTensor("logical_not", this.handle);
  }
  logicalAnd(other: Tensor): Tensor {
    return callTensor("logical_and", this.handle, other.handle);
  }
  logicalOr(other: Tensor): Tensor {
    return callTensor("logical_or", this.handle, other.handle);
  }
  isnan(): Tensor {
    return callTensor("isnan", this.handle);
  }
  isfinite(): Tensor {
    return callTensor("isfinite", this.handle);
  }
  allclose(other: Tensor, rtol = 1e-5, atol = 1e-8): boolean {
    return native.callOp(opId("allclose"), this.handle, other.handle, rtol, atol, false) as boolean;
  }
  equal(other: Tensor): boolean {
    return native.callOp(opId("equal"), this.handle, other.handle) as boolean;
  }

  // ---- reductions ----

  sum(dim?: number | number[], keepdim = false): Tensor {
    return dim === undefined
      ? callTensor("sum", this.handle)
      : callTensor("sum.dim_IntList", this.handle, [dim].flat(), keepdim);
  }
  mean(dim?: number | number[], keepdim = false): Tensor {
    return dim === undefined
      ? callTensor("mean", this.handle)
      : callTensor("mean.dim", this.handle, [dim].flat(), keepdim);
  }
  prod(): Tensor {
    return callTensor("prod", this.handle);
  }
  /** Without `dim`: the largest value. With `dim`: values and indices along it. */
  max(): Tensor;
  max(dim: number, keepdim?: boolean): { values: Tensor; indices: Tensor };
  max(dim?: number, keepdim = false): Tensor | { values: Tensor; indices: Tensor } {
    if (dim === undefined) return callTensor("max", this.handle);
    const [values, indices] = callTensors("max.dim", this.handle, dim, keepdim);
    return { values, indices };
  }
  min(): Tensor;
  min(dim: number, keepdim?: boolean): { values: Tensor; indices: Tensor };
  min(dim?: number, keepdim = false): Tensor | { values: Tensor; indices: Tensor } {
    if (dim === undefined) return callTensor("min", this.handle);
    const [values, indices] = callTensors("min.dim", this.handle, dim, keepdim);
    return { values, indices };
  }
  /** The largest values over `dim` (values only; gradient split evenly between ties, as PyTorch). */
  amax(dim: number | number[] = [], keepdim = false): Tensor {
    return callTensor("amax", this.handle, [dim].flat(), keepdim);
  }
  /** The smallest values over `dim` (values only). */
  amin(dim: number | number[] = [], keepdim = false): Tensor {
    return callTensor("amin", this.handle, [dim].flat(), keepdim);
  }
  /** Elementwise maximum with another tensor. */
  maximum(other: Tensor): Tensor {
    return callTensor("maximum", this.handle, other.handle);
  }
  minimum(other: Tensor): Tensor {
    return callTensor("minimum", this.handle, other.handle);
  }
  argmax(dim?: number, keepdim = false): Tensor {
    return callTensor("argmax", this.handle, dim ?? null, keepdim);
  }
  argmin(dim?: number, keepdim = false): Tensor {
    return callTensor("argmin", this.handle, dim ?? null, keepdim);
  }
  logsumexp(dim: number | number[], keepdim = false): Tensor {
    return callTensor("logsumexp", this.handle, [dim].flat(), keepdim);
  }
  /** Variance; `correction` 1 is the unbiased estimator (PyTorch's default), 0 the biased one. */
  var(dim?: number | number[], options: { correction?: number; keepdim?: boolean } = {}): Tensor {
    return callTensor(
      "var.correction",
      this.handle,
      dim === undefined ? null : [dim].flat(),
      options.correction ?? 1,
      options.keepdim ?? false,
    );
  }
  std(dim?: number | number[], options: { correction?: number; keepdim?: boolean } = {}): Tensor {
    return callTensor(
      "std.correction",
      this.handle,
      dim === undefined ? null : [dim].flat(),
      options.correction ?? 1,
      options.keepdim ?? false,
    );
  }
  norm(p = 2, dim?: number | number[], keepdim = false): Tensor {
    return dim === undefined
      ? callTensor("norm.Scalar", this.handle, p)
      : callTensor("norm.ScalarOpt_dim", this.handle, p, [dim].flat(), keepdim);
  }
  all(): Tensor {
    return callTensor("all", this.handle);
  }
  any(): Tensor {
    return callTensor("any", this.handle);
  }
  cumsum(dim: number): Tensor {
    return callTensor("cumsum", this.handle, dim);
  }
  topk(k: number, dim = -1, largest = true, sorted = true): { values: Tensor; indices: Tensor } {
    const [values, indices] = callTensors("topk", this.handle, k, dim, largest, sorted);
    return { values, indices };
  }
  sort(dim = -1, descending = false): { values: Tensor; indices: Tensor } {
    const [values, indices] = callTensors("sort", this.handle, dim, descending);
    return { values, indices };
  }
  softmax(dim: number): Tensor {
    return callTensor("softmax.int", this.handle, dim);
  }
  logSoftmax(dim: number): Tensor {
    return callTensor("log_softmax.int", this.handle, dim);
  }

  // ---- linear algebra ----

  matmul(other: Tensor): Tensor {
    return callTensor("matmul", this.handle, other.handle);
  }
  mm(other: Tensor): Tensor {
    return callTensor("mm", this.handle, other.handle);
  }
  bmm(other: Tensor): Tensor {
    return callTensor("bmm", this.handle, other.handle);
  }
  outer(other: Tensor): Tensor {
    return callTensor("outer", this.handle, other.handle);
  }

  // ---- in-place (used by optimizers; they mutate this tensor and return it) ----

  add_(other: TensorOrScalar, alpha = 1): this {
    if (typeof other === "number") callInPlace("add_.Scalar", this.handle, other, alpha);
    else callInPlace("add_.Tensor", this.handle, other.handle, alpha);
    return this;
  }
  sub_(other: TensorOrScalar, alpha = 1): this {
    if (typeof other === "number") callInPlace("sub_.Scalar", this.handle, other, alpha);
    else callInPlace("sub_.Tensor", this.handle, other.handle, alpha);
    return this;
  }
  mul_(other: TensorOrScalar): this {
    if (typeof other === "number") callInPlace("mul_.Scalar", this.handle, other);
    else callInPlace("mul_.Tensor", this.handle, other.handle);
    return this;
  }
  div_(other: TensorOrScalar): this {
    if (typeof other === "number") callInPlace("div_.Scalar", this.handle, other);
    else callInPlace("div_.Tensor", this.handle, other.handle);
    return this;
  }
  /** this += value * t1 * t2 */
  addcmul_(t1: Tensor, t2: Tensor, value = 1): this {
    callInPlace("addcmul_", this.handle, t1.handle, t2.handle, value);
    return this;
  }
  /** this += value * t1 / t2 */
  addcdiv_(t1: Tensor, t2: Tensor, value = 1): this {
    callInPlace("addcdiv_", this.handle, t1.handle, t2.handle, value);
    return this;
  }
  lerp_(end: Tensor, weight: number): this {
    callInPlace("lerp_.Scalar", this.handle, end.handle, weight);
    return this;
  }
  copy_(src: Tensor): this {
    callInPlace("copy_", this.handle, src.handle, false);
    return this;
  }
  fill_(value: number): this {
    callInPlace("fill_.Scalar", this.handle, value);
    return this;
  }
  zero_(): this {
    callInPlace("zero_", this.handle);
    return this;
  }
  clamp_(min?: number, max?: number): this {
    callInPlace("clamp_", this.handle, min ?? null, max ?? null);
    return this;
  }
  sqrt_(): this {
    callInPlace("sqrt_", this.handle);
    return this;
  }
  relu_(): this {
    callInPlace("relu_", this.handle);
    return this;
  }
  neg_(): this {
    callInPlace("neg_", this.handle);
    return this;
  }
  /** Fills with samples of U(from, to) (used by initialisers). */
  uniform_(from = 0, to = 1, generator?: Generator): this {
    callInPlace("uniform_", this.handle, from, to, generator?.handle ?? null);
    return this;
  }
  normal_(mean = 0, std = 1, generator?: Generator): this {
    callInPlace("normal_", this.handle, mean, std, generator?.handle ?? null);
    return this;
  }
}

export interface BackwardOptions {
  /** Keep the graph for another backward pass through it. */
  retainGraph?: boolean;
  createGraph?: boolean;
  /** Accumulate into these leaves only. */
  inputs?: Tensor[];
}

/** Backpropagates from several roots, each with its gradient (null for one-element roots). */
export function runBackward(
  tensors: readonly Tensor[],
  gradTensors: readonly (Tensor | null)[],
  options: BackwardOptions,
): void {
  try {
    native.backward(
      handles(tensors),
      gradTensors.map((g) => (g === null ? null : g.handle)),
      options.retainGraph ?? false,
      options.createGraph ?? false,
      options.inputs ? handles(options.inputs) : [],
    );
  } catch (error) {
    // libtorch names Python's argument; say what it is called here.
    if (error instanceof Error && error.message.includes("retain_graph=True")) {
      error.message += " (in loco: pass { retainGraph: true } to the first backward)";
    }
    throw error;
  }
}

function compare(name: string, a: Tensor, b: TensorOrScalar): Tensor {
  return typeof b === "number"
    ? callTensor(`${name}.Scalar`, a.handle, b)
    : callTensor(`${name}.Tensor`, a.handle, b.handle);
}

function flatShape(args: number[] | [Shape]): number[] {
  return args.length === 1 && Array.isArray(args[0]) ? [...(args[0] as Shape)] : (args as number[]);
}

export { handles };
