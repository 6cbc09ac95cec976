// Random generators as handles: newGenerator returns an External owning an at::Generator, with the
// same lifetime as a tensor handle (dispose() releases it now, the External's finalizer is the
// safety net), so a program that drops generators does not accumulate them. `defaultGenerator()`
// returns a handle to libtorch's default generator, which is never released.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/empty.h>

#include <cstring>
#include <mutex>

#include "common.h"

namespace loco {

std::atomic<int64_t> liveGeneratorCount{0};

namespace {

// What a CPU generator holds (Mersenne Twister state and the cached normal), told to V8 so that
// many dropped generators push the GC to run their finalizers.
constexpr int64_t kGeneratorBytes = int64_t(sizeof(at::CPUGeneratorImpl));

bool releaseGenerator(GeneratorBox* box) {
  if (!box->generator.defined()) return false;
  box->generator = at::Generator();
  if (box->owned) liveGeneratorCount.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

void finalizeGenerator(node_api_basic_env env, void* data, void*) {
  auto* box = static_cast<GeneratorBox*>(static_cast<HandleHeader*>(data));
  if (box->owned && box->generator.defined()) {
    int64_t ignored;
    napi_adjust_external_memory(env, -kGeneratorBytes, &ignored);
  }
  releaseGenerator(box);
  delete box;
}

Napi::Value wrapGenerator(Napi::Env env, at::Generator generator, bool owned) {
  auto* box = new GeneratorBox();
  box->kind = HandleKind::Generator;
  box->generator = std::move(generator);
  box->owned = owned;
  if (owned) {
    liveGeneratorCount.fetch_add(1, std::memory_order_relaxed);
    Napi::MemoryManagement::AdjustExternalMemory(env, kGeneratorBytes);
  }
  napi_value result;
  napi_status status = napi_create_external(env, static_cast<HandleHeader*>(box), finalizeGenerator, nullptr, &result);
  NAPI_THROW_IF_FAILED(env, status, Napi::Value());
  return Napi::Value(env, result);
}

GeneratorBox* unwrapGeneratorBox(const Napi::Value& value, const char* what) {
  void* data = nullptr;
  if (napi_get_value_external(value.Env(), value, &data) != napi_ok ||
      static_cast<HandleHeader*>(data)->kind != HandleKind::Generator) {
    throw Napi::TypeError::New(value.Env(), std::string(what) + ": expected a Generator handle");
  }
  return static_cast<GeneratorBox*>(static_cast<HandleHeader*>(data));
}

uint64_t toSeed(const Napi::Value& value, const char* what) {
  if (!value.IsNumber()) throw Napi::TypeError::New(value.Env(), std::string(what) + ": expected a seed (a number)");
  double d = value.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d != double(int64_t(d))) {
    throw Napi::RangeError::New(value.Env(), std::string(what) + ": the seed must be a non-negative integer");
  }
  return static_cast<uint64_t>(d);
}

// ---- exports ----------------------------------------------------------------------------------

Napi::Value manualSeed(const Napi::CallbackInfo& info) {
  uint64_t seed = toSeed(info[0], "manualSeed");
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
  return info.Env().Undefined();
}

Napi::Value newGenerator(const Napi::CallbackInfo& info) {
  return wrapGenerator(info.Env(), at::detail::createCPUGenerator(toSeed(info[0], "newGenerator")), true);
}

Napi::Value defaultGenerator(const Napi::CallbackInfo& info) {
  return wrapGenerator(info.Env(), at::detail::getDefaultCPUGenerator(), false);
}

Napi::Value disposeGenerator(const Napi::CallbackInfo& info) {
  GeneratorBox* box = unwrapGeneratorBox(info[0], "disposeGenerator");
  if (!box->owned) throw Napi::Error::New(info.Env(), "disposeGenerator: the default generator cannot be disposed");
  bool released = releaseGenerator(box);
  if (released) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -kGeneratorBytes);
  return Napi::Boolean::New(info.Env(), released);
}

Napi::Value generatorSeed(const Napi::CallbackInfo& info) {
  auto gen = unwrapGenerator(info[0], "generatorSeed");
  uint64_t seed = toSeed(info[1], "generatorSeed");
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
  return info.Env().Undefined();
}

// The full state (Mersenne Twister + cached normal), so a resumed run draws the same numbers.
Napi::Value generatorGetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gen = unwrapGenerator(info[0], "generatorGetState");
  std::lock_guard<std::mutex> lock(gen.mutex());
  auto state = gen.get_state();
  auto buffer = Napi::ArrayBuffer::New(env, state.numel());
  std::memcpy(buffer.Data(), state.data_ptr(), state.numel());
  return buffer;
}

Napi::Value generatorSetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto gen = unwrapGenerator(info[0], "generatorSetState");
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, "generatorSetState: expected the state as a Uint8Array");
  }
  auto bytes = info[1].As<Napi::Uint8Array>();
  at::Tensor state = at::empty({int64_t(bytes.ByteLength())}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(state.data_ptr(), bytes.Data(), bytes.ByteLength());
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);  // a state of the wrong size is a c10::Error, turned into a JS error by the guard
  return env.Undefined();
}

}  // namespace

at::Generator unwrapGenerator(const Napi::Value& value, const char* what) {
  GeneratorBox* box = unwrapGeneratorBox(value, what);
  if (!box->generator.defined()) {
    throw Napi::Error::New(value.Env(), std::string(what) + ": generator was used after dispose()");
  }
  return box->generator;
}

std::vector<NativeExport> randomExports() {
  return {
      {"manualSeed", manualSeed},
      {"newGenerator", newGenerator},
      {"defaultGenerator", defaultGenerator},
      {"disposeGenerator", disposeGenerator},
      {"generatorSeed", generatorSeed},
      {"generatorGetState", generatorGetState},
      {"generatorSetState", generatorSetState},
  };
}

}  // namespace loco
