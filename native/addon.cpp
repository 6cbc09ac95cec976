// The addon's entry point: tensor handles and their lifetime, typed-array copies, metadata,
// autograd (backward, vector-Jacobian products, grad mode), random generators and threads.
// Operators themselves go through ops.cpp's generic dispatcher.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/Generator.h>
#include <ATen/ops/empty.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>

#include "common.h"

namespace loco {

std::atomic<int64_t> liveTensorCount{0};

namespace {

int64_t bytesOf(const at::Tensor& t) {
  return t.defined() ? int64_t(t.numel()) * int64_t(t.element_size()) : 0;
}

// The safety net for handles the program never disposed. A basic (pure) finalizer: it runs no
// JS, so Node calls it during GC instead of queueing it (the queue cost ~1 µs per handle).
void finalizeBox(node_api_basic_env env, void* data, void*) {
  auto* box = static_cast<TensorBox*>(data);
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
  auto* box = new TensorBox{std::move(tensor), 0};
  box->accountedBytes = bytesOf(box->tensor);
  liveTensorCount.fetch_add(1, std::memory_order_relaxed);
  // A hint for V8's heuristics; kept in step with dispose so the GC is not pushed to run.
  if (box->accountedBytes > 0) Napi::MemoryManagement::AdjustExternalMemory(env, box->accountedBytes);
  napi_value result;
  napi_status status = napi_create_external(env, box, finalizeBox, nullptr, &result);
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
  if (!value.IsExternal()) {
    throw Napi::TypeError::New(value.Env(), std::string(what) + ": expected a Tensor handle");
  }
  return value.As<Napi::External<TensorBox>>().Data();
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

Napi::Value Dispose(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), releaseBox(info.Env(), unwrapBox(info[0], "dispose")));
}

Napi::Value IsDisposed(const Napi::CallbackInfo& info) {
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
Napi::Value FromBuffer(const Napi::CallbackInfo& info) {
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
Napi::Value ToBuffer(const Napi::CallbackInfo& info) {
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

Napi::Value Shape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = unwrapTensor(info[0], "shape");
  auto sizes = t.sizes();
  auto out = Napi::Array::New(env, sizes.size());
  for (size_t i = 0; i < sizes.size(); i++) out[i] = Napi::Number::New(env, double(sizes[i]));
  return out;
}

Napi::Value Strides(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = unwrapTensor(info[0], "strides");
  auto strides = t.strides();
  auto out = Napi::Array::New(env, strides.size());
  for (size_t i = 0; i < strides.size(); i++) out[i] = Napi::Number::New(env, double(strides[i]));
  return out;
}

Napi::Value ScalarTypeOf(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), int(unwrapTensor(info[0], "dtype").scalar_type()));
}

Napi::Value Numel(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(unwrapTensor(info[0], "numel").numel()));
}

Napi::Value Dim(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(unwrapTensor(info[0], "dim").dim()));
}

Napi::Value IsContiguous(const Napi::CallbackInfo& info) {
  const at::Tensor& t = unwrapTensor(info[0], "isContiguous");
  auto format = static_cast<c10::MemoryFormat>(info.Length() > 1 ? info[1].As<Napi::Number>().Int32Value() : 0);
  return Napi::Boolean::New(info.Env(), t.is_contiguous(format));
}

Napi::Value Item(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = unwrapTensor(info[0], "item");
  LOCO_GUARD(env, "item", {
    c10::Scalar s = t.item();
    if (s.isBoolean()) return Napi::Boolean::New(env, s.toBool());
    return Napi::Number::New(env, s.toDouble());
  })
}

Napi::Value SamePointer(const Napi::CallbackInfo& info) {
  const at::Tensor& a = unwrapTensor(info[0], "sameStorage");
  const at::Tensor& b = unwrapTensor(info[1], "sameStorage");
  return Napi::Boolean::New(info.Env(), a.is_alias_of(b));
}

// ---- autograd ---------------------------------------------------------------------------------

Napi::Value RequiresGrad(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), unwrapTensor(info[0], "requiresGrad").requires_grad());
}

Napi::Value SetRequiresGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor t = unwrapTensor(info[0], "requiresGrad_");
  LOCO_GUARD(env, "requiresGrad_", { t.set_requires_grad(info[1].As<Napi::Boolean>().Value()); })
  return env.Undefined();
}

Napi::Value IsLeaf(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), unwrapTensor(info[0], "isLeaf").is_leaf());
}

