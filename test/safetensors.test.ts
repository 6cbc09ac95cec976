// Safetensors: round trips, interchange with an independent Python implementation (test/oracle/st.py
// on PyTorch 1.13), exact byte layout, validation of malformed files, atomic saves.
import { describe, test, after, before } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  type DType,
  Generator,
  SafetensorsError,
  type Tensor,
  deserializeSafetensors,
  fromTypedArray,
  liveTensors,
  loadSafetensors,
  randn,
  readSafetensorsHeader,
  saveSafetensors,
  scope,
  serializeSafetensors,
  tensor,
  arange,
  zeros,
} from "../src/torch";
import { PYTHON, oracleAvailable, oracleScript, runOracle } from "./helpers/oracle";

let dir = "";
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "loco-st-"));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const tmp = (name: string) => path.join(dir, name);

/** One tensor of each dtype, with edge values. */
function everyDType(): Record<string, Tensor> {
  return {
    f64: tensor(
      [
        [1.5, -0, Number.MAX_VALUE],
        [Number.MIN_VALUE, -Infinity, NaN],
      ],
      { dtype: "float64" },
    ),
    f32: tensor([3.25, -1e-30, Infinity, 16777217]),
    f16: tensor([0.5, -2, 65504, 6e-8], { dtype: "float16" }),
    i64: fromTypedArray(BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n, 0n, -1n])),
    i32: tensor([-(2 ** 31), 2 ** 31 - 1, 7], { dtype: "int32" }),
    i16: tensor([-32768, 32767], { dtype: "int16" }),
    i8: tensor([-128, 127, 0], { dtype: "int8" }),
    u8: tensor([0, 255, 128], { dtype: "uint8" }),
    bool: tensor([true, false, true, true]),
    scalar: tensor(2.5),
    empty: zeros([0, 3], { dtype: "int32" }),
  };
}

function sameBits(a: Tensor, b: Tensor, name: string): void {
  assert.equal(a.dtype, b.dtype, `${name}: dtype`);
  assert.deepEqual(a.shape, b.shape, `${name}: shape`);
  const x = a.data();
  const y = b.data();
  assert.deepEqual(
    new Uint8Array(x.buffer, x.byteOffset, x.byteLength),
    new Uint8Array(y.buffer, y.byteOffset, y.byteLength),
    `${name}: bytes`,
  );
}

describe("round trips", () => {
  test("every dtype through serialize/deserialize and save/load, values bit-exact", () => {
    const start = liveTensors();
    scope(() => {
      const src = everyDType();
      const meta = { format: "pt", "note ü": "ünïcode ✓", empty: "" };
      const viaBuffer = deserializeSafetensors(serializeSafetensors(src, meta), "mem");
      saveSafetensors(tmp("all.safetensors"), new Map(Object.entries(src)), meta);
      const viaFile = loadSafetensors(tmp("all.safetensors"));
      for (const loaded of [viaBuffer, viaFile]) {
        assert.deepEqual(loaded.metadata, meta);
        assert.deepEqual([...loaded.tensors.keys()].sort(), Object.keys(src).sort());
        for (const [k, t] of Object.entries(src)) sameBits(loaded.tensors.get(k)!, t, k);
      }
      assert.deepEqual(
        fs.readFileSync(tmp("all.safetensors")),
        serializeSafetensors(src, meta),
        "file == serialized bytes",
      );
    });
    assert.equal(liveTensors(), start);
  });

  test("non-contiguous and channels-last tensors are written in row-major order", () => {
    scope(() => {
      const base = arange(0, 24, 1, { dtype: "float32" }).reshape(2, 3, 4);
      const t = base.transpose(0, 2);
      const cl = randn([2, 3, 4, 5]).channelsLast();
      const loaded = deserializeSafetensors(serializeSafetensors({ t, cl }));
      assert.deepEqual(loaded.tensors.get("t")!.tolist(), t.tolist());
      assert.ok(loaded.tensors.get("cl")!.equal(cl));
      assert.ok(loaded.tensors.get("t")!.isContiguous());
    });
  });

  test("no metadata loads as {}; tensors requiring grad save their values", () => {
    scope(() => {
      const w = randn([3]).requiresGrad_();
      const loaded = deserializeSafetensors(serializeSafetensors({ w }));
      assert.deepEqual(loaded.metadata, {});
      assert.ok(loaded.tensors.get("w")!.equal(w.detach()));
      assert.equal(loaded.tensors.get("w")!.requiresGrad, false);
      const none = deserializeSafetensors(serializeSafetensors({}));
      assert.equal(none.tensors.size, 0);
    });
  });

  test("readSafetensorsHeader returns names, dtypes, shapes and offsets without loading data", () => {
    scope(() => {
      saveSafetensors(tmp("h.safetensors"), { a: zeros([2, 2]), b: zeros([3], { dtype: "int64" }) }, { k: "v" });
      const h = readSafetensorsHeader(tmp("h.safetensors"));
      assert.deepEqual(h.metadata, { k: "v" });
      assert.deepEqual(
        h.entries.map((e) => [e.name, e.dtype, e.shape, e.begin, e.end]),
        [
          ["b", "I64", [3], 0, 24],
          ["a", "F32", [2, 2], 24, 40],
        ],
      );
      assert.equal(h.dataStart % 8, 0);
    });
  });
});

