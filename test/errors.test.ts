// Bad calls raise JS Errors with useful messages (libtorch's text plus the operator's name) and
// never crash the process.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import {
  F,
  Generator,
  callTensor,
  cat,
  isGradEnabled,
  liveTensors,
  noGrad,
  ones,
  randn,
  scope,
  setNumThreads,
  tensor,
  zeros,
  empty,
} from "../src/torch";
import { native } from "../src/torch/native";
import { opId } from "../src/torch/tensor";

/** Asserts fn throws an instance of `type` whose message matches every pattern. */
function throwsWith(fn: () => unknown, patterns: (RegExp | string)[], type: ErrorConstructor = Error): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof type, `expected ${type.name}, got ${String(e)}`);
    for (const p of patterns) {
      if (typeof p === "string")
        assert.ok((e as Error).message.includes(p), `'${(e as Error).message}' should contain '${p}'`);
      else assert.match((e as Error).message, p);
    }
    return true;
  });
}

const int64 = (v: number[] | number[][]) => tensor(v, { dtype: "int64" });

describe("shape mismatches carry libtorch's text and the operator name", () => {
  test("add", () => {
    scope(() =>
      throwsWith(
        () => randn([2, 3]).add(randn([4, 5])),
        [
          /^aten::add\.Tensor: /,
          "The size of tensor a (3) must match the size of tensor b (5) at non-singleton dimension 1",
        ],
      ),
    );
  });
  test("matmul, conv2d channels, reshape, view, batch_norm stats, pooling", () => {
    scope(() => {
      throwsWith(
        () => randn([2, 3]).matmul(randn([4, 5])),
        ["aten::matmul: ", "mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"],
      );
      throwsWith(
        () => F.conv2d(randn([1, 4, 5, 5]), randn([2, 3, 3, 3])),
        ["aten::conv2d: ", "expected input[1, 4, 5, 5] to have 3 channels"],
      );
      throwsWith(() => randn([2, 3]).reshape(7), ["aten::reshape: ", "shape '[7]' is invalid for input of size 6"]);
      throwsWith(() => randn([2, 3]).t().view(6), ["aten::view: ", "Use .reshape(...) instead"]);
      throwsWith(
        () => F.batchNorm(randn([2, 3, 4, 4]), zeros([5]), ones([5]), { training: true }),
        ["aten::batch_norm: ", "running_mean should contain 3 elements not 5"],
      );
      throwsWith(() => F.maxPool2d(randn([1, 1, 2, 2]), 5), ["aten::max_pool2d: ", "Output size is too small"]);
      throwsWith(
        () => F.crossEntropy(randn([4, 5]), int64([1, 2, 3])),
        ["aten::cross_entropy_loss: ", "Expected input batch_size (4) to match target batch_size (3)"],
      );
      throwsWith(() => cat([randn([2, 3]), randn([2, 4])]), ["aten::cat: ", "Sizes of tensors must match"]);
    });
  });
  test("out-of-range indices are checked, not read out of bounds", () => {
    scope(() => {
      throwsWith(() => randn([2, 3]).select(0, 10), ["aten::select.int: ", "index 10 out of range"]);
      throwsWith(
        () => randn([2, 3]).gather(1, int64([[5]])),
        ["aten::gather: ", "index 5 is out of bounds for dimension 1 with size 3"],
      );
      throwsWith(() => randn([2, 3]).indexSelect(0, int64([100])), ["aten::index_select: ", "index out of range"]);
      throwsWith(() => randn([2, 3]).index([int64([-7])]), ["aten::index.Tensor: ", "index -7 is out of bounds"]);
      throwsWith(
        () => zeros([2, 3]).scatter(1, int64([[9]]), 1),
        ["aten::scatter.value: ", "index 9 is out of bounds"],
      );
      throwsWith(
        () => F.crossEntropy(randn([4, 5]), int64([1, 2, 3, 9])),
        ["aten::cross_entropy_loss: ", "Target 9 is out of bounds"],
      );
    });
  });
});

