// Process groups on libtorch's own c10d: a TCPStore for rendezvous and ProcessGroupGloo for the
// collectives. Gloo runs every operation on its own threads; JavaScript gets a Promise per
// operation, settled from a waiter thread through a ThreadSafeFunction, so Node's main thread never
// blocks on a peer. The two differentiable collectives (used inside forward/backward, which are
// synchronous) wait on the calling thread, but never longer than the operation's timeout.
// Heartbeats and the diagnosis of failures: distributed_health.cpp.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupWrapper.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <ATen/ops/cat.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <pthread.h>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "common.h"
#include "distributed.h"

namespace loco {
namespace distributed {
namespace {

// ---- promises settled from other threads ----------------------------------------------------

struct Settlement {
  Napi::Promise::Deferred deferred;
  std::string error;                                 // empty on success
  std::function<Napi::Value(Napi::Env)> makeResult;  // runs on the main thread; may be empty
};

// Threads that wait for operations, reused: a thread started (and ended) per operation cost a
// clone, its stack's faults and an madvise on exit for each of the 3 messages of a stage-parallel
// step, on each rank. Each job gets a thread of its own at once (an idle one, else a new one), so
// a job blocked on its peer never delays another's settlement; threads never exit (the pool
// holds as many as operations were ever pending at once, a handful).
class WaiterPool {
 public:
  void run(std::function<void()> job) {
    std::unique_lock<std::mutex> lock(mutex_);
    jobs_.push_back(std::move(job));
    if (jobs_.size() <= idle_) {
      wake_.notify_one();
      return;
    }
    lock.unlock();
    std::thread([this] { serve(); }).detach();
  }