describe("byte layout", () => {
  test("a tiny file is byte-for-byte what the reference writer produces", () => {
    scope(() => {
      const bytes = serializeSafetensors({ a: tensor([1]) });
      const json = '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'; // 52 bytes
      const header = Buffer.concat([Buffer.from(json), Buffer.from("    ")]); // padded to 56
      const expected = Buffer.alloc(8 + 56 + 4);
      expected.writeBigUInt64LE(56n, 0);
      header.copy(expected, 8);
      expected.writeFloatLE(1, 64);
      assert.deepEqual(bytes, expected);
    });
  });

  test("header: length field, 8-byte alignment, space padding, reference order, contiguous aligned offsets", () => {
    scope(() => {
      const bytes = serializeSafetensors(
        {
          b: zeros([3], { dtype: "uint8" }),
          a: zeros([5], { dtype: "float16" }),
          c: zeros([2], { dtype: "int64" }),
          d: zeros([1]),
        },
        { m: "1" },
      );
      const n = Number(bytes.readBigUInt64LE(0));
      assert.equal((8 + n) % 8, 0, "data section starts 8-byte aligned");
      const text = bytes.subarray(8, 8 + n).toString("utf8");
      assert.match(text, /^\{.*\} *$/);
      assert.ok(text.length - text.trimEnd().length < 8, "fewer than 8 padding spaces");
      const header = JSON.parse(text);
      assert.deepEqual(Object.keys(header), ["__metadata__", "c", "d", "a", "b"]);
      assert.deepEqual(header.c.data_offsets, [0, 16]);
      assert.deepEqual(header.d.data_offsets, [16, 20]);
      assert.deepEqual(header.a.data_offsets, [20, 30]);
      assert.deepEqual(header.b.data_offsets, [30, 33]);
      assert.equal(bytes.length, 8 + n + 33);
    });
  });
  test("integer-like names keep the reference order in the raw header (no JS key reordering)", () => {
    scope(() => {
      const bytes = serializeSafetensors({ b: zeros([1]), "10": zeros([1]), "2": zeros([1]) }, { "1": "x", a: "y" });
      const n = Number(bytes.readBigUInt64LE(0));
      const text = bytes
        .subarray(8, 8 + n)
        .toString("utf8")
        .trimEnd();
      assert.equal(
        text,
        '{"__metadata__":{"1":"x","a":"y"},' +
          '"10":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' +
          '"2":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},' +
          '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}',
      );
      const loaded = deserializeSafetensors(bytes);
      assert.deepEqual([...loaded.tensors.keys()], ["10", "2", "b"], "loaded in data order");
    });
  });
});