describe("wrong dtypes", () => {
  test("cross_entropy with float or int32 class targets", () => {
    scope(() => {
      throwsWith(
        () => F.crossEntropy(randn([4, 5]), randn([4])),
        ["aten::cross_entropy_loss: ", "expected scalar type Long but found Float"],
      );
      throwsWith(
        () => F.crossEntropy(randn([4, 5]), tensor([1, 2, 3, 0], { dtype: "int32" })),
        ["expected scalar type Long but found Int"],
      );
      // Float targets are class probabilities: they must have the logits' shape.
      throwsWith(() => F.crossEntropy(randn([4, 5]), randn([3, 5])), ["aten::cross_entropy_loss: ", "batch_size"]);
    });
  });
  test("an int tensor into conv2d with float weights", () => {
    scope(() =>
      throwsWith(
        () => F.conv2d(ones([1, 3, 5, 5], { dtype: "int32" }), randn([2, 3, 3, 3])),
        ["aten::conv2d: ", "expected scalar type Int but found Float"],
      ),
    );
  });
  test("negating a bool tensor, unknown dtype names", () => {
    scope(() => {
      throwsWith(() => tensor([true]).neg(), ["aten::neg: ", "logical_not"]);
      throwsWith(() => zeros([2], { dtype: "float8" as never }), ["unknown dtype 'float8'"], TypeError);
      throwsWith(() => randn([2]).to("bfloat16" as never), ["unknown dtype 'bfloat16'"], TypeError);
    });
  });
});

describe("wrong argument types", () => {
  test("the argument is named with its schema type and what was given", () => {
    scope(() => {
      const a = randn([2]);
      throwsWith(
        () => callTensor("add.Tensor", a.handle, "x"),
        ["aten::add.Tensor: argument 'other' (Tensor) expected a Tensor, got a string"],
        TypeError,
      );
      // Tensor objects where the raw dispatcher wants handles.
      throwsWith(
        () => callTensor("add.Tensor", a, a),
        ["argument 'self' (Tensor) expected a Tensor, got an object"],
        TypeError,
      );
      throwsWith(
        () => F.conv2d(randn([1, 3, 5, 5]), randn([2, 3, 3, 3]), null, { stride: "2" as never }),
        ["aten::conv2d: argument 'stride' (int[]) expected an array of integers, got a string"],
        TypeError,
      );
      throwsWith(
        () => a.narrow(0, 0.5, 1),
        ["aten::narrow: argument 'start' (int) expected an integer, got the number 0.5"],
        TypeError,
      );
      throwsWith(
        () => callTensor("add.Tensor", a.handle),
        ["aten::add.Tensor: argument 'other' (Tensor) is required"],
        TypeError,
      );
      throwsWith(() => callTensor("neg", a.handle, 1, 2), ["aten::neg: takes 1 arguments, got 3"], TypeError);
      throwsWith(() => zeros([-1]), ["zeros: shape must be an array of non-negative integers, got [-1]"], TypeError);
      throwsWith(() => tensor([[1, 2], [3]]), ["ragged"], RangeError);
    });
  });
  test("the addon's own entry points reject non-tensors", () => {
    throwsWith(() => native.shape(1234 as never), ["shape: expected a Tensor handle"], TypeError);
    throwsWith(() => native.dispose({} as never), ["dispose: expected a Tensor handle"], TypeError);
    throwsWith(() => native.callOp(99999), ["callOp: unknown operator id"], RangeError);
    throwsWith(() => native.fromBuffer([1, 2] as never, [2], 6), ["fromBuffer: expected a typed array"], TypeError);
    throwsWith(
      () => native.fromBuffer(new Float32Array(3), [2], 6),
      ["fromBuffer: the data holds 12 bytes but shape and dtype need 8"],
      RangeError,
    );
  });
});

