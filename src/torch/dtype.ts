// Element types, with libtorch's c10::ScalarType codes.

export type DType = "uint8" | "int8" | "int16" | "int32" | "int64" | "float16" | "float32" | "float64" | "bool";

export const scalarTypeCode: Readonly<Record<DType, number>> = {
  uint8: 0,
  int8: 1,
  int16: 2,
  int32: 3,
  int64: 4,
  float16: 5,
  float32: 6,
  float64: 7,
  bool: 11,
};

const dtypeByCode = new Map<number, DType>(Object.entries(scalarTypeCode).map(([k, v]) => [v, k as DType]));

export function dtypeFromCode(code: number): DType {
  const name = dtypeByCode.get(code);
  if (name === undefined) throw new Error(`loco: tensor has an unsupported scalar type (code ${code})`);
  return name;
}

export function isDType(value: unknown): value is DType {
  return typeof value === "string" && Object.prototype.hasOwnProperty.call(scalarTypeCode, value);
}

export const bytesPerElement: Readonly<Record<DType, number>> = {
  uint8: 1,
  int8: 1,
  int16: 2,
  int32: 4,
  int64: 8,
  float16: 2,
  float32: 4,
  float64: 8,
  bool: 1,
};

export type TypedArray =
  Uint8Array | Int8Array | Int16Array | Int32Array | BigInt64Array | Uint16Array | Float32Array | Float64Array;

/** A typed-array view over `buffer` matching `dtype` (float16 as raw Uint16, bool as Uint8). */
export function typedArrayFor(dtype: DType, buffer: ArrayBuffer): TypedArray {
  switch (dtype) {
    case "uint8":
    case "bool":
      return new Uint8Array(buffer);
    case "int8":
      return new Int8Array(buffer);
    case "int16":
      return new Int16Array(buffer);
    case "int32":
      return new Int32Array(buffer);
    case "int64":
      return new BigInt64Array(buffer);
    case "float16":
      return new Uint16Array(buffer);
    case "float32":
      return new Float32Array(buffer);
    case "float64":
      return new Float64Array(buffer);
  }
}

/** The dtype a typed array holds by default. */
export function dtypeOfTypedArray(data: TypedArray): DType {
  if (data instanceof Float32Array) return "float32";
  if (data instanceof Float64Array) return "float64";
  if (data instanceof BigInt64Array) return "int64";
  if (data instanceof Int32Array) return "int32";
  if (data instanceof Int16Array) return "int16";
  if (data instanceof Int8Array) return "int8";
  if (data instanceof Uint16Array) return "float16";
  return "uint8";
}

export const isFloatingDType = (d: DType): boolean => d === "float16" || d === "float32" || d === "float64";

/** c10::MemoryFormat codes. */
export const memoryFormatCode = { contiguous: 0, preserve: 1, channelsLast: 2 } as const;
export type MemoryFormat = keyof typeof memoryFormatCode;
