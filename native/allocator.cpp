// A counting CPU allocator: every byte libtorch allocates on the CPU goes through it, so the
// current and peak bytes held by tensors (activations kept for backward included) are exact.
// Local learning's memory claims are measured with these counters.
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "common.h"

namespace loco {
namespace {

// Each block carries its size in a header so the deleter can subtract it. 64 bytes keep the
// data pointer at libtorch's alignment.
constexpr size_t kHeader = 64;

std::atomic<int64_t> currentBytes{0};
std::atomic<int64_t> peakBytes{0};
std::atomic<int64_t> allocationCount{0};

// A cache of large blocks. glibc returns big blocks to the kernel on free (mmap'd blocks above
// its threshold, heap tops above its trim threshold), so every training step page-faults its whole
// working set in again (measured: ~720k faults and 1.4 s of system time per ResNet-18 step, in
// PyTorch too). Freed blocks of at least kCacheMin bytes are kept by size class (rounded up by at
// most 1/8) and handed out again: a request takes a cached block of its class or, failing that,
// of the next classes up to 1/kMaxSlack larger (so blocks cached in neighbouring classes are reused
// instead of new ones being faulted in). The byte counters above count tensor bytes only: cached
// blocks are not "held by libtorch".
//
// The cache holds at most LOCO_CACHE_MB when that is set; by default, 2048 MiB or 1.5x the most
// tensor bytes the process has held at once, whichever is more. A fixed 2 GiB would be smaller than
// one ResNet-50 step's working set at 224 px (~5.5 GiB at batch 32), which would then be
// page-faulted in again every step; with the default the cache keeps what a repeating training
// step needs, as jemalloc with decay off (PyTorch's tuned setting) keeps everything.
constexpr size_t kCacheMin = size_t(1) << 18;  // 256 KiB
constexpr size_t kMaxSlack = 4;                // a reused block is at most 1/kMaxSlack larger
std::mutex cacheMutex;
std::map<size_t, std::vector<void*>> cache;  // class size -> free blocks (base pointers)
size_t cachedBytes = 0;
std::atomic<int64_t> highWaterBytes{0};  // most tensor bytes held at once (never reset)
const char* cacheLimitEnv = std::getenv("LOCO_CACHE_MB");
const size_t fixedCacheLimit =
    size_t(cacheLimitEnv ? std::max(0LL, std::atoll(cacheLimitEnv)) : 2048) << 20;

size_t cacheLimit() {
  if (cacheLimitEnv != nullptr) return fixedCacheLimit;
  auto adaptive = size_t(highWaterBytes.load(std::memory_order_relaxed)) * 3 / 2;
  return std::max(fixedCacheLimit, adaptive);
}

size_t sizeClass(size_t total) {
  if (total < kCacheMin) return total;
  size_t p = size_t(1) << (63 - __builtin_clzll(total));  // power of two <= total
  size_t step = std::max<size_t>(p / 8, 4096);
  return (total + step - 1) / step * step;
}

struct Header {
  int64_t nbytes;
  int64_t blockSize;
};

void raiseTo(std::atomic<int64_t>& mark, int64_t now) {
  int64_t seen = mark.load(std::memory_order_relaxed);
  while (now > seen && !mark.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
}

void updatePeak(int64_t now) {
  raiseTo(peakBytes, now);
  raiseTo(highWaterBytes, now);
}

// Some libtorch paths require the context pointer to equal the data pointer, so the deleter
// receives the data pointer and steps back to the header.
void countingDelete(void* data) {
  if (data == nullptr) return;
  void* base = static_cast<char*>(data) - kHeader;
  auto* h = static_cast<Header*>(base);
  currentBytes.fetch_sub(h->nbytes, std::memory_order_relaxed);
  size_t block = size_t(h->blockSize);
  if (block >= kCacheMin) {
    std::lock_guard<std::mutex> lock(cacheMutex);
    if (cachedBytes + block <= cacheLimit()) {
      cache[block].push_back(base);
      cachedBytes += block;
      return;
    }
  }
  c10::free_cpu(base);
}

struct CountingAllocator final : public c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) const override {
    size_t block = sizeClass(nbytes + kHeader);
    void* base = nullptr;
    if (block >= kCacheMin) {
      std::lock_guard<std::mutex> lock(cacheMutex);
      // The smallest non-empty class from `block` up to block + block/kMaxSlack.
      const size_t largest = block + block / kMaxSlack;
      for (auto it = cache.lower_bound(block); it != cache.end() && it->first <= largest; ++it) {
        if (it->second.empty()) continue;
        base = it->second.back();
        it->second.pop_back();
        block = it->first;
        cachedBytes -= block;
        break;
      }
    }
    if (base == nullptr) base = c10::alloc_cpu(block);
    auto* h = static_cast<Header*>(base);
    h->nbytes = static_cast<int64_t>(nbytes);
    h->blockSize = static_cast<int64_t>(block);
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

Napi::Value memoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto out = Napi::Object::New(env);
  out.Set("currentBytes", double(currentBytes.load()));
  out.Set("peakBytes", double(peakBytes.load()));
  out.Set("allocations", double(allocationCount.load()));
  out.Set("liveTensors", double(liveTensorCount.load()));
  out.Set("liveGenerators", double(liveGeneratorCount.load()));
  {
    std::lock_guard<std::mutex> lock(cacheMutex);
    out.Set("cachedBytes", double(cachedBytes));
  }
  return out;
}

// Returns every cached block to the system.
Napi::Value emptyCache(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(cacheMutex);
  for (auto& [size, blocks] : cache) {
    for (void* base : blocks) c10::free_cpu(base);
    blocks.clear();
  }
  cache.clear();
  cachedBytes = 0;
  return info.Env().Undefined();
}

// Sets the peak to the bytes held now, so the next peak is measured from this point.
Napi::Value resetPeakMemory(const Napi::CallbackInfo& info) {
  peakBytes.store(currentBytes.load());
  return info.Env().Undefined();
}

}  // namespace

std::vector<NativeExport> allocatorExports() {
  return {
      {"memoryStats", memoryStats},
      {"resetPeakMemory", resetPeakMemory},
      {"emptyCache", emptyCache},
  };
}

}  // namespace loco
