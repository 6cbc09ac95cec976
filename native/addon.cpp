// The addon's entry point: the export guard every export is registered through, tensor handles and
// their lifetime, typed-array copies, metadata, autograd (backward, vector-Jacobian products, grad
// mode) and threads. Operators go through ops.cpp's generic dispatcher; generators live in
// random.cpp, signal handling in signals.cpp, the allocator in allocator.cpp, devices in devices.cpp.
#include <v8.h>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/autograd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "common.h"

namespace loco {

std::atomic<int64_t> liveTensorCount{0};

namespace {

// Whether new handles report their bytes to V8 (external memory). src/torch/scope.ts turns this off
// while a scope is open: a scope holds its tensors strongly and frees them when it closes, so the GC
// can free none of them, and reporting them only made V8 run full collections that free nothing
// (measured: 8-10 mark-compacts per ResNet-50 step at batch 4, docs/engine.md). A tensor that
// leaves every scope (returned or kept) is reported then (accountExternal). Per thread: each worker
// thread has its own scopes.
thread_local bool accountNewTensors = true;

int64_t bytesOf(const at::Tensor& t) {
  return t.defined() ? int64_t(t.numel()) * int64_t(t.element_size()) : 0;
}

// The safety net for handles the program never disposed. A basic (pure) finalizer: it runs no
// JS, so Node calls it during GC instead of queueing it, and a synchronous loop that drops handles
// gets their memory back as it runs (queued, the finalizers wait for the event loop: 10 MiB per 50
// steps of test/leak.test.ts's loop, measured). Running inside a collection is safe only because
// the addon never leaves an error parked in Node-API while V8 can collect: see
// throwBypassingPendingException below.
void finalizeBox(node_api_basic_env env, void* data, void*) {
  auto* box = static_cast<TensorBox*>(static_cast<HandleHeader*>(data));
  if (box->tensor.defined()) {
    box->tensor.reset();
    liveTensorCount.fetch_sub(1, std::memory_order_relaxed);
    if (box->accountedBytes > 0) {
      int64_t ignored;
      napi_adjust_external_memory(env, -box->accountedBytes, &ignored);
    }
  }
  delete box;
}

}  // namespace

Napi::Value wrapTensor(Napi::Env env, at::Tensor tensor) {
  auto* box = new TensorBox();
  box->kind = HandleKind::Tensor;
  box->tensor = std::move(tensor);
  box->accountedBytes = accountNewTensors ? bytesOf(box->tensor) : 0;
  liveTensorCount.fetch_add(1, std::memory_order_relaxed);
  // A hint for V8's heuristics; kept in step with dispose so the GC is not pushed to run.
  if (box->accountedBytes > 0) Napi::MemoryManagement::AdjustExternalMemory(env, box->accountedBytes);
  napi_value result;
  napi_status status = napi_create_external(env, static_cast<HandleHeader*>(box), finalizeBox, nullptr, &result);
  NAPI_THROW_IF_FAILED(env, status, Napi::Value());
  return Napi::Value(env, result);
}

bool releaseBox(Napi::Env env, TensorBox* box) {
  if (!box->tensor.defined()) return false;
  box->tensor.reset();
  liveTensorCount.fetch_sub(1, std::memory_order_relaxed);
  if (box->accountedBytes > 0) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -box->accountedBytes);
    box->accountedBytes = 0;
  }
  return true;
}

TensorBox* unwrapBox(const Napi::Value& value, const char* what) {
  // One call answers both "is it an External" and "where does it point" (this is on the hot path).
  void* data = nullptr;
  if (napi_get_value_external(value.Env(), value, &data) != napi_ok ||
      static_cast<HandleHeader*>(data)->kind != HandleKind::Tensor) {
    throw Napi::TypeError::New(value.Env(), std::string(what) + ": expected a Tensor handle");
  }
  return static_cast<TensorBox*>(static_cast<HandleHeader*>(data));
}