describe("lifetime errors", () => {
  test("use after dispose", () => {
    const a = randn([2]);
    const h = a.handle;
    a.dispose();
    throwsWith(() => a.add(1), ["Tensor was used after dispose()"]);
    throwsWith(() => a.shape, ["Tensor was used after dispose()"]);
    // A stale handle reaching the addon directly is caught there too.
    throwsWith(() => callTensor("neg", h), ["aten::neg: argument 'self': tensor was used after dispose()"]);
    throwsWith(() => native.callOp(opId("neg"), h), ["aten::neg: argument 'self': tensor was used after dispose()"]);
    scope(() => {
      const b = randn([2]);
      const c = randn([2]);
      c.dispose();
      throwsWith(() => cat([b, c]), ["Tensor was used after dispose()"]);
    });
    assert.equal(String(a), "Tensor(<disposed>)");
  });
  test("double dispose", () => {
    const a = randn([2]);
    a.dispose();
    throwsWith(() => a.dispose(), ["Tensor.dispose(): the tensor was already disposed"]);
    a.release(); // the scope path stays a no-op
  });
  test("unknown operators and overloads", () => {
    throwsWith(() => callTensor("definitely_not_an_op", 1), ["unknown operator aten::definitely_not_an_op"]);
    throwsWith(() => callTensor("add.Nope", 1), ["unknown operator aten::add.Nope"]);
  });
  test("autograd misuse", () => {
    scope(() => {
      throwsWith(
        () => randn([3]).requiresGrad_().mul(2).backward(),
        ["backward: grad can be implicitly created only for scalar outputs"],
      );
      throwsWith(() => randn([1]).sum().backward(), ["backward: element 0 of tensors does not require grad"]);
      throwsWith(
        () => randn([2]).requiresGrad_().add_(1),
        ["aten::add_.Scalar: a leaf Variable that requires grad is being used in an in-place operation"],
      );
      throwsWith(() => randn([2]).item(), ["item: a Tensor with 2 elements cannot be converted to Scalar"]);
      const x = randn([3]).requiresGrad_();
      throwsWith(() => (x.grad = ones([5])), ["Tensor.grad: assigned grad has shape [5], expected [3]"]);
      throwsWith(
        () => (x.grad = ones([3], { dtype: "int64" })),
        ["Tensor.grad: assigned grad has dtype int64, expected float32"],
      );
    });
  });
  test("generators, threads, allocation failures", () => {
    scope(() => {
      throwsWith(() => new Generator(1).setState(new Uint8Array(10)), ["generatorSetState: ", "RNG state size"]);
      throwsWith(() => callTensor("rand.generator", [2], 999, null), ["expected a Generator"], TypeError);
      const dropped = new Generator(2);
      dropped.dispose();
      throwsWith(() => dropped.manualSeed(1), ["Generator was used after dispose()"]);
      throwsWith(() => dropped.dispose(), ["already disposed"]);
      throwsWith(() => setNumThreads(0), ["setNumThreads: expected a count of at least 1"], RangeError);
      throwsWith(() => zeros([1e8, 1e8]), ["aten::zeros: ", "can't allocate memory"]);
      throwsWith(() => empty([2 ** 61]), ["aten::empty.memory_format: ", "overflow"]);
    });
  });
  test("an error inside noGrad restores grad mode; a failed op leaks no tensors", () => {
    const start = liveTensors();
    assert.equal(isGradEnabled(), true);
    assert.throws(() => scope(() => noGrad(() => randn([2]).add(randn([3])))), /aten::add\.Tensor/);
    assert.equal(isGradEnabled(), true);
    assert.throws(() => scope(() => randn([2, 2]).matmul(randn([3]))), /aten::matmul/);
    assert.equal(liveTensors(), start);
  });
});

