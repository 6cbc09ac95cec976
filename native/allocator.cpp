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

#include <sys/mman.h>

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
  int64_t mapped;  // 1: the block is its own huge-page-aligned mapping (freed with munmap)
};

// Blocks of 2 MiB or more get their own mapping, aligned to 2 MiB and advised for transparent
// huge pages (MADV_HUGEPAGE; Linux's default THP mode, "madvise", gives them to no one else). A
// step's large tensors (activations, their gradients, oneDNN scratch) then sit on 2 MiB pages: fewer
// TLB misses in every kernel that streams through them, and a block cached for reuse keeps its
// huge pages. LOCO_HUGE_PAGES=0 turns this off (blocks come from malloc, as smaller ones do).
constexpr size_t kHugePage = size_t(2) << 20;
const bool hugePages = [] {
  const char* env = std::getenv("LOCO_HUGE_PAGES");
  return env == nullptr || std::string(env) != "0";
}();

void* allocBlock(size_t block, bool& mapped) {
  mapped = hugePages && block >= kHugePage;
  if (!mapped) return c10::alloc_cpu(block);
  // Over-map by one huge page, then trim the head and tail so the block starts on a 2 MiB boundary.
  size_t span = block + kHugePage;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TORCH_CHECK(raw != MAP_FAILED, "DefaultCPUAllocator: can't allocate memory: you tried to allocate ", block, " bytes.");
  auto start = reinterpret_cast<uintptr_t>(raw);
  uintptr_t aligned = (start + kHugePage - 1) & ~(uintptr_t(kHugePage) - 1);
  if (aligned > start) munmap(raw, aligned - start);
  size_t tail = start + span - (aligned + block);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + block), tail);
  madvise(reinterpret_cast<void*>(aligned), block, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(aligned);
}

void freeBlock(void* base) {
  auto* h = static_cast<Header*>(base);
  if (h->mapped) {
    munmap(base, size_t(h->blockSize));
  } else {
    c10::free_cpu(base);
  }
}

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
  freeBlock(base);
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
    if (base == nullptr) {
      bool mapped = false;
      base = allocBlock(block, mapped);
      static_cast<Header*>(base)->mapped = mapped ? 1 : 0;
    }  // a cached block keeps the `mapped` flag it was created with
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
    for (void* base : blocks) freeBlock(base);
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
