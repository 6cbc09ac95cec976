// Counts and times the operators a process runs, for comparing loco's training step with PyTorch's
// op by op (`npm run bench:engine-ops`, bench/engine_ops.ts, builds and preloads it).
//
// An LD_PRELOAD library: it registers a global RecordFunction callback with libtorch (the hook
// torch.profiler uses) and records every ATen operator and autograd node by phase, nesting depth
// and name: the count, and the inclusive and self (children excluded) wall time, CPU time of the
// calling thread and minor page faults of that thread. Both loco and python3-torch load the same
// libtorch_cpu.so, so the same library measures both. Counts are exact under any load; CPU times
// and faults are steady under load; wall times are only as good as the machine is quiet.
//
// Phases: the measured program marks them by calling `linspace` (an operator neither step uses) at
// the top level: before the forward, before backward, before the optimizer step and after it. The
// markers cycle through the phases outside -> forward -> backward -> optimizer -> outside. The
// first OPCOUNT_SKIP_STEPS steps (warm-up) are not recorded. Each phase's total (wall, CPU,
// faults, from marker to marker) is recorded too, so the time outside every operator (JS or
// Python, N-API, frees, the autograd engine between nodes) is the total less the top-level ops.
//
// At exit it writes tab-separated lines to $OPCOUNT_OUT:
//   P  phase  steps  wall_us  cpu_us  minflt
//   O  phase  depth  op|node  name  count  wall_incl_us  wall_self_us  cpu_incl_us  cpu_self_us
//      minflt_incl  minflt_self
// (depth: 0 top level, 1, 2, 3 = 3 or deeper). OPCOUNT_CPU=0 skips the CPU clock and the fault
// counter (two system calls per event boundary). By hand:
//
//   g++ -O2 -std=c++17 -shared -fPIC bench/opcount.cpp -o /tmp/libopcount.so -ltorch_cpu -lc10
//   LD_PRELOAD=/tmp/libopcount.so OPCOUNT_OUT=/tmp/loco.tsv OPCOUNT_SKIP_STEPS=1 node ...
#include <ATen/record_function.h>

#include <sys/resource.h>
#include <time.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace {

const char* const kPhases[] = {"outside", "forward", "backward", "optimizer"};
const char* const kMarker = "aten::linspace";

struct Sample {
  double wall = 0;  // microseconds
  double cpu = 0;   // microseconds of this thread's CPU time
  long faults = 0;  // minor page faults of this thread
};

const bool withCpu = [] {
  const char* env = std::getenv("OPCOUNT_CPU");
  return env == nullptr || std::strcmp(env, "0") != 0;
}();
const long skipMarkers = [] {
  const char* env = std::getenv("OPCOUNT_SKIP_STEPS");
  return env == nullptr ? 0L : 4L * std::max(0L, std::atol(env));
}();

Sample now() {
  Sample s;
  s.wall = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
  if (withCpu) {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    s.cpu = double(ts.tv_sec) * 1e6 + double(ts.tv_nsec) / 1e3;
    rusage usage{};
    getrusage(RUSAGE_THREAD, &usage);
    s.faults = usage.ru_minflt;
  }
  return s;
}

Sample minus(const Sample& a, const Sample& b) { return {a.wall - b.wall, a.cpu - b.cpu, a.faults - b.faults}; }
void addTo(Sample& to, const Sample& d) {
  to.wall += d.wall;
  to.cpu += d.cpu;
  to.faults += d.faults;
}

struct Stat {
  long count = 0;
  Sample inclusive;
  Sample self;
};

struct PhaseTotal {
  long steps = 0;
  Sample total;
};

std::mutex statsMutex;
auto* stats = new std::map<std::string, Stat>();  // never freed: read by the atexit handler
std::array<PhaseTotal, 4> phaseTotals;
long markers = 0;  // markers seen; the phase is markers % 4
Sample lastMark;

struct Frame : at::ObserverContext {
  Frame* parent = nullptr;
  int depth = 0;
  bool ignored = false;  // a marker, or inside one
  Sample start;
  Sample children;  // inclusive totals of the direct children
};
thread_local Frame* top = nullptr;

bool recording() { return markers >= skipMarkers; }

// Closes the phase that ends at this marker and opens the next one.
void onMarker() {
  Sample t = now();
  std::lock_guard<std::mutex> lock(statsMutex);
  int phase = int(markers % 4);
  if (recording() && markers > 0) {
    addTo(phaseTotals[phase].total, minus(t, lastMark));
    phaseTotals[phase].steps++;
  }
  markers++;
  lastMark = t;
}

std::unique_ptr<at::ObserverContext> onStart(const at::RecordFunction& fn) {
  auto frame = std::make_unique<Frame>();
  frame->parent = top;
  frame->depth = top == nullptr ? 0 : top->depth + 1;
  frame->ignored = top != nullptr && top->ignored;
  if (frame->depth == 0 && std::strcmp(fn.name(), kMarker) == 0) {
    frame->ignored = true;
    onMarker();
  }
  top = frame.get();
  frame->start = now();
  return frame;
}

void onEnd(const at::RecordFunction& fn, at::ObserverContext* context) {
  Sample end = now();
  auto* frame = static_cast<Frame*>(context);
  top = frame->parent;
  Sample inclusive = minus(end, frame->start);
  if (frame->parent != nullptr) addTo(frame->parent->children, inclusive);
  if (frame->ignored) return;
  std::lock_guard<std::mutex> lock(statsMutex);
  if (!recording()) return;
  bool node = fn.scope() == at::RecordScope::BACKWARD_FUNCTION;
  std::string key = std::string(kPhases[markers % 4]) + "\t" + std::to_string(std::min(frame->depth, 3)) + "\t" +
                    (node ? "node" : "op") + "\t" + fn.name();
  Stat& s = (*stats)[key];
  s.count++;
  addTo(s.inclusive, inclusive);
  addTo(s.self, minus(inclusive, frame->children));
}

void writeStats() {
  const char* path = std::getenv("OPCOUNT_OUT");
  if (path == nullptr) return;
  FILE* out = std::fopen(path, "w");
  if (out == nullptr) return;
  std::lock_guard<std::mutex> lock(statsMutex);
  for (int p = 0; p < 4; p++) {
    const PhaseTotal& t = phaseTotals[p];
    std::fprintf(out, "P\t%s\t%ld\t%.1f\t%.1f\t%ld\n", kPhases[p], t.steps, t.total.wall, t.total.cpu,
                 t.total.faults);
  }
  for (const auto& [key, s] : *stats) {
    std::fprintf(out, "O\t%s\t%ld\t%.1f\t%.1f\t%.1f\t%.1f\t%ld\t%ld\n", key.c_str(), s.count, s.inclusive.wall,
                 s.self.wall, s.inclusive.cpu, s.self.cpu, s.inclusive.faults, s.self.faults);
  }
  std::fclose(out);
}

struct Install {
  Install() {
    at::addGlobalCallback(at::RecordFunctionCallback(onStart, onEnd)
                              .needsInputs(false)
                              .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
    std::atexit(writeStats);
  }
} install;

}  // namespace