const at::Tensor& unwrapTensor(const Napi::Value& value, const char* what) {
  TensorBox* box = unwrapBox(value, what);
  if (!box->tensor.defined()) {
    throw Napi::Error::New(value.Env(), std::string(what) + ": tensor was used after dispose()");
  }
  return box->tensor;
}

namespace {

// ---- lifetime ---------------------------------------------------------------------------------

Napi::Value dispose(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), releaseBox(info.Env(), unwrapBox(info[0], "dispose")));
}

// Reports a live tensor's bytes to V8 if they are not reported yet (it has left every scope).
Napi::Value accountExternal(const Napi::CallbackInfo& info) {
  TensorBox* box = unwrapBox(info[0], "accountExternal");
  if (!box->tensor.defined()) {
    throw Napi::Error::New(info.Env(), "accountExternal: tensor was used after dispose()");
  }
  if (box->accountedBytes == 0) {
    box->accountedBytes = bytesOf(box->tensor);
    if (box->accountedBytes > 0) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), box->accountedBytes);
  }
  return info.Env().Undefined();
}

// Sets whether new handles report their bytes to V8; returns the previous setting.
Napi::Value setExternalAccounting(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBoolean()) {
    throw Napi::TypeError::New(info.Env(), "setExternalAccounting: expected a boolean");
  }
  bool previous = accountNewTensors;
  accountNewTensors = info[0].As<Napi::Boolean>().Value();
  return Napi::Boolean::New(info.Env(), previous);
}

Napi::Value isDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !unwrapBox(info[0], "isDisposed")->tensor.defined());
}

// ---- typed arrays -----------------------------------------------------------------------------

std::vector<int64_t> toShape(const Napi::Value& value, const char* what) {
  Napi::Env env = value.Env();
  if (!value.IsArray()) throw Napi::TypeError::New(env, std::string(what) + ": shape must be an array");
  auto array = value.As<Napi::Array>();
  std::vector<int64_t> shape;
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value d = array[i];
    if (!d.IsNumber() || d.As<Napi::Number>().DoubleValue() < 0 ||
        d.As<Napi::Number>().DoubleValue() != double(d.As<Napi::Number>().Int64Value())) {
      throw Napi::TypeError::New(env, std::string(what) + ": shape entries must be non-negative integers");
    }
    shape.push_back(d.As<Napi::Number>().Int64Value());
  }
  return shape;
}

// fromBuffer(typedArray, shape, scalarType): copies the array's bytes into a new tensor.
Napi::Value fromBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) throw Napi::TypeError::New(env, "fromBuffer: expected a typed array");
  auto array = info[0].As<Napi::TypedArray>();
  auto shape = toShape(info[1], "fromBuffer");
  if (!info[2].IsNumber()) throw Napi::TypeError::New(env, "fromBuffer: expected a scalar type code");
  int code = info[2].As<Napi::Number>().Int32Value();
  // Only the element types loco supports; an unchecked code would abort inside libtorch.
  if (!((code >= 0 && code <= 7) || code == 11)) {
    throw Napi::RangeError::New(env, "fromBuffer: unsupported scalar type code " + std::to_string(code));
  }
  auto type = static_cast<c10::ScalarType>(code);
  LOCO_GUARD(env, "fromBuffer", {
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
    size_t need = t.numel() * t.element_size();
    if (array.ByteLength() != need) {
      throw Napi::RangeError::New(env, "fromBuffer: the data holds " + std::to_string(array.ByteLength()) +
                                           " bytes but shape and dtype need " + std::to_string(need));
    }
    if (need > 0) {
      auto* src = static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
      std::memcpy(t.data_ptr(), src, need);
    }
    return wrapTensor(env, std::move(t));
  })
}

// toBuffer(tensor): a fresh ArrayBuffer holding the tensor's values in row-major order.
Napi::Value toBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& source = unwrapTensor(info[0], "toBuffer");
  LOCO_GUARD(env, "toBuffer", {
    at::Tensor t = source.detach().contiguous();
    size_t n = t.numel() * t.element_size();
    auto buffer = Napi::ArrayBuffer::New(env, n);
    if (n > 0) std::memcpy(buffer.Data(), t.data_ptr(), n);
    return buffer;
  })
}

