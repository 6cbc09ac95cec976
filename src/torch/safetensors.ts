// Safetensors I/O: the file format PyTorch users exchange weights in
// (https://github.com/huggingface/safetensors, "Format" section).
//
//   [8 bytes]  N, a little-endian unsigned 64-bit integer
//   [N bytes]  a UTF-8 JSON object:
//                {"__metadata__": {"key": "value", ...},           (optional, string values only)
//                 "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//              padded with spaces so that the data section starts at a multiple of 8
//   [rest]     the data section: each tensor's values, row-major, little-endian, at
//              [begin, end) relative to the start of the data section
//
// The data section must be covered exactly, without holes or overlaps. The writer follows the
// reference implementation's layout (header key order = data order, tensors sorted by dtype
// alignment, largest first, then by name; header padded with spaces), so every tensor's data is
// aligned to its element size and a loco file is byte-identical to `safetensors.torch.save_file`
// for the same tensors and metadata.
//
// Loading validates everything before trusting it and reports problems as SafetensorsError, whose
// message names the file (and the tensor) and what was expected. No input can crash the process.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { native } from "./native";
import { type DType, scalarTypeCode } from "./dtype";
import { Tensor } from "./tensor";

/** The element types loco reads and writes, by their safetensors names. */
export type SafetensorsDType = "F64" | "F32" | "F16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const fromSafetensorsDType: Readonly<Record<SafetensorsDType, DType>> = {
  F64: "float64",
  F32: "float32",
  F16: "float16",
  I64: "int64",
  I32: "int32",
  I16: "int16",
  I8: "int8",
  U8: "uint8",
  BOOL: "bool",
};

const toSafetensorsDType: Readonly<Record<DType, SafetensorsDType>> = {
  float64: "F64",
  float32: "F32",
  float16: "F16",
  int64: "I64",
  int32: "I32",
  int16: "I16",
  int8: "I8",
  uint8: "U8",
  bool: "BOOL",
};

const itemSize: Readonly<Record<SafetensorsDType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

// The reference writer orders tensors by its Dtype enum, descending, then by name. This is that
// enum's order (restricted to the dtypes above): larger alignment sorts later, so comes first.
const referenceRank: Readonly<Record<SafetensorsDType, number>> = {
  BOOL: 0,
  U8: 1,
  I8: 2,
  I16: 3,
  F16: 4,
  I32: 5,
  F32: 6,
  F64: 7,
  I64: 8,
};

const SUPPORTED = Object.keys(fromSafetensorsDType).join(", ");
const METADATA_KEY = "__metadata__";
/** The reference implementation refuses headers larger than this (a guard against hostile files). */
const MAX_HEADER_BYTES = 100_000_000;

/** A malformed or unreadable safetensors file (or an invalid request to write one). */
export class SafetensorsError extends Error {
  /** The file (or the name given to deserializeSafetensors). */
  readonly source: string;
  /** The tensor the problem concerns, when there is one. */
  readonly tensor?: string;

  constructor(source: string, problem: string, tensor?: string) {
    super(`safetensors: ${source}: ${tensor === undefined ? "" : `tensor '${tensor}': `}${problem}`);
    this.name = "SafetensorsError";
    this.source = source;
    this.tensor = tensor;
  }
}

export type TensorDict = Map<string, Tensor> | Record<string, Tensor>;

export interface SafetensorsContents {
  /** The tensors, in the order their data lies in the file (the header's order for files written
   * by loco or the reference writer). */
  tensors: Map<string, Tensor>;
  /** The `__metadata__` table ({} when the file has none). */
  metadata: Record<string, string>;
}

/** One validated header entry. */
export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Byte range relative to the start of the data section. */
  begin: number;
  end: number;
}

/** A validated header: entries in data order, metadata, and where the data section lies. */
export interface SafetensorsHeader {
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
  /** Offset of the data section from the start of the file (8 + N). */
  dataStart: number;
}

function assertLittleEndian(): void {
  if (os.endianness() !== "LE") throw new Error("safetensors: loco supports little-endian hosts only");
}

// ---- writing ------------------------------------------------------------------------------------

interface PlannedTensor {
  name: string;
  tensor: Tensor;
  dtype: SafetensorsDType;
  shape: number[];
  bytes: number;
}

interface WritePlan {
  /** The 8-byte length prefix followed by the padded header. */
  head: Buffer;
  tensors: PlannedTensor[];
  dataBytes: number;
}

