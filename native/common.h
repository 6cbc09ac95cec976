// Shared pieces of the addon: the tensor handle, its lifetime accounting, and the one error
// convention (every exported function runs inside LOCO_GUARD so no C++ exception escapes).
#pragma once

#include <napi.h>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace loco {

// A tensor handle owned by JavaScript. dispose() resets `tensor`; the box itself is deleted only
// by the External's finalizer, so a disposed handle can never be freed twice.
struct TensorBox {
  at::Tensor tensor;
  int64_t accountedBytes = 0;
};

// Number of handles whose tensor is still alive (not disposed, not finalized).
extern std::atomic<int64_t> liveTensorCount;

Napi::Value wrapTensor(Napi::Env env, at::Tensor tensor);
TensorBox* unwrapBox(const Napi::Value& value, const char* what);
const at::Tensor& unwrapTensor(const Napi::Value& value, const char* what);
// Releases the tensor held by a box; returns false when it was already released.
bool releaseBox(Napi::Env env, TensorBox* box);

// Generators are referred to by index from JavaScript (0 = libtorch's default generator).
at::Generator generatorById(Napi::Env env, int64_t id);

void registerOps(Napi::Env env, Napi::Object exports);
void registerAllocator(Napi::Env env, Napi::Object exports);
// Process groups on c10d (distributed.cpp).
void registerDistributed(Napi::Env env, Napi::Object exports);

}  // namespace loco

// Turns any C++ exception into a JS Error carrying libtorch's message, prefixed by `context`.
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