// ---- metadata ---------------------------------------------------------------------------------

Napi::Value shape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = unwrapTensor(info[0], "shape");
  auto sizes = t.sizes();
  auto out = Napi::Array::New(env, sizes.size());
  for (size_t i = 0; i < sizes.size(); i++) out[i] = Napi::Number::New(env, double(sizes[i]));
  return out;
}

Napi::Value strides(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = unwrapTensor(info[0], "strides");
  auto strides = t.strides();
  auto out = Napi::Array::New(env, strides.size());
  for (size_t i = 0; i < strides.size(); i++) out[i] = Napi::Number::New(env, double(strides[i]));
  return out;
}

Napi::Value scalarType(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), int(unwrapTensor(info[0], "scalarType").scalar_type()));
}

Napi::Value device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), unwrapTensor(info[0], "device").device().str());
}

Napi::Value numel(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(unwrapTensor(info[0], "numel").numel()));
}

Napi::Value dim(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(unwrapTensor(info[0], "dim").dim()));
}

Napi::Value isContiguous(const Napi::CallbackInfo& info) {
  const at::Tensor& t = unwrapTensor(info[0], "isContiguous");
  int code = info.Length() > 1 ? info[1].As<Napi::Number>().Int32Value() : 0;
  // Contiguous, Preserve, ChannelsLast, ChannelsLast3d: other codes are not memory formats.
  if (code < 0 || code > 3) {
    throw Napi::RangeError::New(info.Env(), "isContiguous: unknown memory format code " + std::to_string(code));
  }
  auto format = static_cast<c10::MemoryFormat>(code);
  return Napi::Boolean::New(info.Env(), t.is_contiguous(format));
}

Napi::Value item(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = unwrapTensor(info[0], "item");
  LOCO_GUARD(env, "item", {
    c10::Scalar s = t.item();
    if (s.isBoolean()) return Napi::Boolean::New(env, s.toBool());
    return Napi::Number::New(env, s.toDouble());
  })
}

Napi::Value isAliasOf(const Napi::CallbackInfo& info) {
  const at::Tensor& a = unwrapTensor(info[0], "isAliasOf");
  const at::Tensor& b = unwrapTensor(info[1], "isAliasOf");
  return Napi::Boolean::New(info.Env(), a.is_alias_of(b));
}

// ---- autograd ---------------------------------------------------------------------------------

Napi::Value requiresGrad(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), unwrapTensor(info[0], "requiresGrad").requires_grad());
}

// The name of the autograd node that made this tensor ("AddBackward0"), or null (a leaf, or made
// without grad).
Napi::Value gradFnName(const Napi::CallbackInfo& info) {
  const auto& fn = unwrapTensor(info[0], "gradFnName").grad_fn();
  if (!fn) return info.Env().Null();
  return Napi::String::New(info.Env(), fn->name());
}

Napi::Value setRequiresGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor t = unwrapTensor(info[0], "setRequiresGrad");
  if (!info[1].IsBoolean()) throw Napi::TypeError::New(env, "setRequiresGrad: expected a boolean");
  LOCO_GUARD(env, "setRequiresGrad", { t.set_requires_grad(info[1].As<Napi::Boolean>().Value()); })
  return env.Undefined();
}

Napi::Value isLeaf(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), unwrapTensor(info[0], "isLeaf").is_leaf());
}

Napi::Value grad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& g = unwrapTensor(info[0], "grad").grad();
  if (!g.defined()) return env.Null();
  return wrapTensor(env, g);
}

Napi::Value setGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor t = unwrapTensor(info[0], "setGrad");
  LOCO_GUARD(env, "setGrad", {
    if (info[1].IsNull() || info[1].IsUndefined()) {
      t.mutable_grad().reset();
    } else {
      t.mutable_grad() = unwrapTensor(info[1], "setGrad");
    }
  })
  return env.Undefined();
}