function entriesOf(tensors: TensorDict): [string, Tensor][] {
  if (tensors instanceof Map) return [...tensors.entries()];
  if (typeof tensors !== "object" || tensors === null) {
    throw new TypeError("safetensors: expected a Map<string, Tensor> or a Record<string, Tensor> of tensors");
  }
  return Object.entries(tensors);
}

function compareBytes(a: string, b: string): number {
  // The reference writer compares names as Rust strings (UTF-8 bytes).
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

function planWrite(source: string, tensors: TensorDict, metadata?: Record<string, string> | null): WritePlan {
  assertLittleEndian();
  const planned: PlannedTensor[] = [];
  const seen = new Set<string>();
  for (const [name, tensor] of entriesOf(tensors)) {
    if (typeof name !== "string") {
      throw new SafetensorsError(source, `tensor names must be strings, got ${typeof name}`);
    }
    if (name === METADATA_KEY) {
      throw new SafetensorsError(source, `'${METADATA_KEY}' is reserved and cannot name a tensor`);
    }
    if (seen.has(name)) throw new SafetensorsError(source, "the name occurs twice", name);
    seen.add(name);
    if (!(tensor instanceof Tensor)) {
      throw new SafetensorsError(source, `expected a Tensor, got ${describe(tensor)}`, name);
    }
    if (tensor.isDisposed) throw new SafetensorsError(source, "the tensor was disposed before it could be saved", name);
    const dtype = toSafetensorsDType[tensor.dtype];
    const shape = tensor.shape;
    planned.push({ name, tensor, dtype, shape, bytes: tensor.numel() * itemSize[dtype] });
  }
  planned.sort((a, b) => referenceRank[b.dtype] - referenceRank[a.dtype] || compareBytes(a.name, b.name));

  // The JSON is assembled entry by entry: a JS object would reorder integer-like names ("0", "1")
  // ahead of the others, and the order must be __metadata__ first, then the data order.
  const fields: string[] = [];
  if (metadata !== undefined && metadata !== null) {
    if (typeof metadata !== "object" || Array.isArray(metadata)) {
      throw new SafetensorsError(source, `metadata must be an object of strings, got ${describe(metadata)}`);
    }
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw new SafetensorsError(source, `metadata value for '${k}' must be a string, got ${describe(v)}`);
      }
    }
    fields.push(
      `${JSON.stringify(METADATA_KEY)}:{${Object.entries(metadata)
        .map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`)
        .join(",")}}`,
    );
  }
  let offset = 0;
  for (const t of planned) {
    const info = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes] };
    fields.push(`${JSON.stringify(t.name)}:${JSON.stringify(info)}`);
    offset += t.bytes;
  }
  const json = Buffer.from(`{${fields.join(",")}}`, "utf8");
  const padded = Math.ceil(json.length / 8) * 8;
  const head = Buffer.alloc(8 + padded, 0x20);
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);
  return { head, tensors: planned, dataBytes: offset };
}

function tensorBytes(t: PlannedTensor): Uint8Array {
  const data = t.tensor.data();
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (bytes.byteLength !== t.bytes) {
    throw new Error(`safetensors: tensor '${t.name}' produced ${bytes.byteLength} bytes, expected ${t.bytes}`);
  }
  return bytes;
}

/** The bytes of a safetensors file holding `tensors` (and the optional string-to-string metadata). */
export function serializeSafetensors(tensors: TensorDict, metadata?: Record<string, string> | null): Buffer {
  const plan = planWrite("<buffer>", tensors, metadata);
  const out = Buffer.allocUnsafe(plan.head.length + plan.dataBytes);
  plan.head.copy(out, 0);
  let offset = plan.head.length;
  for (const t of plan.tensors) {
    out.set(tensorBytes(t), offset);
    offset += t.bytes;
  }
  return out;
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) done += fs.writeSync(fd, bytes, done, bytes.byteLength - done);
}

/**
 * Writes `tensors` to `file` atomically: the data goes to a temporary file in the same directory,
 * which is flushed to disk and then renamed over `file`, so readers see the old file or the
 * complete new one, never a partial write.
 */
export function saveSafetensors(file: string, tensors: TensorDict, metadata?: Record<string, string> | null): void {
  const plan = planWrite(file, tensors, metadata);
  const dir = path.dirname(path.resolve(file));
  const temp = path.join(dir, `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(6).toString("hex")}.tmp`);
  let fd: number | null = null;
  try {
    fd = fs.openSync(temp, "wx", 0o644);
    writeAll(fd, plan.head);
    for (const t of plan.tensors) writeAll(fd, tensorBytes(t));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(temp, file);
  } catch (error) {
    if (fd !== null) {
      try {
        fs.closeSync(fd);
      } catch {
        // already failing; the original error is the one to report
      }
    }
    fs.rmSync(temp, { force: true });
    throw error;
  }
  // Make the rename itself durable (best effort: not every platform can fsync a directory).
  try {
    const dirFd = fs.openSync(dir, "r");
    try {
      fs.fsyncSync(dirFd);
    } finally {
      fs.closeSync(dirFd);
    }
  } catch {
    // ignore
  }
}

// ---- reading ------------------------------------------------------------------------------------

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (value instanceof Tensor) return "a Tensor";
  if (typeof value === "string")
    return `the string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value)}`;
  if (typeof value === "number" || typeof value === "boolean") return `${typeof value} ${String(value)}`;
  return typeof value === "object" ? "an object" : typeof value;
}

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/**
 * Parses and validates a header (the N bytes after the length prefix) against a data section of
 * `dataLength` bytes. Throws SafetensorsError naming `source` on any problem.
 */
export function parseSafetensorsHeader(headerBytes: Uint8Array, dataLength: number, source: string): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(source, "the header is not valid UTF-8");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new SafetensorsError(source, `the header is not valid JSON (${(error as Error).message})`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new SafetensorsError(source, `the header must be a JSON object of tensor entries, got ${describe(parsed)}`);
  }

  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, info] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      if (info === null) continue;
      if (typeof info !== "object" || Array.isArray(info)) {
        throw new SafetensorsError(source, `'${METADATA_KEY}' must be an object of strings, got ${describe(info)}`);
      }
      for (const [k, v] of Object.entries(info as Record<string, unknown>)) {
        if (typeof v !== "string") {
          throw new SafetensorsError(source, `'${METADATA_KEY}' value for '${k}' must be a string, got ${describe(v)}`);
        }
        Object.defineProperty(metadata, k, { value: v, enumerable: true, writable: true, configurable: true });
      }
      continue;
    }
    if (typeof info !== "object" || info === null || Array.isArray(info)) {
      throw new SafetensorsError(
        source,
        `expected an object with dtype, shape and data_offsets, got ${describe(info)}`,
        name,
      );
    }
    const { dtype, shape, data_offsets: offsets } = info as Record<string, unknown>;
    if (typeof dtype !== "string" || !Object.prototype.hasOwnProperty.call(fromSafetensorsDType, dtype)) {
      throw new SafetensorsError(source, `unknown dtype ${describe(dtype)} (loco reads ${SUPPORTED})`, name);
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw new SafetensorsError(
        source,
        `shape must be an array of non-negative integers, got ${JSON.stringify(shape) ?? "nothing"}`,
        name,
      );
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
      throw new SafetensorsError(
        source,
        `data_offsets must be [begin, end] with integers 0 <= begin <= end, got ${JSON.stringify(offsets) ?? "nothing"}`,
        name,
      );
    }
    const [begin, end] = offsets as number[];
    if (end > dataLength) {
      throw new SafetensorsError(
        source,
        `data_offsets [${begin}, ${end}] run past the end of the data section (${dataLength} bytes; the file may be truncated)`,
        name,
      );
    }
    const st = dtype as SafetensorsDType;
    // numel * itemsize, exact while it stays a safe integer (absurd shapes stop early).
    const span = end - begin;
    let bytes = shape.includes(0) ? 0 : itemSize[st];
    if (bytes > 0) for (const d of shape as number[]) if ((bytes *= d) > Number.MAX_SAFE_INTEGER) break;
    if (bytes !== span) {
      const want = bytes <= Number.MAX_SAFE_INTEGER ? String(bytes) : `more than ${Number.MAX_SAFE_INTEGER}`;
      throw new SafetensorsError(
        source,
        `data_offsets [${begin}, ${end}] span ${span} bytes but ${st} with shape [${shape.join(", ")}] needs ${want}`,
        name,
      );
    }
    entries.push({ name, dtype: st, shape: [...(shape as number[])], begin, end });
  }

  // The entries must tile the data section: sorted by offset, each starts where the last ended.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let previous: SafetensorsEntry | null = null;
  for (const e of sorted) {
    if (e.begin < covered) {
      throw new SafetensorsError(
        source,
        `data_offsets [${e.begin}, ${e.end}] overlap those of '${previous?.name}' [${previous?.begin}, ${previous?.end}]`,
        e.name,
      );
    }
    if (e.begin > covered) {
      throw new SafetensorsError(
        source,
        `data_offsets [${e.begin}, ${e.end}] leave bytes ${covered}..${e.begin} of the data section unused (offsets must be contiguous)`,
        e.name,
      );
    }
    covered = e.end;
    previous = e;
  }
  if (covered !== dataLength) {
    throw new SafetensorsError(
      source,
      `the tensors cover ${covered} bytes but the data section holds ${dataLength} (trailing bytes not described by the header)`,
    );
  }
  return { entries: sorted, metadata, dataStart: 8 + headerBytes.byteLength };
}

function readPrefix(prefix: Uint8Array, fileLength: number, source: string): number {
  if (fileLength < 8) {
    throw new SafetensorsError(source, `the file holds ${fileLength} bytes, fewer than the 8-byte header length field`);
  }
  const n = Buffer.from(prefix.buffer, prefix.byteOffset, 8).readBigUInt64LE(0);
  if (n > BigInt(fileLength - 8)) {
    throw new SafetensorsError(source, `the header length field says ${n} bytes but only ${fileLength - 8} follow it`);
  }
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      source,
      `the header length field says ${n} bytes, above the format's limit of ${MAX_HEADER_BYTES}`,
    );
  }
  return Number(n);
}

