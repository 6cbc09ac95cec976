// Counts the operators a process runs, for comparing loco's training step with PyTorch's op by op.
//
// An LD_PRELOAD library: it registers a global RecordFunction callback with libtorch (the hook
// torch.profiler uses) and counts every ATen operator and autograd node by name and nesting depth,
// with the inclusive time of each; at exit it writes "depth name<TAB>count<TAB>microseconds" lines
// to $OPCOUNT_OUT. Both loco and python3-torch load the same libtorch_cpu.so, so the same library
// counts both. Counts are exact under any load; the times are only as good as the machine is quiet.
//
//   g++ -O2 -std=c++17 -shared -fPIC bench/opcount.cpp -o /tmp/libopcount.so -ltorch_cpu -lc10
//   LD_PRELOAD=/tmp/libopcount.so OPCOUNT_OUT=/tmp/loco.tsv node dist/bench/engine.js ...
//
// Per-step counts: run a measurement with N and with N+k steps and subtract (bench/README.md).
#include <ATen/record_function.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace {

struct Stat {
  long count = 0;
  double micros = 0;
};

std::mutex statsMutex;
auto* stats = new std::map<std::string, Stat>();  // never freed: read by the atexit handler
thread_local int depth = 0;

struct Started : at::ObserverContext {
  std::chrono::steady_clock::time_point start;
  int depth = 0;
};

std::unique_ptr<at::ObserverContext> onStart(const at::RecordFunction&) {
  auto started = std::make_unique<Started>();
  started->depth = depth++;
  started->start = std::chrono::steady_clock::now();
  return started;
}

void onEnd(const at::RecordFunction& fn, at::ObserverContext* context) {
  auto* started = static_cast<Started*>(context);
  depth--;
  double micros =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started->start).count();
  std::string key = std::to_string(std::min(started->depth, 3)) + " " + fn.name();
  std::lock_guard<std::mutex> lock(statsMutex);
  Stat& s = (*stats)[key];
  s.count++;
  s.micros += micros;
}

void writeCounts() {
  const char* path = std::getenv("OPCOUNT_OUT");
  if (path == nullptr) return;
  FILE* out = std::fopen(path, "w");
  if (out == nullptr) return;
  std::lock_guard<std::mutex> lock(statsMutex);
  for (const auto& [key, s] : *stats) std::fprintf(out, "%s\t%ld\t%.0f\n", key.c_str(), s.count, s.micros);
  std::fclose(out);
}

struct Install {
  Install() {
    at::addGlobalCallback(at::RecordFunctionCallback(onStart, onEnd)
                              .needsInputs(false)
                              .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
    std::atexit(writeCounts);
  }
} install;

}  // namespace