std::vector<at::Tensor> toTensorVector(const Napi::Value& value, const char* what, bool allowNull) {
  Napi::Env env = value.Env();
  std::vector<at::Tensor> out;
  if (value.IsUndefined() || value.IsNull()) return out;
  if (!value.IsArray()) throw Napi::TypeError::New(env, std::string(what) + ": expected an array of Tensors");
  auto array = value.As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value e = array[i];
    if (allowNull && (e.IsNull() || e.IsUndefined())) {
      out.emplace_back();
    } else {
      out.push_back(unwrapTensor(e, what));
    }
  }
  return out;
}

// backward(tensors, gradTensors, retainGraph, createGraph, inputs?)
Napi::Value backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto tensors = toTensorVector(info[0], "backward", false);
  if (tensors.empty()) throw Napi::TypeError::New(env, "backward: expected at least one tensor to backpropagate from");
  auto grads = toTensorVector(info[1], "backward gradient", true);
  bool retain = info[2].ToBoolean().Value();
  bool create = info[3].ToBoolean().Value();
  auto inputs = toTensorVector(info[4], "backward inputs", false);
  LOCO_GUARD(env, "backward", {
    torch::autograd::backward(tensors, grads, retain, create, inputs);
  })
  return env.Undefined();
}

// grad(outputs, inputs, gradOutputs, retainGraph, createGraph, allowUnused): the vector-Jacobian
// product of `outputs` with `gradOutputs`, returned for `inputs` only (nothing accumulates into .grad).
Napi::Value autogradGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto outputs = toTensorVector(info[0], "autogradGrad outputs", false);
  auto inputs = toTensorVector(info[1], "autogradGrad inputs", false);
  auto gradOutputs = toTensorVector(info[2], "autogradGrad gradOutputs", true);
  bool retain = info[3].ToBoolean().Value();
  bool create = info[4].ToBoolean().Value();
  bool allowUnused = info[5].ToBoolean().Value();
  LOCO_GUARD(env, "autogradGrad", {
    auto result = torch::autograd::grad(outputs, inputs, gradOutputs, retain, create, allowUnused);
    auto out = Napi::Array::New(env, result.size());
    for (size_t i = 0; i < result.size(); i++) {
      out[i] = result[i].defined() ? wrapTensor(env, result[i]) : env.Null();
    }
    return out;
  })
}

Napi::Value setGradEnabled(const Napi::CallbackInfo& info) {
  if (!info[0].IsBoolean()) throw Napi::TypeError::New(info.Env(), "setGradEnabled: expected a boolean");
  bool previous = c10::GradMode::is_enabled();
  c10::GradMode::set_enabled(info[0].As<Napi::Boolean>().Value());
  return Napi::Boolean::New(info.Env(), previous);
}

Napi::Value isGradEnabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), c10::GradMode::is_enabled());
}

// ---- threads ----------------------------------------------------------------------------------

Napi::Value setNumThreads(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "setNumThreads: expected a thread count");
  double d = info[0].As<Napi::Number>().DoubleValue();
  if (!(d >= 1)) throw Napi::RangeError::New(info.Env(), "setNumThreads: expected a count of at least 1");
  // A runaway count would try to start that many threads.
  if (d > 4096 || d != double(int(d))) {
    throw Napi::RangeError::New(info.Env(), "setNumThreads: expected an integer count of at most 4096");
  }
  int n = int(d);
  at::set_num_threads(n);
  return info.Env().Undefined();
}

Napi::Value getNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), at::get_num_threads());
}

Napi::Value hardwareConcurrency(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), std::thread::hardware_concurrency());
}

}  // namespace

std::vector<NativeExport> tensorExports() {
  return {
      {"dispose", dispose},
      {"isDisposed", isDisposed},
      {"accountExternal", accountExternal},
      {"setExternalAccounting", setExternalAccounting},
      {"fromBuffer", fromBuffer},
      {"toBuffer", toBuffer},
      {"shape", shape},
      {"strides", strides},
      {"scalarType", scalarType},
      {"device", device},
      {"numel", numel},
      {"dim", dim},
      {"isContiguous", isContiguous},
      {"item", item},
      {"isAliasOf", isAliasOf},
      {"requiresGrad", requiresGrad},
      {"gradFnName", gradFnName},
      {"setRequiresGrad", setRequiresGrad},
      {"isLeaf", isLeaf},
      {"grad", grad},
      {"setGrad", setGrad},
      {"backward", backward},
      {"autogradGrad", autogradGrad},
      {"setGradEnabled", setGradEnabled},
      {"isGradEnabled", isGradEnabled},
      {"setNumThreads", setNumThreads},
      {"getNumThreads", getNumThreads},
      {"hardwareConcurrency", hardwareConcurrency},
  };
}

