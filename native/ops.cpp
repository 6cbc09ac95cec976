// Generic access to every ATen operator through the c10 dispatcher.
//
// Instead of one hand-written binding per op, JavaScript resolves an operator by its schema name
// and overload once (resolveOp), then calls it with positional arguments (callOp). The argument
// kinds are read from the schema at resolve time, so a call only converts values. The dispatcher
// routes through the Autograd key, so every op records its graph exactly as in PyTorch.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/jit_type.h>
#include <ATen/core/stack.h>

#include <array>
#include <mutex>
#include <sstream>

#include "common.h"

namespace loco {
namespace {

enum class Kind : uint8_t {
  Tensor,
  Int,
  Float,
  Bool,
  Scalar,
  String,
  Device,
  Generator,
  IntList,
  FloatList,
  BoolList,
  TensorList,
  OptionalTensorList,
  Unsupported,
};

struct ArgSpec {
  Kind kind;
  bool optional;
  int fixedLength;  // N of `int[N]`: a single number is repeated N times, as PyTorch does
  std::string name;
  std::string typeText;
  c10::optional<c10::IValue> defaultValue;
};

struct OpEntry {
  c10::OperatorHandle handle;
  std::string label;
  std::vector<ArgSpec> args;
};

// Resolved operators, appended once and never moved: worker threads read entries while another
// thread may resolve a new one, so the table is a fixed array of atomic pointers.
constexpr size_t kMaxOps = 8192;
std::array<std::atomic<OpEntry*>, kMaxOps> opTable{};
std::atomic<size_t> opCount{0};
std::mutex resolveMutex;

Kind kindOfElement(const c10::TypePtr& type) {
  switch (type->kind()) {
    case c10::TypeKind::TensorType:
      return Kind::Tensor;
    case c10::TypeKind::IntType:
    case c10::TypeKind::SymIntType:
      return Kind::Int;
    case c10::TypeKind::FloatType:
      return Kind::Float;
    case c10::TypeKind::BoolType:
      return Kind::Bool;
    case c10::TypeKind::NumberType:
      return Kind::Scalar;
    case c10::TypeKind::StringType:
      return Kind::String;
    case c10::TypeKind::DeviceObjType:
      return Kind::Device;
    case c10::TypeKind::GeneratorType:
      return Kind::Generator;
    case c10::TypeKind::ListType: {
      const auto& elem = type->castRaw<c10::ListType>()->getElementType();
      switch (elem->kind()) {
        case c10::TypeKind::IntType:
        case c10::TypeKind::SymIntType:
          return Kind::IntList;
        case c10::TypeKind::FloatType:
          return Kind::FloatList;
        case c10::TypeKind::BoolType:
          return Kind::BoolList;
        case c10::TypeKind::TensorType:
          return Kind::TensorList;
        case c10::TypeKind::OptionalType:
          if (elem->castRaw<c10::OptionalType>()->getElementType()->kind() ==
              c10::TypeKind::TensorType) {
            return Kind::OptionalTensorList;
          }
          return Kind::Unsupported;
        default:
          return Kind::Unsupported;
      }
    }
    default:
      return Kind::Unsupported;
  }
}

std::string describe(const Napi::Value& v) {
  if (v.IsExternal()) return "a native handle";
  switch (v.Type()) {
    case napi_undefined:
      return "undefined";
    case napi_null:
      return "null";
    case napi_boolean:
      return "a boolean";
    case napi_number:
      return "the number " + v.ToString().Utf8Value();
    case napi_string:
      return "a string";
    case napi_object:
      return v.IsArray() ? "an array" : "an object";
    default:
      return "a value of another type";
  }
}

[[noreturn]] void badArgument(Napi::Env env, const OpEntry& op, const ArgSpec& arg,
                              const Napi::Value& v, const std::string& expected) {
  throw Napi::TypeError::New(env, op.label + ": argument '" + arg.name + "' (" + arg.typeText +
                                      ") expected " + expected + ", got " + describe(v));
}

int64_t toInt(Napi::Env env, const OpEntry& op, const ArgSpec& arg, const Napi::Value& v) {
  if (!v.IsNumber()) badArgument(env, op, arg, v, "an integer");
  double d = v.As<Napi::Number>().DoubleValue();
  auto i = static_cast<int64_t>(d);
  if (static_cast<double>(i) != d) badArgument(env, op, arg, v, "an integer");
  return i;
}

double toDouble(Napi::Env env, const OpEntry& op, const ArgSpec& arg, const Napi::Value& v) {
  if (!v.IsNumber()) badArgument(env, op, arg, v, "a number");
  return v.As<Napi::Number>().DoubleValue();
}

c10::IValue toIValue(Napi::Env env, const OpEntry& op, const ArgSpec& arg, const Napi::Value& v) {
  switch (arg.kind) {
    case Kind::Tensor:
      if (!v.IsExternal()) badArgument(env, op, arg, v, "a Tensor");
      {
        // No string building on the hot path: the message is made only on error.
        TensorBox* box = unwrapBox(v, "callOp");
        if (!box->tensor.defined()) {
          throw Napi::Error::New(env, op.label + ": argument '" + arg.name + "': tensor was used after dispose()");
        }
        return box->tensor;
      }
    case Kind::Int:
      return toInt(env, op, arg, v);
    case Kind::Float:
      return toDouble(env, op, arg, v);
    case Kind::Bool:
      if (!v.IsBoolean()) badArgument(env, op, arg, v, "a boolean");
      return v.As<Napi::Boolean>().Value();
    case Kind::Scalar: {
      // JavaScript has one number type: integral values become integer scalars (so int tensors
      // stay int, as `x + 2` does in Python), others become doubles.
      if (v.IsBoolean()) return c10::Scalar(v.As<Napi::Boolean>().Value());
      double d = toDouble(env, op, arg, v);
      auto i = static_cast<int64_t>(d);
      if (static_cast<double>(i) == d && std::abs(d) < 9.0e15) return c10::Scalar(i);
      return c10::Scalar(d);
    }
    case Kind::String:
      if (!v.IsString()) badArgument(env, op, arg, v, "a string");
      return v.As<Napi::String>().Utf8Value();
    case Kind::Device:
      if (!v.IsString()) badArgument(env, op, arg, v, "a device name such as 'cpu'");
      return parseDevice(env, v.As<Napi::String>().Utf8Value(), op.label);
    case Kind::Generator:
      if (!v.IsExternal()) badArgument(env, op, arg, v, "a Generator");
      return c10::IValue(unwrapGenerator(v, op.label.c_str()));
    case Kind::IntList: {
      std::vector<int64_t> values;
      if (v.IsNumber() && arg.fixedLength > 0) {
        values.assign(arg.fixedLength, toInt(env, op, arg, v));
      } else {
        if (!v.IsArray()) badArgument(env, op, arg, v, "an array of integers");
        auto array = v.As<Napi::Array>();
        values.reserve(array.Length());
        for (uint32_t i = 0; i < array.Length(); i++) values.push_back(toInt(env, op, arg, array[i]));
      }
      return c10::IValue(values);
    }
    case Kind::FloatList: {
      if (!v.IsArray()) badArgument(env, op, arg, v, "an array of numbers");
      auto array = v.As<Napi::Array>();
      std::vector<double> values;
      for (uint32_t i = 0; i < array.Length(); i++) values.push_back(toDouble(env, op, arg, array[i]));
      return c10::IValue(values);
    }
    case Kind::BoolList: {
      if (!v.IsArray()) badArgument(env, op, arg, v, "an array of booleans");
      auto array = v.As<Napi::Array>();
      c10::List<bool> values;
      for (uint32_t i = 0; i < array.Length(); i++) {
        Napi::Value e = array[i];
        if (!e.IsBoolean()) badArgument(env, op, arg, e, "a boolean element");
        values.push_back(e.As<Napi::Boolean>().Value());
      }
      return c10::IValue(values);
    }
    case Kind::TensorList: {
      if (!v.IsArray()) badArgument(env, op, arg, v, "an array of Tensors");
      auto array = v.As<Napi::Array>();
      c10::List<at::Tensor> values;
      values.reserve(array.Length());
      for (uint32_t i = 0; i < array.Length(); i++) {
        Napi::Value e = array[i];
        if (!e.IsExternal()) badArgument(env, op, arg, e, "a Tensor element");
        values.push_back(unwrapTensor(e, arg.name.c_str()));
      }
      return c10::IValue(values);
    }
    case Kind::OptionalTensorList: {
      if (!v.IsArray()) badArgument(env, op, arg, v, "an array of Tensors or nulls");
      auto array = v.As<Napi::Array>();
      c10::List<c10::optional<at::Tensor>> values;
      for (uint32_t i = 0; i < array.Length(); i++) {
        Napi::Value e = array[i];
        if (e.IsNull() || e.IsUndefined()) {
          values.push_back(c10::nullopt);
        } else {
          if (!e.IsExternal()) badArgument(env, op, arg, e, "a Tensor or null element");
          values.push_back(unwrapTensor(e, arg.name.c_str()));
        }
      }
      return c10::IValue(values);
    }
    case Kind::Unsupported:
      break;
  }
  throw Napi::TypeError::New(env, op.label + ": argument '" + arg.name + "' has type " +
                                      arg.typeText + ", which loco cannot pass yet");
}

Napi::Value fromIValue(Napi::Env env, c10::IValue&& v) {
  if (v.isTensor()) {
    at::Tensor t = std::move(v).toTensor();
    if (!t.defined()) return env.Null();
    return wrapTensor(env, std::move(t));
  }
  if (v.isNone()) return env.Undefined();
  if (v.isInt()) return Napi::Number::New(env, static_cast<double>(v.toInt()));
  if (v.isDouble()) return Napi::Number::New(env, v.toDouble());
  if (v.isBool()) return Napi::Boolean::New(env, v.toBool());
  if (v.isString()) return Napi::String::New(env, v.toStringRef());
  if (v.isTensorList()) {
    auto list = v.toTensorList();
    auto out = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); i++) {
      at::Tensor t = list.get(i);
      out[i] = t.defined() ? wrapTensor(env, std::move(t)) : env.Null();
    }
    return out;
  }
  if (v.isIntList()) {
    auto list = v.toIntVector();
    auto out = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); i++) out[i] = Napi::Number::New(env, double(list[i]));
    return out;
  }
  if (v.isTuple()) {
    auto elements = v.toTupleRef().elements();
    auto out = Napi::Array::New(env, elements.size());
    for (size_t i = 0; i < elements.size(); i++) out[i] = fromIValue(env, c10::IValue(elements[i]));
    return out;
  }
  if (v.isList()) {
    auto list = v.toList();
    auto out = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); i++) out[i] = fromIValue(env, list.get(i));
    return out;
  }
  throw Napi::Error::New(env, std::string("cannot return a value of type ") + v.tagKind());
}

