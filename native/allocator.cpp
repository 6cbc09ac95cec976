// A counting CPU allocator: every byte libtorch allocates on the CPU goes through it, so the
// current and peak bytes held by tensors (activations kept for backward included) are exact.
// Local learning's memory claims are measured with these counters.
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <atomic>

#include "common.h"

namespace loco {
namespace {

// Each block carries its size in a header so the deleter can subtract it. 64 bytes keep the
// data pointer at libtorch's alignment.
constexpr size_t kHeader = 64;

std::atomic<int64_t> currentBytes{0};
std::atomic<int64_t> peakBytes{0};
std::atomic<int64_t> allocationCount{0};

void updatePeak(int64_t now) {
  int64_t peak = peakBytes.load(std::memory_order_relaxed);
  while (now > peak && !peakBytes.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

// Some libtorch paths require the context pointer to equal the data pointer, so the deleter
// receives the data pointer and steps back to the header.
void countingDelete(void* data) {
  if (data == nullptr) return;
  void* base = static_cast<char*>(data) - kHeader;
  auto size = *static_cast<int64_t*>(base);
  currentBytes.fetch_sub(size, std::memory_order_relaxed);
  c10::free_cpu(base);
}

struct CountingAllocator final : public c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) const override {
    void* base = c10::alloc_cpu(nbytes + kHeader);
    *static_cast<int64_t*>(base) = static_cast<int64_t>(nbytes);
    int64_t now = currentBytes.fetch_add(nbytes, std::memory_order_relaxed) + int64_t(nbytes);
    allocationCount.fetch_add(1, std::memory_order_relaxed);
    updatePeak(now);
    void* data = static_cast<char*>(base) + kHeader;
    return {data, data, &countingDelete, c10::Device(c10::DeviceType::CPU)};
  }
  // oneDNN allocates through raw_allocate/raw_deallocate, which need a plain deleter.
  c10::DeleterFnPtr raw_deleter() const override { return &countingDelete; }
};

CountingAllocator countingAllocator;

struct Installer {
  // Priority above the default (0) so libtorch's own registration cannot displace it.
  Installer() { c10::SetCPUAllocator(&countingAllocator, /*priority=*/100); }
};
Installer installer;

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto out = Napi::Object::New(env);
  out.Set("currentBytes", double(currentBytes.load()));
  out.Set("peakBytes", double(peakBytes.load()));
  out.Set("allocations", double(allocationCount.load()));
  out.Set("liveTensors", double(liveTensorCount.load()));
  return out;
}

// Sets the peak to the bytes held now, so the next peak is measured from this point.
Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  peakBytes.store(currentBytes.load());
  return info.Env().Undefined();
}

}  // namespace

void registerAllocator(Napi::Env env, Napi::Object exports) {
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats, "memoryStats"));
  exports.Set("resetPeakMemory", Napi::Function::New(env, ResetPeak, "resetPeakMemory"));
}

}  // namespace loco