namespace {

// Throws `error` into JavaScript straight through V8, not through napi_throw. Why: napi_throw parks
// the error in Node's per-module "pending exception" until the callback returns, then rethrows it;
// the rethrow allocates V8's message object, which can start a GC, whose finalizers run inside
// Node's module-call wrapper; that wrapper sees the parked error, takes it for the finalizer's
// own, and hands it to the uncaught-exception handler, which runs JavaScript inside the GC: Node
// 20 aborts ("Check failed: AllowJavascriptExecution::IsAllowed"). Thrown directly, the error is
// never parked, and a finalizer that runs during the throw finds nothing pending.
// test/native-boundary.test.ts reproduces the abort (GC forced during the rethrows).
void throwBypassingPendingException(const Napi::Value& error) {
  napi_value value = error;
  v8::Local<v8::Value> local;
  static_assert(sizeof(local) == sizeof(value), "napi_value is a v8::Local<v8::Value>");
  std::memcpy(static_cast<void*>(&local), &value, sizeof(value));
  v8::Isolate::GetCurrent()->ThrowException(local);
}

// The one callback every export goes through: `info.Data()` is the export's table entry. Napi
// errors pass through (named after the export when they are not yet); any other C++ exception,
// c10::Error included, becomes a JS Error naming the export, so nothing thrown in native code can
// abort the process.
Napi::Value guardedCall(const Napi::CallbackInfo& info) {
  const auto* entry = static_cast<const NativeExport*>(info.Data());
  Napi::Env env = info.Env();
  Napi::Value error;
  try {
    return entry->function(info);
  } catch (Napi::Error& e) {
    // The addon's own messages start with the export's name, or with an operator's schema name
    // ("aten::conv2d: …"); node-addon-api's generic ones ("A number was expected") get the name.
    std::string message = e.Message();
    size_t colon = message.find(": ");
    bool named = message.rfind(std::string(entry->name) + ":", 0) == 0 ||
                 (colon != std::string::npos && message.substr(0, colon).find("::") != std::string::npos);
    if (!named) e.Value().Set("message", std::string(entry->name) + ": " + message);
    error = e.Value();
  } catch (const c10::Error& e) {
    error = Napi::Error::New(env, std::string(entry->name) + ": " + e.what_without_backtrace()).Value();
  } catch (const std::exception& e) {
    error = Napi::Error::New(env, std::string(entry->name) + ": " + e.what()).Value();
  } catch (...) {
    error = Napi::Error::New(env, std::string(entry->name) + ": unknown native error").Value();
  }
  throwBypassingPendingException(error);
  return Napi::Value();
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  // The table lives as long as the process: each function keeps a pointer to its entry.
  static const std::vector<NativeExport> table = [] {
    std::vector<NativeExport> all;
    for (auto part :
         {tensorExports, opsExports, allocatorExports, randomExports, signalExports, deviceExports,
          distributedExports, feedbackExports, batchNormReLUExports}) {
      auto exports = part();
      all.insert(all.end(), exports.begin(), exports.end());
    }
    return all;
  }();
  for (const NativeExport& entry : table) {
    if (exports.Has(entry.name)) throw Napi::Error::New(env, std::string("duplicate addon export ") + entry.name);
    auto* data = const_cast<NativeExport*>(&entry);
    exports.Set(entry.name, Napi::Function::New(env, guardedCall, entry.name, data));
  }
  return exports;
}

}  // namespace
}  // namespace loco

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return loco::init(env, exports); }

NODE_API_MODULE(loco_native, InitAddon)
