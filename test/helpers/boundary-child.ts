// Run by test/native-boundary.test.ts in a child process (an abort must fail that test, not kill
// the test runner). Calls every export of the addon with bad arguments and prints one JSON line per
// call: {"export", "label", "outcome": "threw" | "returned", "message", "errorClass"}. Before each
// call it prints {"running": …}, so the parent can name the call that killed the process.
import { native } from "../../src/torch/native";
import * as torch from "../../src/torch";

type Handle = unknown;
type Case = [label: string, call: () => unknown];

const api = native as unknown as Record<string, (...args: unknown[]) => unknown>;
const op = (name: string, overload = ""): number => native.resolveOp(name, overload);

// Live and disposed handles of both kinds, a sparse tensor, and a nested tensor (libtorch throws a
// c10::Error for its sizes and strides: no narrower guard catches it, only the export guard).
const live = torch.randn([2, 3]);
const h: Handle = live.handle;
const intTensor = torch.zeros([2], { dtype: "int64" }).handle;
const d: Handle = torch.randn([2]).handle;
native.dispose(d as never);
const g: Handle = native.newGenerator(1);
const gd: Handle = native.newGenerator(2);
native.disposeGenerator(gd as never);
const sparse = native.callOp(op("aten::to_sparse"), h);
const nested = native.callOp(op("aten::_nested_tensor_from_tensor_list"), [h, torch.randn([4, 3]).handle]);

/** Exports that take no arguments: extra (junk) arguments are ignored, and the call succeeds. */
const takesNoArguments = new Set([
  "isGradEnabled",
  "fusedBatchNormReLUEnabled",
  "getNumThreads",
  "hardwareConcurrency",
  "memoryStats",
  "resetPeakMemory",
  "emptyCache",
  "defaultGenerator",
  "removeInterruptHandler",
  "interruptCount",
  "availableDevices",
]);

const c = (name: string, ...argLists: [string, unknown[]][]): [string, Case[]] => [
  name,
  argLists.map(([label, args]) => [label, () => api[name](...args)]),
];
const none: [string, unknown[]] = ["no arguments", []];
const disposed: [string, unknown[]] = ["a disposed tensor", [d]];
const generatorAsTensor: [string, unknown[]] = ["a generator where a tensor belongs", [g]];