function makeTensor(entry: SafetensorsEntry, bytes: Uint8Array, source: string): Tensor {
  if (entry.dtype === "BOOL") {
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] > 1) {
        throw new SafetensorsError(
          source,
          `BOOL data holds the byte ${bytes[i]} at element ${i} (expected 0 or 1)`,
          entry.name,
        );
      }
    }
  }
  return new Tensor(native.fromBuffer(bytes, entry.shape, scalarTypeCode[fromSafetensorsDType[entry.dtype]]));
}

function buildAll(
  header: SafetensorsHeader,
  source: string,
  bytesOf: (e: SafetensorsEntry) => Uint8Array,
): SafetensorsContents {
  const tensors = new Map<string, Tensor>();
  try {
    for (const e of header.entries) tensors.set(e.name, makeTensor(e, bytesOf(e), source));
  } catch (error) {
    for (const t of tensors.values()) t.dispose();
    throw error;
  }
  return { tensors, metadata: header.metadata };
}

/** Reads tensors and metadata from the bytes of a safetensors file; `sourceName` appears in errors. */
export function deserializeSafetensors(buffer: Uint8Array, sourceName = "<buffer>"): SafetensorsContents {
  assertLittleEndian();
  if (!(buffer instanceof Uint8Array)) throw new TypeError("deserializeSafetensors: expected a Buffer or Uint8Array");
  const n = readPrefix(buffer, buffer.byteLength, sourceName);
  const header = parseSafetensorsHeader(buffer.subarray(8, 8 + n), buffer.byteLength - 8 - n, sourceName);
  const data = buffer.subarray(header.dataStart);
  return buildAll(header, sourceName, (e) => data.subarray(e.begin, e.end));
}