OpEntry& entryAt(Napi::Env env, const Napi::Value& id, const char* what) {
  if (!id.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + ": operator id must be a number");
  double d = id.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d != double(uint32_t(d)) || uint32_t(d) >= opCount.load(std::memory_order_acquire)) {
    throw Napi::RangeError::New(env, std::string(what) + ": unknown operator id " + id.ToString().Utf8Value());
  }
  auto index = uint32_t(d);
  return *opTable[index].load(std::memory_order_acquire);
}

// Runs the operator; leaves its results on `stack`.
void runOp(const Napi::CallbackInfo& info, OpEntry& op, torch::jit::Stack& stack) {
  Napi::Env env = info.Env();
  const size_t given = info.Length() - 1;
  if (given > op.args.size()) {
    throw Napi::TypeError::New(env, op.label + ": takes " + std::to_string(op.args.size()) +
                                        " arguments, got " + std::to_string(given));
  }
  stack.reserve(op.args.size());
  for (size_t i = 0; i < op.args.size(); i++) {
    const ArgSpec& arg = op.args[i];
    Napi::Value v = i < given ? info[i + 1] : env.Undefined();
    if (v.IsUndefined() || v.IsNull()) {
      if (v.IsUndefined() && arg.defaultValue.has_value()) {
        stack.push_back(*arg.defaultValue);
      } else if (arg.optional) {
        stack.emplace_back();
      } else {
        throw Napi::TypeError::New(env, op.label + ": argument '" + arg.name + "' (" +
                                            arg.typeText + ") is required");
      }
      continue;
    }
    stack.push_back(toIValue(env, op, arg, v));
  }
  LOCO_GUARD(env, op.label, op.handle.callBoxed(stack);)
}