Napi::Value Grad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& g = unwrapTensor(info[0], "grad").grad();
  if (!g.defined()) return env.Null();
  return wrapTensor(env, g);
}

Napi::Value SetGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor t = unwrapTensor(info[0], "grad");
  LOCO_GUARD(env, "set grad", {
    if (info[1].IsNull() || info[1].IsUndefined()) {
      t.mutable_grad().reset();
    } else {
      t.mutable_grad() = unwrapTensor(info[1], "grad");
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
Napi::Value Backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto tensors = toTensorVector(info[0], "backward", false);
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
Napi::Value GradOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto outputs = toTensorVector(info[0], "autograd.grad outputs", false);
  auto inputs = toTensorVector(info[1], "autograd.grad inputs", false);
  auto gradOutputs = toTensorVector(info[2], "autograd.grad gradOutputs", true);
  bool retain = info[3].ToBoolean().Value();
  bool create = info[4].ToBoolean().Value();
  bool allowUnused = info[5].ToBoolean().Value();
  LOCO_GUARD(env, "autograd.grad", {
    auto result = torch::autograd::grad(outputs, inputs, gradOutputs, retain, create, allowUnused);
    auto out = Napi::Array::New(env, result.size());
    for (size_t i = 0; i < result.size(); i++) {
      out[i] = result[i].defined() ? wrapTensor(env, result[i]) : env.Null();
    }
    return out;
  })
}

Napi::Value SetGradEnabled(const Napi::CallbackInfo& info) {
  bool previous = c10::GradMode::is_enabled();
  c10::GradMode::set_enabled(info[0].ToBoolean().Value());
  return Napi::Boolean::New(info.Env(), previous);
}

Napi::Value IsGradEnabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), c10::GradMode::is_enabled());
}

// ---- random generators ------------------------------------------------------------------------

// Generators are few and long-lived; JavaScript refers to them by index (0 = the default one).
std::mutex generatorMutex;
std::vector<at::Generator> generators;

Napi::Value ManualSeed(const Napi::CallbackInfo& info) {
  auto seed = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
  return info.Env().Undefined();
}

Napi::Value NewGenerator(const Napi::CallbackInfo& info) {
  auto seed = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
  std::lock_guard<std::mutex> lock(generatorMutex);
  generators.push_back(at::detail::createCPUGenerator(seed));
  return Napi::Number::New(info.Env(), double(generators.size()));
}

}  // namespace

at::Generator generatorById(Napi::Env env, int64_t id) {
  if (id == 0) return at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generatorMutex);
  if (id < 0 || size_t(id) > generators.size()) throw Napi::RangeError::New(env, "unknown generator");
  return generators[id - 1];
}

namespace {

Napi::Value GeneratorSeed(const Napi::CallbackInfo& info) {
  auto gen = generatorById(info.Env(), info[0].As<Napi::Number>().Int64Value());
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value()));
  return info.Env().Undefined();
}

// The full state (Mersenne Twister + cached normal), so a resumed run draws the same numbers.
Napi::Value GeneratorGetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gen = generatorById(env, info[0].As<Napi::Number>().Int64Value());
  std::lock_guard<std::mutex> lock(gen.mutex());
  auto state = gen.get_state();
  auto buffer = Napi::ArrayBuffer::New(env, state.numel());
  std::memcpy(buffer.Data(), state.data_ptr(), state.numel());
  return buffer;
}

Napi::Value GeneratorSetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gen = generatorById(env, info[0].As<Napi::Number>().Int64Value());
  auto bytes = info[1].As<Napi::Uint8Array>();
  LOCO_GUARD(env, "generator.setState", {
    at::Tensor state = at::empty({int64_t(bytes.ByteLength())}, at::TensorOptions().dtype(at::kByte));
    std::memcpy(state.data_ptr(), bytes.Data(), bytes.ByteLength());
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  })
  return env.Undefined();
}

// ---- threads ----------------------------------------------------------------------------------

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  int n = info[0].As<Napi::Number>().Int32Value();
  if (n < 1) throw Napi::RangeError::New(info.Env(), "setNumThreads: expected a count of at least 1");
  at::set_num_threads(n);
  return info.Env().Undefined();
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), at::get_num_threads());
}

Napi::Value HardwareConcurrency(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), std::thread::hardware_concurrency());
}