describe(
  "interchange with PyTorch (test/oracle/st.py, an independent implementation)",
  { skip: !oracleAvailable() && "no PyTorch" },
  () => {
    test("a file written by PyTorch loads in loco with identical values", () => {
      scope(() => {
        const file = tmp("from_torch.safetensors");
        const r = spawnSync(PYTHON, [oracleScript("st.py"), "write", file], { encoding: "utf8" });
        assert.equal(r.status, 0, r.stderr);
        const { tensors, metadata } = loadSafetensors(file);
        assert.deepEqual(metadata, { format: "pt", written_by: "st.py" });
        // Header order is preserved (st.py writes in insertion order, with unaligned offsets).
        assert.deepEqual(
          [...tensors.keys()],
          ["z.f32", "a.f64", "m.f16", "i64", "i32", "i16", "i8", "u8", "bool", "scalar", "empty"],
        );
        // Same libtorch generator: loco's Generator(0) reproduces torch.Generator().manual_seed(0).
        const g = new Generator(0);
        sameBits(tensors.get("z.f32")!, randn([2, 3], { generator: g }), "z.f32");
        sameBits(tensors.get("a.f64")!, randn([5], { generator: g, dtype: "float64" }), "a.f64");
        sameBits(tensors.get("m.f16")!, randn([3, 1], { generator: g }).to("float16"), "m.f16");
        assert.deepEqual(tensors.get("i64")!.toArray(), [-3, -2, -1, 0, 1, 2, 3]);
        assert.deepEqual(tensors.get("i32")!.tolist(), [
          [1, -2],
          [3, 2 ** 31 - 1],
        ]);
        assert.deepEqual(tensors.get("i16")!.toArray(), [-32768, 32767]);
        assert.deepEqual(tensors.get("i8")!.toArray(), [-128, 0, 127]);
        assert.deepEqual(tensors.get("u8")!.toArray(), [0, 255, 7]);
        assert.equal(tensors.get("bool")!.dtype, "bool");
        assert.deepEqual(tensors.get("bool")!.toArray(), [1, 0, 1]);
        assert.deepEqual(tensors.get("scalar")!.shape, []);
        assert.equal(tensors.get("scalar")!.item(), 2.5);
        assert.deepEqual(tensors.get("empty")!.shape, [0, 4]);
      });
    });

    test("a file written by loco loads in PyTorch: values and byte layout", () => {
      scope(() => {
        const src = everyDType();
        const meta = { format: "pt", source: "loco" };
        const out = runOracle(oracleScript("st_echo.py"), src, [], { metadata: meta });
        const layout = JSON.parse(Buffer.from(out.__layout__.data() as Uint8Array).toString("utf8"));
        assert.equal(layout.data_start_aligned, true);
        assert.equal(layout.header_len % 8, 0);
        assert.ok(layout.padding < 8);
        assert.equal(layout.header_len, layout.json_len + layout.padding);
        assert.deepEqual(layout.metadata, meta);
        assert.equal(layout.keys[0], "__metadata__");
        // Offsets tile the data section in header order and each tensor is aligned to its item size.
        let offset = 0;
        const itemSize: Record<string, number> = {
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
        for (const key of layout.keys.slice(1)) {
          const e = layout.entries[key];
          assert.equal(e.data_offsets[0], offset, `${key} starts where the previous ended`);
          assert.equal(e.data_offsets[0] % itemSize[e.dtype], 0, `${key} aligned`);
          offset = e.data_offsets[1];
        }
        assert.equal(layout.file_len, 8 + layout.header_len + offset);
        for (const [k, t] of Object.entries(src)) sameBits(out[k], t, `${k} (echoed by PyTorch)`);
      });
    });
  },
);

// ---- malformed files ----------------------------------------------------------------------------

function craft(header: unknown, data: Uint8Array | number = 0, lengthOverride?: bigint): Buffer {
  const json =
    header instanceof Uint8Array
      ? Buffer.from(header)
      : Buffer.from(typeof header === "string" ? header : JSON.stringify(header), "utf8");
  const body = typeof data === "number" ? Buffer.alloc(data) : Buffer.from(data);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  return Buffer.concat([prefix, json, body]);
}

const f32 = (shape: number[], begin: number, end: number) => ({ dtype: "F32", shape, data_offsets: [begin, end] });

const malformed: [string, Buffer, RegExp, string?][] = [
  ["empty file", Buffer.alloc(0), /holds 0 bytes, fewer than the 8-byte header length field/],
  ["truncated length field", Buffer.from([1, 0, 0]), /holds 3 bytes, fewer than the 8-byte/],
  [
    "header length larger than the file",
    craft({ a: f32([1], 0, 4) }, 4, 1000n),
    /header length field says 1000 bytes but only \d+ follow/,
  ],
  ["header length 2^64-1", craft({}, 0, 2n ** 64n - 1n), /header length field says 18446744073709551615 bytes/],
  ["header not JSON", craft("{not json", 0), /header is not valid JSON/],
  ["header a JSON array", craft("[1,2]", 0), /header must be a JSON object.*got an array/],
  ["header JSON null", craft("null", 0), /header must be a JSON object.*got null/],
  ["header not UTF-8", craft(Buffer.from('{"\xff":1}', "latin1"), 0), /the header is not valid UTF-8/],
  [
    "unknown dtype",
    craft({ w: { dtype: "BF16", shape: [2], data_offsets: [0, 4] } }, 4),
    /unknown dtype the string "BF16".*F64, F32/,
    "w",
  ],
  ["dtype missing", craft({ w: { shape: [2], data_offsets: [0, 8] } }, 8), /unknown dtype undefined/, "w"],
  [
    "entry not an object",
    craft({ w: 5 }, 0),
    /expected an object with dtype, shape and data_offsets, got number 5/,
    "w",
  ],
  [
    "negative shape",
    craft({ w: f32([-1], 0, 4) }, 4),
    /shape must be an array of non-negative integers, got \[-1\]/,
    "w",
  ],
  ["fractional shape", craft({ w: f32([1.5], 0, 4) }, 4), /shape must be an array of non-negative integers/, "w"],
  [
    "shape not an array",
    craft({ w: { dtype: "F32", shape: 4, data_offsets: [0, 16] } }, 16),
    /shape must be an array/,
    "w",
  ],
  ["offsets begin > end", craft({ w: f32([1], 4, 0) }, 4), /data_offsets must be \[begin, end\].*got \[4,0\]/, "w"],
  [
    "offsets of wrong length",
    craft({ w: { dtype: "F32", shape: [1], data_offsets: [0] } }, 4),
    /data_offsets must be \[begin, end\]/,
    "w",
  ],
  [
    "offsets not integers",
    craft({ w: { dtype: "F32", shape: [1], data_offsets: ["0", "4"] } }, 4),
    /data_offsets must be/,
    "w",
  ],
  [
    "end beyond the data section",
    craft({ w: f32([2], 0, 8) }, 4),
    /\[0, 8\] run past the end of the data section \(4 bytes/,
    "w",
  ],
  ["wrong byte count", craft({ w: f32([3], 0, 8) }, 8), /span 8 bytes but F32 with shape \[3\] needs 12/, "w"],
  ["absurd shape", craft({ w: f32([1e15, 1e15], 0, 8) }, 8), /needs more than 9007199254740991/, "w"],
  [
    "overlapping offsets",
    craft({ a: f32([2], 0, 8), b: f32([2], 4, 12) }, 12),
    /\[4, 12\] overlap those of 'a' \[0, 8\]/,
    "b",
  ],
  ["hole between tensors", craft({ a: f32([1], 0, 4), b: f32([1], 8, 12) }, 12), /leave bytes 4\.\.8 .* unused/, "b"],
  ["data not starting at 0", craft({ a: f32([1], 4, 8) }, 8), /leave bytes 0\.\.4/, "a"],
  ["trailing bytes", craft({ a: f32([1], 0, 4) }, 9), /cover 4 bytes but the data section holds 9/],
  [
    "metadata value not a string",
    craft({ __metadata__: { epoch: 3 } }, 0),
    /'__metadata__' value for 'epoch' must be a string, got number 3/,
  ],
  ["metadata not an object", craft({ __metadata__: "x" }, 0), /'__metadata__' must be an object of strings/],
  [
    "BOOL byte not 0/1",
    craft({ m: { dtype: "BOOL", shape: [2], data_offsets: [0, 2] } }, Uint8Array.from([1, 2])),
    /BOOL data holds the byte 2/,
    "m",
  ],
];

describe("malformed files give clear errors naming the file and tensor", () => {
  for (const [label, bytes, pattern, tensorName] of malformed) {
    test(label, () => {
      const start = liveTensors();
      const file = tmp(`bad-${label.replace(/\W+/g, "_")}.safetensors`);
      fs.writeFileSync(file, bytes);
      for (const [source, load] of [
        [file, () => loadSafetensors(file)],
        ["bytes.st", () => deserializeSafetensors(bytes, "bytes.st")],
      ] as const) {
        assert.throws(load, (e: unknown) => {
          assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${String(e)}`);
          assert.ok(e.message.startsWith(`safetensors: ${source}: `), `message names the source: ${e.message}`);
          assert.match(e.message, pattern);
          if (tensorName !== undefined) {
            assert.equal(e.tensor, tensorName);
            assert.ok(e.message.includes(`tensor '${tensorName}'`), e.message);
          }
          return true;
        });
      }
      assert.equal(liveTensors(), start, "a failed load leaves no tensors behind");
    });
  }

  test("a missing file reports the path", () => {
    assert.throws(() => loadSafetensors(tmp("nope.safetensors")), /ENOENT.*nope\.safetensors/);
  });

  test("a directory is not a safetensors file", () => {
    assert.throws(() => loadSafetensors(dir), /not a regular file|EISDIR/);
  });

  test("fuzz: truncations and random byte flips load or throw, never crash", () => {
    const start = liveTensors();
    const good = scope(() =>
      serializeSafetensors(
        { a: tensor([1, 2, 3]), b: tensor([true, false]), c: tensor([[1, 2]], { dtype: "int64" }) },
        { k: "v" },
      ),
    );
    let seed = 12345;
    const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    let errors = 0;
    let loads = 0;
    const attempt = (bytes: Buffer) => {
      try {
        const r = deserializeSafetensors(bytes, "fuzz");
        for (const t of r.tensors.values()) t.dispose();
        loads++;
      } catch (e) {
        assert.ok(e instanceof SafetensorsError, `unexpected error type: ${String(e)}`);
        errors++;
      }
    };
    for (let len = 0; len < good.length; len++) attempt(good.subarray(0, len));
    for (let i = 0; i < 1500; i++) {
      const bytes = Buffer.from(good);
      const flips = 1 + Math.floor(rnd() * 3);
      for (let f = 0; f < flips; f++) {
        const at = rnd() < 0.5 ? Math.floor(rnd() * Math.min(bytes.length, 8 + 120)) : Math.floor(rnd() * bytes.length);
        bytes[at] = Math.floor(rnd() * 256);
      }
      attempt(bytes);
    }
    assert.ok(errors > 0 && loads > 0, `exercised both outcomes (errors ${errors}, loads ${loads})`);
    assert.equal(liveTensors(), start);
  });
});

describe("saving", () => {
  test("atomic save leaves no temporary file behind and replaces an existing file", () => {
    const sub = fs.mkdtempSync(path.join(dir, "atomic-"));
    const file = path.join(sub, "model.safetensors");
    scope(() => {
      saveSafetensors(file, { w: tensor([1, 2]) });
      saveSafetensors(file, { w: tensor([3, 4, 5]) }, { v: "2" });
    });
    assert.deepEqual(fs.readdirSync(sub), ["model.safetensors"]);
    scope(() => {
      const r = loadSafetensors(file);
      assert.deepEqual(r.tensors.get("w")!.toArray(), [3, 4, 5]);
      assert.deepEqual(r.metadata, { v: "2" });
    });
  });

  test("a save that fails at the rename removes its temporary file and keeps the old target", () => {
    const sub = fs.mkdtempSync(path.join(dir, "failing-"));
    const target = path.join(sub, "taken");
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, "occupant"), "x");
    scope(() => {
      assert.throws(() => saveSafetensors(target, { w: tensor([1]) }), /E(ISDIR|NOTEMPTY|EXIST)/);
    });
    assert.deepEqual(fs.readdirSync(sub), ["taken"]);
  });

  test("invalid requests are rejected before anything is written", () => {
    const sub = fs.mkdtempSync(path.join(dir, "invalid-"));
    const file = path.join(sub, "x.safetensors");
    scope(() => {
      const disposed = tensor([1]);
      disposed.dispose();
      const cases: [() => void, RegExp][] = [
        [() => saveSafetensors(file, { __metadata__: tensor([1]) }), /'__metadata__' is reserved/],
        [
          () => saveSafetensors(file, { w: tensor([1]) }, { n: 3 as unknown as string }),
          /metadata value for 'n' must be a string, got number 3/,
        ],
        [
          () => saveSafetensors(file, { w: [1, 2] as unknown as Tensor }),
          /tensor 'w': expected a Tensor, got an array/,
        ],
        [() => saveSafetensors(file, { w: disposed }), /tensor 'w': the tensor was disposed/],
        [() => saveSafetensors(path.join(sub, "missing-dir", "x.safetensors"), { w: tensor([1]) }), /ENOENT/],
      ];
      for (const [fn, pattern] of cases) assert.throws(fn, pattern);
    });
    assert.deepEqual(fs.readdirSync(sub), []);
  });

  test("names are arbitrary UTF-8 strings (dots, unicode, __proto__)", () => {
    scope(() => {
      const names = ["layer1.0.conv1.weight", "ü✓", "__proto__", "", 'q"uote\\'];
      const src = new Map(names.map((n, i) => [n, tensor([i])]));
      const { tensors } = deserializeSafetensors(serializeSafetensors(src, { __proto__x: "1" }));
      assert.deepEqual([...tensors.keys()].sort(), [...names].sort());
      for (const [n, t] of src) assert.ok(tensors.get(n)!.equal(t), n);
    });
  });

  test("all dtypes are covered", () => {
    const all: DType[] = ["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "bool"];
    scope(() => assert.deepEqual(new Set(Object.values(everyDType()).map((t) => t.dtype)), new Set(all)));
  });
});