 private:
  void serve() {
    pthread_setname_np(pthread_self(), "loco-waiter");  // for top -H, perf and bench/thread-cpu.ts
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      if (jobs_.empty()) {
        idle_++;
        wake_.wait(lock, [this] { return !jobs_.empty(); });
        idle_--;
      }
      {
        std::function<void()> job = std::move(jobs_.front());
        jobs_.pop_front();
        lock.unlock();
        job();
      }  // the job (and the group it may hold the last reference to) is freed outside the lock
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  size_t idle_ = 0;
};

// Never destroyed: its threads may still wait on it while the process exits.
WaiterPool& waiters() {
  static auto* pool = new WaiterPool();
  return *pool;
}

// Runs `work` on a waiter thread; the Promise settles with makeResult's value (or undefined) or
// rejects with an Error carrying the message `work` returned. `work` must not throw.
Napi::Promise settleOffThread(Napi::Env env,
                              std::function<std::string(std::function<Napi::Value(Napi::Env)>&)> work) {
  auto* settlement = new Settlement{Napi::Promise::Deferred::New(env), "", nullptr};
  Napi::Promise promise = settlement->deferred.Promise();
  auto noop = Napi::Function::New(env, [](const Napi::CallbackInfo&) {});
  auto tsfn = Napi::ThreadSafeFunction::New(env, noop, "loco.distributed", 0, 1);
  waiters().run([tsfn, settlement, work]() mutable {
    settlement->error = work(settlement->makeResult);
    napi_status status = tsfn.BlockingCall(settlement, [](Napi::Env env, Napi::Function, Settlement* s) {
      if (!s->error.empty()) {
        s->deferred.Reject(Napi::Error::New(env, s->error).Value());
      } else {
        try {
          s->deferred.Resolve(s->makeResult ? s->makeResult(env) : env.Undefined());
        } catch (const Napi::Error& e) {
          s->deferred.Reject(e.Value());
        }
      }
      delete s;
    });
    if (status != napi_ok) delete settlement;  // the environment is shutting down
    tsfn.Release();
  });
  return promise;
}

// ---- argument helpers ------------------------------------------------------------------------

// A process-group handle: tagged like tensor and generator handles, so that one kind can never be
// read as another.
struct GroupBox : HandleHeader {
  std::shared_ptr<Group> group;
};

GroupBox* unwrapGroupBox(const Napi::Value& value, const char* what) {
  void* data = nullptr;
  if (napi_get_value_external(value.Env(), value, &data) != napi_ok ||
      static_cast<HandleHeader*>(data)->kind != HandleKind::ProcessGroup) {
    throw Napi::TypeError::New(value.Env(), std::string(what) + ": expected a process group");
  }
  return static_cast<GroupBox*>(static_cast<HandleHeader*>(data));
}

std::shared_ptr<Group>& groupOf(const Napi::Value& value, const char* what) {
  GroupBox* box = unwrapGroupBox(value, what);
  if (!box->group) throw Napi::Error::New(value.Env(), std::string(what) + ": the process group was destroyed");
  return box->group;
}

int32_t intArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + ": expected a number");
  return info[i].As<Napi::Number>().Int32Value();
}

std::string stringField(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string("initProcessGroup: ") + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

int64_t numberField(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("initProcessGroup: ") + key + " must be a number");
  return v.As<Napi::Number>().Int64Value();
}

const at::Tensor& commTensor(const Napi::Value& value, const char* what) {
  const at::Tensor& t = unwrapTensor(value, what);
  if (!t.is_contiguous()) {
    throw Napi::Error::New(value.Env(), std::string(what) + ": the tensor must be contiguous (call .contiguous())");
  }
  return t;
}

// Throws the group's earlier failure, if any: after one, Gloo's pairs are in an unknown state.
void checkHealthy(Napi::Env env, Group& g, const std::string& op) {
  std::lock_guard<std::mutex> lock(g.stateMutex);
  if (!g.failure.empty()) {
    throw Napi::Error::New(env, op + ": the process group failed earlier and cannot be used: " + g.failure);
  }
}

int enterCollective(Group& g, const std::string& op) {
  int sequence = int(g.collectives.fetch_add(1) + 1);
  std::lock_guard<std::mutex> lock(g.stateMutex);
  g.lastOp = describeOp(op, sequence);
  return sequence;
}

// Starts an operation (on the main thread) and returns a Promise for its completion.
Napi::Value launch(const Napi::CallbackInfo& info, const std::string& op, bool collective, int peer,
                   Milliseconds timeout, const std::function<c10::intrusive_ptr<c10d::Work>(Group&)>& start) {
  Napi::Env env = info.Env();
  std::shared_ptr<Group> g = groupOf(info[0], op.c_str());
  checkHealthy(env, *g, op);
  int sequence = collective ? enterCollective(*g, op) : 0;
  auto started = Clock::now();
  c10::intrusive_ptr<c10d::Work> work;
  LOCO_GUARD(env, op.c_str(), { work = start(*g); })
  return settleOffThread(env, [g, work, op, sequence, peer, timeout, started](auto&) {
    return waitWork(*g, work, op, sequence, peer, timeout, started);
  });
}

Milliseconds timeoutArg(const Napi::CallbackInfo& info, size_t i, const Group& g) {
  if (i >= info.Length() || info[i].IsUndefined()) return g.timeout;
  double ms = info[i].As<Napi::Number>().DoubleValue();
  if (!(ms > 0)) throw Napi::RangeError::New(info.Env(), "timeoutMs must be positive");
  return Milliseconds(int64_t(ms));
}

// ---- rendezvous -------------------------------------------------------------------------------

std::shared_ptr<::gloo::transport::Device> createDevice(const std::string& masterAddr) {
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname && *ifname) return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  // Local runs stay on the loopback interface; a host name that does not resolve is common there.
  if (masterAddr == "localhost" || masterAddr.rfind("127.", 0) == 0) {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// Connects to (rank 0: hosts) the store, waits for every rank, then builds the Gloo group.
std::shared_ptr<Group> rendezvous(const std::string& addr, int port, int rank, int size, Milliseconds timeout) {
  // Threads inherit their creator's name: the store's and Gloo's (its I/O loop, its workers), all
  // started from here, are named for what they are, not for this waiter thread.
  pthread_setname_np(pthread_self(), "loco-gloo");
  struct RestoreName {
    ~RestoreName() { pthread_setname_np(pthread_self(), "loco-waiter"); }
  } restoreName;
  auto g = std::make_shared<Group>();
  g->rank = rank;
  g->size = size;
  g->timeout = timeout;
  g->masterAddr = addr;
  g->masterPort = port;
  std::string where = addr + ":" + std::to_string(port);
  c10d::TCPStoreOptions options;
  options.port = uint16_t(port);
  options.isServer = rank == 0;
  options.numWorkers = c10::nullopt;
  options.waitWorkers = false;
  options.timeout = timeout;
  try {
    g->store = c10::make_intrusive<c10d::TCPStore>(addr, options);
  } catch (...) {
    std::string cause = causeOf(std::current_exception());
    if (rank == 0) throw std::runtime_error("rendezvous: rank 0 could not listen on " + where + ": " + cause);
    throw std::runtime_error("rendezvous: rank " + std::to_string(rank) + " could not reach rank 0's store at " +
                             where + " within " + secondsText(timeout) +
                             " (is rank 0 running, and are MASTER_ADDR and MASTER_PORT right?): " + cause);
  }
  std::string arrived = "loco/arrived/" + std::to_string(rank);
  if (g->store->add(arrived, 1) != 1) {
    throw std::runtime_error("rendezvous: two processes claim rank " + std::to_string(rank) + " at " + where);
  }
  std::vector<std::string> everyone;
  for (int r = 0; r < size; r++) everyone.push_back("loco/arrived/" + std::to_string(r));
  try {
    g->store->wait(everyone, timeout);
  } catch (...) {
    std::vector<int> missing;
    try {
      for (int r = 0; r < size; r++)
        if (!g->store->check({everyone[r]})) missing.push_back(r);
    } catch (...) {
      missing.push_back(0);
    }
    throw std::runtime_error("rendezvous at " + where + " timed out after " + secondsText(timeout) + " on rank " +
                             std::to_string(rank) + ": " + joinRanks(missing) + " never arrived (world size " +
                             std::to_string(size) + ")");
  }
  auto pgOptions = c10d::ProcessGroupGloo::Options::create(timeout);
  pgOptions->devices.push_back(createDevice(addr));
  pgOptions->threads = 2;
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("loco/gloo", g->store);
  try {
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, size, pgOptions);
    g->pg = gloo;
    // PyTorch's debug mode: before every collective, the ranks compare its kind and tensor shapes
    // over a second Gloo group and fail with a message naming both sides, instead of Gloo aborting
    // the process on mismatched sizes. It costs a check collective per operation.
    const char* debug = std::getenv("TORCH_DISTRIBUTED_DEBUG");
    if (debug && std::string(debug) == "DETAIL") {
      auto checker = c10::make_intrusive<c10d::ProcessGroupGloo>(
          c10::make_intrusive<c10d::PrefixStore>("loco/gloo-check", g->store), rank, size, pgOptions);
      g->pg = c10::make_intrusive<c10d::ProcessGroupWrapper>(gloo, checker);
    }
  } catch (...) {
    throw std::runtime_error("rendezvous: connecting the Gloo group failed on rank " + std::to_string(rank) + ": " +
                             causeOf(std::current_exception()));
  }
  activate(g);
  return g;
}

void finalizeGroup(Napi::Env, GroupBox* box) { delete box; }

// initProcessGroup({ masterAddr, masterPort, rank, worldSize, timeoutMs }) → Promise<group>
Napi::Value InitProcessGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "initProcessGroup: expected an options object");
  auto o = info[0].As<Napi::Object>();
  std::string addr = stringField(o, "masterAddr");
  int port = int(numberField(o, "masterPort"));
  int rank = int(numberField(o, "rank"));
  int size = int(numberField(o, "worldSize"));
  Milliseconds timeout(numberField(o, "timeoutMs"));
  // No heartbeat thread may outlive the environment (it would race the process's exit).
  env.AddCleanupHook([] { stopAllHeartbeats(); });
  return settleOffThread(env, [=](std::function<Napi::Value(Napi::Env)>& makeResult) -> std::string {
    try {
      std::shared_ptr<Group> g = rendezvous(addr, port, rank, size, timeout);
      makeResult = [g](Napi::Env env) -> Napi::Value {
        auto* box = new GroupBox();
        box->kind = HandleKind::ProcessGroup;
        box->group = g;
        return Napi::External<GroupBox>::New(env, box, finalizeGroup);
      };
      return "";
    } catch (...) {
      return causeOf(std::current_exception());
    }
  });
}

