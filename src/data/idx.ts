// IDX files (MNIST, Fashion-MNIST), gzipped or not, validated on open.
import * as fs from "node:fs";
import * as zlib from "node:zlib";

export interface IdxArray {
  /** Dimensions from the header, e.g. [60000, 28, 28]. */
  shape: number[];
  /** The values (IDX type 0x08, unsigned bytes). */
  data: Uint8Array;
}

/** Reads an IDX file of unsigned bytes; errors name the file and what was wrong. */
export function readIdx(path: string, expectedDims?: number): IdxArray {
  let raw: Buffer;
  try {
    raw = fs.readFileSync(path);
  } catch (error) {
    throw new Error(`${path}: cannot read IDX file (${(error as Error).message})`);
  }
  let bytes: Buffer = raw;
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      bytes = zlib.gunzipSync(raw);
    } catch (error) {
      throw new Error(`${path}: gzip data is corrupt or truncated (${(error as Error).message})`);
    }
  }
  if (bytes.length < 4) throw new Error(`${path}: not an IDX file (only ${bytes.length} bytes)`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new Error(`${path}: bad IDX magic number (first two bytes must be 0, got ${bytes[0]}, ${bytes[1]})`);
  }
  const type = bytes[2];
  if (type !== 0x08)
    throw new Error(`${path}: IDX element type 0x${type.toString(16)} is not supported (expected 0x08, unsigned byte)`);
  const dims = bytes[3];
  if (dims < 1 || dims > 4) throw new Error(`${path}: IDX header declares ${dims} dimensions (expected 1 to 4)`);
  if (expectedDims !== undefined && dims !== expectedDims) {
    throw new Error(`${path}: expected a ${expectedDims}-dimensional IDX array, the header declares ${dims}`);
  }
  const headerBytes = 4 + 4 * dims;
  if (bytes.length < headerBytes) throw new Error(`${path}: truncated IDX header`);
  const shape: number[] = [];
  for (let i = 0; i < dims; i++) shape.push(bytes.readUInt32BE(4 + 4 * i));
  const count = shape.reduce((a, b) => a * b, 1);
  const available = bytes.length - headerBytes;
  if (available !== count) {
    throw new Error(
      `${path}: IDX header declares shape [${shape.join(", ")}] (${count} bytes of data) but the file holds ${available}` +
        (available < count ? " (truncated)" : " (trailing bytes)"),
    );
  }
  return { shape, data: new Uint8Array(bytes.buffer, bytes.byteOffset + headerBytes, count) };
}

/** Writes an IDX file of unsigned bytes (gzipped when the name ends in .gz); used by tests and tools. */
export function writeIdx(path: string, shape: number[], data: Uint8Array): void {
  const header = Buffer.alloc(4 + 4 * shape.length);
  header[2] = 0x08;
  header[3] = shape.length;
  shape.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  let out: Buffer = Buffer.concat([header, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
  if (path.endsWith(".gz")) out = zlib.gzipSync(out);
  fs.writeFileSync(path, out);
}