const cases = new Map<string, Case[]>([
  // ---- handles and copies ----
  c("dispose", none, ["a number", [1]], ["a plain object", [{}]], generatorAsTensor),
  c("isDisposed", none, ["null", [null]], generatorAsTensor),
  c("accountExternal", none, ["a number", [1]], disposed, generatorAsTensor),
  c("setExternalAccounting", none, ["a string", ["yes"]], ["a number", [1]]),
  c(
    "fromBuffer",
    none,
    ["a plain array", [[1, 2], [2], 6]],
    ["too few bytes for the shape", [new Float32Array(2), [3], 6]],
    ["an unknown scalar type", [new Float32Array(2), [2], 99]],
    ["a negative dimension", [new Float32Array(2), [-2], 6]],
    ["a huge dimension", [new Float32Array(2), [1e20], 6]],
    ["a string shape", [new Float32Array(2), "2", 6]],
  ),
  c("toBuffer", none, disposed, generatorAsTensor, ["a sparse tensor", [sparse]]),
  // ---- metadata ----
  c("shape", none, disposed, generatorAsTensor, ["a number", [5]], ["a nested tensor", [nested]]),
  c("strides", none, disposed, ["a nested tensor", [nested]]),
  c("scalarType", none, disposed),
  c("device", none, disposed, generatorAsTensor),
  c("numel", none, disposed),
  c("dim", none, disposed),
  c("isContiguous", none, disposed, ["an unknown memory format", [h, 99]], ["a string memory format", [h, "x"]]),
  c("item", none, disposed, ["a six-element tensor", [h]]),
  c("isAliasOf", none, ["one tensor", [h]], ["a disposed second tensor", [h, d]], ["a generator", [h, g]]),
  // ---- autograd ----
  c("requiresGrad", none, disposed),
  c("gradFnName", none, disposed, generatorAsTensor),
  c(
    "setRequiresGrad",
    none,
    ["a missing flag", [h]],
    ["a string flag", [h, "yes"]],
    ["an integer tensor", [intTensor, true]],
    ["a disposed tensor", [d, true]],
  ),
  c("isLeaf", none, disposed),
  c("grad", none, disposed),
  c(
    "setGrad",
    none,
    ["a plain object as grad", [h, {}]],
    ["a disposed grad", [h, d]],
    ["a disposed tensor", [d, null]],
  ),
  c(
    "backward",
    none,
    ["a root that does not require grad", [[h], [], false, false, []]],
    ["a plain object root", [[{}], [], false, false, []]],
    ["a string", ["x"]],
    ["a disposed root", [[d], [], false, false, []]],
  ),
  c(
    "autogradGrad",
    none,
    ["inputs that do not require grad", [[h], [h], [], false, false, false]],
    ["strings", [["x"], ["y"], [], false, false, false]],
  ),
  c("setGradEnabled", none, ["a string", ["yes"]]),
  // ---- operators ----
  c(
    "resolveOp",
    none,
    ["a number", [5]],
    ["an unknown operator", ["aten::no_such_op", ""]],
    ["an unknown overload", ["aten::add", "NoSuchOverload"]],
  ),
  c(
    "callOp",
    none,
    ["a string id", ["x"]],
    ["a negative id", [-1]],
    ["an unknown id", [1e9]],
    ["a string where a tensor belongs", [op("aten::add", "Tensor"), h, "x"]],
    ["a disposed tensor", [op("aten::add", "Tensor"), d, h]],
    ["a generator where a tensor belongs", [op("aten::add", "Tensor"), g, h]],
    ["too many arguments", [op("aten::add", "Tensor"), h, h, 1, 2, 3, 4]],
    ["mismatched shapes", [op("aten::add", "Tensor"), h, torch.randn([4]).handle]],
    ["an unparseable device", [op("aten::empty", "memory_format"), [2], null, null, "nonsense"]],
    ["an unavailable device", [op("aten::empty", "memory_format"), [2], null, null, "cuda"]],
    ["a number where a generator belongs", [op("aten::randn", "generator"), [2], 5]],
    ["a disposed generator", [op("aten::randn", "generator"), [2], gd]],
    ["a tensor where a generator belongs", [op("aten::randn", "generator"), [2], h]],
    ["an out-of-range index", [op("aten::select", "int"), h, 0, 99]],
  ),
  c(
    "callOpVoid",
    none,
    ["a string where a tensor belongs", [op("aten::add_", "Tensor"), h, "x"]],
    ["a disposed tensor", [op("aten::add_", "Tensor"), d, h]],
  ),
  c("opSchema", none, ["a string id", ["x"]], ["an unknown id", [1e9]]),
  // ---- generators ----
  c("manualSeed", none, ["a negative seed", [-1]], ["a string seed", ["1"]], ["a fractional seed", [1.5]]),
  c("newGenerator", none, ["a negative seed", [-5]], ["a string seed", ["x"]]),
  c(
    "disposeGenerator",
    none,
    ["a tensor", [h]],
    ["the default generator", [native.defaultGenerator()]],
    ["a number", [5]],
  ),
  c("generatorSeed", none, ["a disposed generator", [gd, 1]], ["a negative seed", [g, -1]], ["a tensor", [h, 1]]),
  c("generatorGetState", none, ["a disposed generator", [gd]], ["a tensor", [h]]),
  c(
    "generatorSetState",
    none,
    ["a short state", [g, new Uint8Array(3)]],
    ["a plain array", [g, [1, 2]]],
    ["a Float32Array", [g, new Float32Array(4)]],
    ["a disposed generator", [gd, new Uint8Array(5056)]],
  ),
  // ---- threads ----
  c(
    "setNumThreads",
    none,
    ["zero", [0]],
    ["a string", ["4"]],
    ["a runaway count", [1e12]],
    ["NaN", [NaN]],
    ["a fraction", [1.5]],
  ),
  // ---- signals ----
  c("installInterruptHandler", none, ["numbers", [1, 2]], ["one message", ["a"]]),
  // Only bad arguments: a valid call would start watching a parent pid for good.
  c("stopWithParent", none, ["strings", ["1", "2"]], ["one number", [1]]),
  // ---- devices ----
  c(
    "checkDevice",
    none,
    ["a number", [5]],
    ["an unavailable device", ["cuda"]],
    ["an unknown device", ["nonsense"]],
    ["a CPU index other than 0", ["cpu:7"]],
  ),
  // ---- feedback alignment (test/feedback.oracle.test.ts exercises the valid calls) ----
  c(
    "feedbackConv2d",
    none,
    ["a disposed input", [d, h, null, h, [1, 1], [0, 0], [1, 1], 1]],
    ["a generator as the weight", [h, g, null, h, [1, 1], [0, 0], [1, 1], 1]],
    ["a feedback matrix of another shape than the weight", [h, h, null, intTensor, [1, 1], [0, 0], [1, 1], 1]],
    ["a string stride", [h, h, null, h, "1", [0, 0], [1, 1], 1]],
  ),
  c(
    "feedbackLinear",
    none,
    ["a disposed input", [d, h, null, h]],
    ["a generator as the feedback matrix", [h, h, null, g]],
    ["a feedback matrix of another shape than the weight", [h, h, null, intTensor]],
  ),
  // ---- batch norm + ReLU (test/batchnorm-relu.oracle.test.ts exercises the valid calls) ----
  c(
    "batchNormReLU",
    none,
    ["a disposed input", [d, null, null, null, null, null, true, 0.1, 1e-5]],
    ["a generator as the weight", [h, null, g, null, null, null, true, 0.1, 1e-5]],
    ["a residual of another shape", [h, intTensor, null, null, null, null, true, 0.1, 1e-5]],
    ["a string training flag", [h, null, null, null, null, null, "yes", 0.1, 1e-5]],
    ["a string momentum", [h, null, null, null, null, null, true, "0.1", 1e-5]],
  ),
  c("setFusedBatchNormReLU", none, ["a number", [1]]),
  // ---- process groups (a live group is exercised by test/distributed.test.ts) ----
  c(
    "initProcessGroup",
    none,
    ["a number", [5]],
    ["no masterAddr", [{ masterPort: 1, rank: 0, worldSize: 1, timeoutMs: 1 }]],
    ["a string rank", [{ masterAddr: "127.0.0.1", masterPort: 1, rank: "0", worldSize: 1, timeoutMs: 1 }]],
  ),
  ...[
    "destroyProcessGroup",
    "processGroupFailure",
    "allReduce",
    "allGather",
    "broadcast",
    "barrier",
    "send",
    "recv",
    "allReduceSumWithGrad",
    "allGatherWithGrad",
  ].map((name) =>
    c(
      name,
      none,
      ["a tensor where a process group belongs", [h, h, 0, 0]],
      ["a generator where a process group belongs", [g, h, 0, 0]],
    ),
  ),
]);
for (const name of takesNoArguments) cases.set(name, [["junk arguments", () => api[name]("junk", {}, 5)]]);