Napi::Value resolveOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "resolveOp: expected an operator name");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  std::string overload = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  std::string label = overload.empty() ? name : name + "." + overload;
  std::lock_guard<std::mutex> lock(resolveMutex);
  auto handle = c10::Dispatcher::singleton().findSchema({name, overload});
  if (!handle.has_value()) throw Napi::Error::New(env, "unknown operator " + label);
  auto entry = std::make_unique<OpEntry>(OpEntry{*handle, label, {}});
  for (const auto& a : handle->schema().arguments()) {
    c10::TypePtr type = a.type();
    bool optional = false;
    if (type->kind() == c10::TypeKind::OptionalType) {
      optional = true;
      type = type->castRaw<c10::OptionalType>()->getElementType();
    }
    ArgSpec spec{kindOfElement(type), optional, a.N().value_or(0), a.name(), a.type()->str(),
                 a.default_value()};
    entry->args.push_back(std::move(spec));
  }
  size_t index = opCount.load();
  if (index >= kMaxOps) throw Napi::Error::New(env, "too many resolved operators");
  opTable[index].store(entry.release(), std::memory_order_release);
  opCount.store(index + 1, std::memory_order_release);
  return Napi::Number::New(env, double(index));
}

Napi::Value callOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OpEntry& op = entryAt(env, info[0], "callOp");
  torch::jit::Stack stack;
  runOp(info, op, stack);
  if (stack.size() == 1) return fromIValue(env, std::move(stack[0]));
  auto out = Napi::Array::New(env, stack.size());
  for (size_t i = 0; i < stack.size(); i++) out[i] = fromIValue(env, std::move(stack[i]));
  return out;
}

// For in-place ops: the result aliases an argument the caller already holds, so no new handle.
Napi::Value callOpVoid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OpEntry& op = entryAt(env, info[0], "callOpVoid");
  torch::jit::Stack stack;
  runOp(info, op, stack);
  return env.Undefined();
}

Napi::Value opSchema(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OpEntry& op = entryAt(env, info[0], "opSchema");
  std::ostringstream text;
  text << op.handle.schema();
  return Napi::String::New(env, text.str());
}

}  // namespace

std::vector<NativeExport> opsExports() {
  return {
      {"resolveOp", resolveOp},
      {"callOp", callOp},
      {"callOpVoid", callOpVoid},
      {"opSchema", opSchema},
  };
}

}  // namespace loco