function readExactly(fd: number, length: number, position: number, source: string): Buffer {
  const out = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const got = fs.readSync(fd, out, done, length - done, position + done);
    if (got === 0) throw new SafetensorsError(source, `the file ended early (it changed while being read?)`);
    done += got;
  }
  return out;
}

/** Reads only the validated header of a file (names, dtypes, shapes, offsets, metadata). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  return withFile(file, (fd, size) => readHeader(fd, size, file));
}

function readHeader(fd: number, size: number, file: string): SafetensorsHeader {
  const prefix = size >= 8 ? readExactly(fd, 8, 0, file) : Buffer.alloc(0);
  const n = readPrefix(prefix, size, file);
  return parseSafetensorsHeader(readExactly(fd, n, 8, file), size - 8 - n, file);
}

function withFile<T>(file: string, fn: (fd: number, size: number) => T): T {
  assertLittleEndian();
  const fd = fs.openSync(file, "r");
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new SafetensorsError(file, "not a regular file");
    return fn(fd, stat.size);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Loads every tensor of a safetensors file (one tensor's bytes in JS memory at a time).
 * Tensors belong to the current scope, like any new tensor.
 */
export function loadSafetensors(file: string): SafetensorsContents {
  return withFile(file, (fd, size) => {
    const header = readHeader(fd, size, file);
    return buildAll(header, file, (e) => readExactly(fd, e.end - e.begin, header.dataStart + e.begin, file));
  });
}