// The safetensors helpers sit on fromBuffer/toBuffer: bad input there is a JS error too.
const helperCases: Case[] = [
  ["deserializeSafetensors of 3 bytes", () => torch.deserializeSafetensors(new Uint8Array(3))],
  ["deserializeSafetensors of a huge header length", () => torch.deserializeSafetensors(new Uint8Array(16).fill(255))],
  [
    "serializeSafetensors of a disposed tensor",
    () => {
      const t = torch.ones([2]);
      t.dispose();
      return torch.serializeSafetensors({ w: t });
    },
  ],
  ["loadSafetensors of a missing file", () => torch.loadSafetensors("/nonexistent/loco.safetensors")],
];

function report(exportName: string, label: string, call: () => unknown): void {
  process.stdout.write(JSON.stringify({ running: `${exportName} (${label})` }) + "\n");
  let line: Record<string, unknown>;
  try {
    call();
    line = { export: exportName, label, outcome: "returned" };
  } catch (error) {
    const e = error as Error;
    line = {
      export: exportName,
      label,
      outcome: "threw",
      isError: e instanceof Error,
      errorClass: e?.constructor?.name,
      message: String(e?.message),
    };
  }
  process.stdout.write(JSON.stringify(line) + "\n");
}

const exportNames = Object.keys(native).filter((k) => typeof api[k] === "function");
process.stdout.write(JSON.stringify({ exports: exportNames, noArguments: [...takesNoArguments] }) + "\n");
for (const name of exportNames) {
  for (const [label, call] of cases.get(name) ?? []) report(name, label, call);
}
for (const [label, call] of helperCases) report("safetensors", label, call);
// One handler at a time: a second install is an error, and removal restores the state.
report("installInterruptHandler", "a second install", () => {
  native.installInterruptHandler("first", "second");
  try {
    native.installInterruptHandler("first", "second");
  } finally {
    native.removeInterruptHandler();
  }
});
live.dispose();
process.stdout.write(JSON.stringify({ done: true }) + "\n");