// destroyProcessGroup(group) → Promise: stops the heartbeat and releases Gloo's threads.
Napi::Value DestroyProcessGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  GroupBox* box = unwrapGroupBox(info[0], "destroyProcessGroup");
  std::shared_ptr<Group> g = std::move(box->group);
  box->group.reset();
  return settleOffThread(env, [g](auto&) mutable -> std::string {
    if (!g) return "";
    g->stopHeartbeat();
    g.reset();
    return "";
  });
}

// processGroupFailure(group) → the first failure's message, "" while healthy.
Napi::Value ProcessGroupFailure(const Napi::CallbackInfo& info) {
  std::shared_ptr<Group> g = groupOf(info[0], "processGroupFailure");
  std::lock_guard<std::mutex> lock(g->stateMutex);
  return Napi::String::New(info.Env(), g->failure);
}

// ---- operations -------------------------------------------------------------------------------

c10d::ReduceOp reduceOpOf(Napi::Env env, int code) {
  switch (code) {
    case 0: return c10d::ReduceOp::SUM;
    case 2: return c10d::ReduceOp::PRODUCT;
    case 3: return c10d::ReduceOp::MIN;
    case 4: return c10d::ReduceOp::MAX;
    default: throw Napi::RangeError::New(env, "allReduce: unsupported reduce op code " + std::to_string(code));
  }
}