// ---- interrupts ----
// Ctrl-C / SIGTERM for a long computation. Node runs JS signal listeners only between event-loop
// turns, so while a training step runs (seconds of native work) a listener cannot see a second
// Ctrl-C. This handler runs at once: the first signal prints a message and is counted (the trainer
// polls the count between steps, finishes the step and checkpoints); the second prints a message
// and ends the process with status 128 + signal, mid-step or mid-write (checkpoints are renamed
// into place atomically, so the last complete one stays intact).
std::atomic<int> interruptCount{0};
struct sigaction previousInt, previousTerm;
bool interruptInstalled = false;
char firstInterruptMessage[2048];
size_t firstInterruptLength = 0;
char secondInterruptMessage[2048];
size_t secondInterruptLength = 0;

void writeAll(const char* data, size_t length) {
  while (length > 0) {
    ssize_t n = write(STDERR_FILENO, data, length);
    if (n <= 0) return;
    data += n;
    length -= size_t(n);
  }
}

void onInterrupt(int sig) {
  const char* name = sig == SIGINT ? "\nSIGINT: " : "\nSIGTERM: ";
  if (interruptCount.fetch_add(1) == 0) {
    writeAll(name, std::strlen(name));
    writeAll(firstInterruptMessage, firstInterruptLength);
  } else {
    writeAll(name, std::strlen(name));
    writeAll(secondInterruptMessage, secondInterruptLength);
    _exit(128 + sig);
  }
}

size_t copyMessage(const Napi::Value& value, char* out, size_t capacity) {
  std::string text = value.IsString() ? value.As<Napi::String>().Utf8Value() : std::string();
  size_t n = std::min(text.size(), capacity);
  std::memcpy(out, text.data(), n);
  return n;
}

Napi::Value InstallInterruptHandler(const Napi::CallbackInfo& info) {
  if (interruptInstalled) throw Napi::Error::New(info.Env(), "installInterruptHandler: already installed");
  firstInterruptLength = copyMessage(info[0], firstInterruptMessage, sizeof firstInterruptMessage);
  secondInterruptLength = copyMessage(info[1], secondInterruptMessage, sizeof secondInterruptMessage);
  interruptCount.store(0);
  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_handler = onInterrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, &previousInt);
  sigaction(SIGTERM, &action, &previousTerm);
  interruptInstalled = true;
  return info.Env().Undefined();
}

Napi::Value RemoveInterruptHandler(const Napi::CallbackInfo& info) {
  if (interruptInstalled) {
    sigaction(SIGINT, &previousInt, nullptr);
    sigaction(SIGTERM, &previousTerm, nullptr);
    interruptInstalled = false;
  }
  return info.Env().Undefined();
}

Napi::Value InterruptCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), interruptCount.load());
}

Napi::Object InitExports(Napi::Env env, Napi::Object exports) {
  auto set = [&](const char* name, Napi::Function::Callback fn) {
    exports.Set(name, Napi::Function::New(env, fn, name));
  };
  set("dispose", Dispose);
  set("isDisposed", IsDisposed);
  set("fromBuffer", FromBuffer);
  set("toBuffer", ToBuffer);
  set("shape", Shape);
  set("strides", Strides);
  set("scalarType", ScalarTypeOf);
  set("numel", Numel);
  set("dim", Dim);
  set("isContiguous", IsContiguous);
  set("item", Item);
  set("isAliasOf", SamePointer);
  set("requiresGrad", RequiresGrad);
  set("setRequiresGrad", SetRequiresGrad);
  set("isLeaf", IsLeaf);
  set("grad", Grad);
  set("setGrad", SetGrad);
  set("backward", Backward);
  set("autogradGrad", GradOf);
  set("setGradEnabled", SetGradEnabled);
  set("isGradEnabled", IsGradEnabled);
  set("manualSeed", ManualSeed);
  set("newGenerator", NewGenerator);
  set("generatorSeed", GeneratorSeed);
  set("generatorGetState", GeneratorGetState);
  set("generatorSetState", GeneratorSetState);
  set("setNumThreads", SetNumThreads);
  set("getNumThreads", GetNumThreads);
  set("hardwareConcurrency", HardwareConcurrency);
  set("installInterruptHandler", InstallInterruptHandler);
  set("removeInterruptHandler", RemoveInterruptHandler);
  set("interruptCount", InterruptCount);
  registerOps(env, exports);
  registerAllocator(env, exports);
  registerDistributed(env, exports);
  return exports;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) { return InitExports(env, exports); }
}  // namespace loco

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return loco::Init(env, exports); }

NODE_API_MODULE(loco_native, InitAddon)
