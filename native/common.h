// Shared pieces of the addon: the handles JavaScript holds (tensors and generators), their
// lifetime accounting, and the export table every native file contributes to. addon.cpp registers
// every export through one guard, so no C++ exception can cross into Node (where it would abort the
// process): each becomes a JS Error whose message starts with the export's name.
#pragma once

#include <napi.h>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace loco {

// Every External the addon hands out points at a HandleHeader, so an unwrap can tell a tensor
// handle from a generator handle (passing one where the other belongs is an error, not a crash).
enum class HandleKind : uint32_t { Tensor = 0x544e5352, Generator = 0x47454e52, ProcessGroup = 0x50475250 };

struct HandleHeader {
  HandleKind kind;
};

// A tensor handle owned by JavaScript. dispose() resets `tensor`; the box itself is deleted only
// by the External's finalizer, so a disposed handle can never be freed twice.
struct TensorBox : HandleHeader {
  at::Tensor tensor;
  int64_t accountedBytes = 0;
};

// A random generator owned by JavaScript, with the same lifetime as a tensor handle.
struct GeneratorBox : HandleHeader {
  at::Generator generator;
  bool owned = true;  // false for libtorch's default generator, which is never released
};

// Number of handles whose tensor is still alive (not disposed, not finalized).
extern std::atomic<int64_t> liveTensorCount;
// Number of generators created by newGenerator and not yet disposed or finalized.
extern std::atomic<int64_t> liveGeneratorCount;

Napi::Value wrapTensor(Napi::Env env, at::Tensor tensor);
TensorBox* unwrapBox(const Napi::Value& value, const char* what);
const at::Tensor& unwrapTensor(const Napi::Value& value, const char* what);
// Releases the tensor held by a box; returns false when it was already released.
bool releaseBox(Napi::Env env, TensorBox* box);

// The generator behind a generator handle (throws a JS error for anything else, or after dispose).
at::Generator unwrapGenerator(const Napi::Value& value, const char* what);

// One addon export. Each native file lists its own; addon.cpp registers them all with the guard.
using NativeFunction = Napi::Value (*)(const Napi::CallbackInfo&);
struct NativeExport {
  const char* name;
  NativeFunction function;
};

std::vector<NativeExport> tensorExports();     // addon.cpp: handles, copies, metadata, autograd, threads
std::vector<NativeExport> opsExports();        // ops.cpp: the generic operator dispatcher
std::vector<NativeExport> allocatorExports();  // allocator.cpp: memory gauges
std::vector<NativeExport> randomExports();     // random.cpp: generators
std::vector<NativeExport> signalExports();     // signals.cpp: SIGINT/SIGTERM handling
std::vector<NativeExport> deviceExports();     // devices.cpp: device names and availability
std::vector<NativeExport> feedbackExports();   // feedback.cpp: feedback alignment's conv2d and linear
std::vector<NativeExport> distributedExports();  // distributed.cpp: process groups on c10d
std::vector<NativeExport> batchNormReLUExports();  // batchnorm_relu.cpp: batch norm + ReLU in one node

// A c10::Device from a device name ("cpu", "cuda:0"), or a JS error naming the device and what
// this libtorch build offers.
c10::Device parseDevice(Napi::Env env, const std::string& name, const std::string& context);

}  // namespace loco

// Turns any C++ exception into a JS Error carrying libtorch's message, prefixed by `context`.
// The export guard already does this for every export; this narrower guard names a more precise
// context (an operator's schema name rather than "callOp").
#define LOCO_GUARD(env, context, body)                                                   \
  try {                                                                                  \
    body                                                                                 \
  } catch (const Napi::Error&) {                                                         \
    throw;                                                                               \
  } catch (const c10::Error& e) {                                                        \
    throw Napi::Error::New(env, std::string(context) + ": " + e.what_without_backtrace()); \
  } catch (const std::exception& e) {                                                    \
    throw Napi::Error::New(env, std::string(context) + ": " + e.what());                 \
  } catch (...) {                                                                        \
    throw Napi::Error::New(env, std::string(context) + ": unknown native error");        \
  }