// allReduce(group, tensor, opCode, timeoutMs) → Promise; in place.
Napi::Value AllReduce(const Napi::CallbackInfo& info) {
  std::shared_ptr<Group> g = groupOf(info[0], "allReduce");
  at::Tensor t = commTensor(info[1], "allReduce");
  c10d::AllreduceOptions options;
  options.reduceOp = reduceOpOf(info.Env(), intArg(info, 2, "allReduce"));
  options.timeout = timeoutArg(info, 3, *g);
  return launch(info, "allReduce", true, -1, options.timeout, [&](Group& group) {
    std::vector<at::Tensor> tensors{t};
    return group.pg->allreduce(tensors, options);
  });
}

// allGather(group, outputs[], input, timeoutMs) → Promise; fills outputs[r] with rank r's input.
Napi::Value AllGather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Group> g = groupOf(info[0], "allGather");
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "allGather: expected an array of output tensors");
  auto array = info[1].As<Napi::Array>();
  std::vector<at::Tensor> outputs;
  for (uint32_t i = 0; i < array.Length(); i++) outputs.push_back(commTensor(array.Get(i), "allGather"));
  at::Tensor input = commTensor(info[2], "allGather");
  c10d::AllgatherOptions options;
  options.timeout = timeoutArg(info, 3, *g);
  return launch(info, "allGather", true, -1, options.timeout, [&](Group& group) {
    std::vector<std::vector<at::Tensor>> out{outputs};
    std::vector<at::Tensor> in{input};
    return group.pg->allgather(out, in, options);
  });
}

// broadcast(group, tensor, root, timeoutMs) → Promise; in place.
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  std::shared_ptr<Group> g = groupOf(info[0], "broadcast");
  at::Tensor t = commTensor(info[1], "broadcast");
  c10d::BroadcastOptions options;
  options.rootRank = intArg(info, 2, "broadcast");
  options.timeout = timeoutArg(info, 3, *g);
  return launch(info, "broadcast", true, -1, options.timeout, [&](Group& group) {
    std::vector<at::Tensor> tensors{t};
    return group.pg->broadcast(tensors, options);
  });
}

// barrier(group, timeoutMs) → Promise.
Napi::Value Barrier(const Napi::CallbackInfo& info) {
  std::shared_ptr<Group> g = groupOf(info[0], "barrier");
  c10d::BarrierOptions options;
  options.timeout = timeoutArg(info, 1, *g);
  return launch(info, "barrier", true, -1, options.timeout, [&](Group& group) { return group.pg->barrier(options); });
}

// send(group, tensor, dst, tag, timeoutMs) / recv(group, tensor, src, tag, timeoutMs) → Promise.
Napi::Value PointToPoint(const Napi::CallbackInfo& info, bool sending) {
  const char* name = sending ? "send" : "recv";
  std::shared_ptr<Group> g = groupOf(info[0], name);
  at::Tensor t = commTensor(info[1], name);
  int peer = intArg(info, 2, name);
  int tag = intArg(info, 3, name);
  if (peer < 0 || peer >= g->size || peer == g->rank) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + ": peer rank " + std::to_string(peer) +
                                                " is not another rank of this group (world size " +
                                                std::to_string(g->size) + ")");
  }
  Milliseconds timeout = timeoutArg(info, 4, *g);
  std::string op = std::string(name) + (sending ? " to rank " : " from rank ") + std::to_string(peer);
  return launch(info, op, false, peer, timeout, [&](Group& group) {
    std::vector<at::Tensor> tensors{t};
    return sending ? group.pg->send(tensors, peer, tag) : group.pg->recv(tensors, peer, tag);
  });
}

Napi::Value Send(const Napi::CallbackInfo& info) { return PointToPoint(info, true); }
Napi::Value Recv(const Napi::CallbackInfo& info) { return PointToPoint(info, false); }

// ---- differentiable collectives (synchronous, bounded by the timeout) -------------------------

// Runs a collective on the calling thread; throws the diagnosed message on failure.
void runBlocking(Group& g, const std::string& op, const std::function<c10::intrusive_ptr<c10d::Work>()>& start) {
  {
    std::lock_guard<std::mutex> lock(g.stateMutex);
    if (!g.failure.empty()) throw std::runtime_error(op + ": the process group failed earlier: " + g.failure);
  }
  int sequence = enterCollective(g, op);
  auto started = Clock::now();
  std::string error = waitWork(g, start(), op, sequence, -1, g.timeout, started);
  if (!error.empty()) throw std::runtime_error(error);
}