describe("the nastiest calls in a child process", () => {
  // TensorOptions::dtype is noexcept, so an unchecked scalar-type code would become std::terminate
  // (SIGABRT) inside libtorch: the addon validates the code first.
  test("fromBuffer with an invalid scalar-type code raises instead of aborting", () => {
    const nativePath = path.resolve(__dirname, "..", "src", "torch", "native");
    const script = `const { native } = require(${JSON.stringify(nativePath)});
      try { native.fromBuffer(new Uint8Array(4), [4], 99); } catch (e) { console.log("caught: " + e.message); }`;
    const r = spawnSync(process.execPath, ["-e", script], {
      encoding: "utf8",
      timeout: 60_000,
      env: { ...process.env, LOCO_NUM_THREADS: "1" },
    });
    assert.equal(r.signal, null, `child died with ${r.signal}`);
    assert.match(r.stdout, /caught: /);
  });

  test("the process survives them all and exits normally", () => {
    const torchPath = path.resolve(__dirname, "..", "src", "torch");
    const nativePath = path.join(torchPath, "native");
    const script = `
      const t = require(${JSON.stringify(torchPath)});
      const { native } = require(${JSON.stringify(nativePath)});
      const i64 = (v) => t.tensor(v, { dtype: "int64" });
      const calls = [
        () => t.randn([2, 3]).gather(1, i64([[1e9]])),
        () => t.randn([2, 3]).indexSelect(0, i64([-100])),
        () => t.randn([2, 3]).index([i64([2 ** 40])]),
        () => t.zeros([3]).scatter(0, i64([1e6]), t.ones([1])),
        () => t.F.crossEntropy(t.randn([2, 3]), i64([5, -5])),
        () => t.F.nllLoss(t.randn([2, 3]), i64([7, 0])),
        () => t.zeros([1e8, 1e8]),
        () => t.empty([2 ** 61]),
        () => t.empty([2 ** 31, 2 ** 31, 2 ** 31]),
        () => { const a = t.randn([2]); const h = a.handle; a.dispose(); native.dispose(h); native.dispose(h); native.callOp(0, h); },
        () => native.shape({}),
        () => native.item(undefined),
        () => native.backward([{}], [], false, false, []),
        () => native.autogradGrad([t.randn([2]).handle], [t.randn([2]).handle], [], false, false, false),
        () => native.generatorSetState(0, new Uint8Array(7)),
        () => native.fromBuffer(new Uint8Array(4), [4, -1], 6),
        () => native.fromBuffer(new Uint8Array(4), [1e20], 6),
        () => t.callTensor("view", t.randn([4]).handle, [-1, -1]),
        () => t.callTensor("as_strided", t.randn([4]).handle, [100], [1], 0),
        () => t.callTensor("embedding", t.randn([3, 2]).handle, i64([4]).handle),
        () => { const x = t.randn([2]).requiresGrad_(); const y = x.exp().sum(); y.backward(); y.backward(); },
      ];
      let caught = 0;
      for (const f of calls) {
        try { f(); } catch (e) { if (!(e instanceof Error)) throw new Error("non-Error thrown"); caught++; }
      }
      // The engine still works afterwards.
      const ok = t.ones([2, 2]).matmul(t.ones([2, 2])).sum().item();
      console.log(JSON.stringify({ caught, total: calls.length, ok }));
    `;
    const r = spawnSync(process.execPath, ["-e", script], {
      encoding: "utf8",
      timeout: 120_000,
      env: { ...process.env, LOCO_NUM_THREADS: "1" },
    });
    assert.equal(r.signal, null, `child died with ${r.signal}: ${r.stderr}`);
    assert.equal(r.status, 0, `child exited with ${r.status}: ${r.stderr}`);
    const result = JSON.parse(r.stdout.trim().split("\n").pop()!);
    assert.equal(result.ok, 8);
    assert.equal(result.caught, result.total, `every nasty call raised a JS Error (${r.stdout})`);
  });
});
