// Devices: which ones this libtorch build can place tensors on, and the one parser every device
// name goes through, so "cuda" on a CPU-only build is a clear error naming what is available
// (rather than a failure deep inside an operator). loco runs on the CPU; this keeps the code
// device-generic for a libtorch built with another backend.
#include <ATen/Context.h>

#include <algorithm>

#include "common.h"

namespace loco {
namespace {

std::vector<std::string> availableDeviceTypes() {
  std::vector<std::string> out{"cpu"};
  if (at::hasCUDA()) out.push_back("cuda");
  if (at::hasMPS()) out.push_back("mps");
  return out;
}

std::string joined(const std::vector<std::string>& names) {
  std::string text;
  for (const auto& n : names) text += (text.empty() ? "" : ", ") + n;
  return text;
}

Napi::Value availableDevices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto names = availableDeviceTypes();
  auto out = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); i++) out[i] = Napi::String::New(env, names[i]);
  return out;
}

// checkDevice(name): the canonical name of an available device ("cpu", "cuda:0"), or an error.
Napi::Value checkDevice(const Napi::CallbackInfo& info) {
  if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), "checkDevice: expected a device name such as 'cpu'");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  return Napi::String::New(info.Env(), parseDevice(info.Env(), name, "checkDevice").str());
}

}  // namespace

c10::Device parseDevice(Napi::Env env, const std::string& name, const std::string& context) {
  auto available = availableDeviceTypes();
  c10::optional<c10::Device> device;
  try {
    device = c10::Device(name);
  } catch (const c10::Error&) {
    throw Napi::Error::New(env, context + ": unknown device '" + name + "' (available: " + joined(available) + ")");
  }
  std::string type = c10::DeviceTypeName(device->type(), /*lower_case=*/true);
  bool ok = std::find(available.begin(), available.end(), type) != available.end();
  if (ok && device->has_index() && device->type() == c10::DeviceType::CUDA) {
    ok = device->index() < int(at::getNumGPUs());
  }
  if (ok && device->has_index() && device->type() == c10::DeviceType::CPU) ok = device->index() == 0;
  if (!ok) {
    throw Napi::Error::New(env, context + ": device '" + name +
                                    "' is not available in this libtorch build (available: " + joined(available) + ")");
  }
  // "cpu:0" is the CPU: one canonical name, so a tensor's device compares equal to it.
  return device->type() == c10::DeviceType::CPU ? c10::Device(c10::DeviceType::CPU) : *device;
}

std::vector<NativeExport> deviceExports() {
  return {
      {"availableDevices", availableDevices},
      {"checkDevice", checkDevice},
  };
}

}  // namespace loco