std::shared_ptr<Group> groupForAutograd(int64_t id, const char* op) {
  auto g = groupById(id);
  if (!g) throw std::runtime_error(std::string(op) + ": the process group was destroyed before backward");
  return g;
}

at::Tensor allReduceSumNow(Group& g, const at::Tensor& input, const std::string& op) {
  at::Tensor buffer = input.detach().contiguous().clone();
  runBlocking(g, op, [&] {
    std::vector<at::Tensor> tensors{buffer};
    return g.pg->allreduce(tensors);
  });
  return buffer;
}

// y = Σ_ranks x. Every rank's loss depends on y, so x's gradient is Σ_ranks ∂L_r/∂y.
struct AllReduceSumFunction : public torch::autograd::Function<AllReduceSumFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, int64_t groupId) {
    ctx->saved_data["group"] = groupId;
    return allReduceSumNow(*groupForAutograd(groupId, "allReduceSumWithGrad"), input, "allReduceSumWithGrad");
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto g = groupForAutograd(ctx->saved_data["group"].toInt(), "allReduceSumWithGrad backward");
    return {allReduceSumNow(*g, grads[0], "allReduceSumWithGrad backward"), at::Tensor()};
  }
};

// y = cat over ranks of x along dim 0 (equal shapes on every rank). x's gradient is its own slice
// of Σ_ranks ∂L_r/∂y, as in solo-learn's and lightly's gather layers.
struct AllGatherFunction : public torch::autograd::Function<AllGatherFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, int64_t groupId) {
    auto g = groupForAutograd(groupId, "allGatherWithGrad");
    ctx->saved_data["group"] = groupId;
    ctx->saved_data["rows"] = input.size(0);
    at::Tensor local = input.detach().contiguous();
    std::vector<at::Tensor> outputs;
    for (int r = 0; r < g->size; r++) outputs.push_back(at::empty_like(local));
    runBlocking(*g, "allGatherWithGrad", [&] {
      std::vector<std::vector<at::Tensor>> out{outputs};
      std::vector<at::Tensor> in{local};
      return g->pg->allgather(out, in);
    });
    return at::cat(outputs, 0);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto g = groupForAutograd(ctx->saved_data["group"].toInt(), "allGatherWithGrad backward");
    int64_t rows = ctx->saved_data["rows"].toInt();
    at::Tensor total = allReduceSumNow(*g, grads[0], "allGatherWithGrad backward");
    return {total.narrow(0, rows * g->rank, rows).clone(), at::Tensor()};
  }
};

// allReduceSumWithGrad(group, tensor) → tensor; allGatherWithGrad(group, tensor) → tensor.
Napi::Value DifferentiableCollective(const Napi::CallbackInfo& info, bool gather) {
  Napi::Env env = info.Env();
  const char* name = gather ? "allGatherWithGrad" : "allReduceSumWithGrad";
  std::shared_ptr<Group> g = groupOf(info[0], name);
  const at::Tensor& input = unwrapTensor(info[1], name);
  LOCO_GUARD(env, name, {
    if (gather && input.dim() == 0) throw std::runtime_error("expected a tensor with at least one dimension");
    at::Tensor out = gather ? AllGatherFunction::apply(input, g->id) : AllReduceSumFunction::apply(input, g->id);
    return wrapTensor(env, std::move(out));
  })
}

Napi::Value AllReduceSumWithGrad(const Napi::CallbackInfo& info) { return DifferentiableCollective(info, false); }
Napi::Value AllGatherWithGrad(const Napi::CallbackInfo& info) { return DifferentiableCollective(info, true); }

}  // namespace
}  // namespace distributed

std::vector<NativeExport> distributedExports() {
  using namespace distributed;
  return {
      {"initProcessGroup", InitProcessGroup},
      {"destroyProcessGroup", DestroyProcessGroup},
      {"processGroupFailure", ProcessGroupFailure},
      {"allReduce", AllReduce},
      {"allGather", AllGather},
      {"broadcast", Broadcast},
      {"barrier", Barrier},
      {"send", Send},
      {"recv", Recv},
      {"allReduceSumWithGrad", AllReduceSumWithGrad},
      {"allGatherWithGrad", AllGatherWithGrad},
  };
}

}  // namespace loco
