// Shared by distributed.cpp (rendezvous, operations, differentiable collectives) and
// distributed_health.cpp (heartbeats and failure diagnosis): the process group's state.
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace loco {
namespace distributed {

using Milliseconds = std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr Milliseconds kHeartbeatPeriod{250};
// How long a peer's heartbeat may stand still before it is reported as not responding.
constexpr Milliseconds kSilenceWindow{4 * kHeartbeatPeriod};
// Gloo times out at the operation's timeout itself; the waiter allows it this much longer to say so.
constexpr Milliseconds kWaitGrace{2000};

struct Group {
  c10::intrusive_ptr<c10d::Store> store;  // the TCPStore (rank 0 hosts its server)
  // ProcessGroupGloo, or with TORCH_DISTRIBUTED_DEBUG=DETAIL a ProcessGroupWrapper around it.
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  int64_t id = 0;
  int rank = 0;
  int size = 1;
  Milliseconds timeout{0};
  std::string masterAddr;
  int masterPort = 0;

  std::atomic<int64_t> collectives{0};  // collectives entered by this rank
  std::mutex stateMutex;
  std::string lastOp = "rendezvous";
  std::string failure;  // the first failure; the group cannot be used after one

  std::thread heartbeat;
  std::mutex heartbeatMutex;
  std::condition_variable heartbeatCv;
  bool stopping = false;
  std::atomic<bool> heartbeatDone{false};

  void signalStop() {
    {
      std::lock_guard<std::mutex> lock(heartbeatMutex);
      stopping = true;
    }
    heartbeatCv.notify_all();
  }

  void stopHeartbeat() {
    signalStop();
    if (heartbeat.joinable() && heartbeat.get_id() != std::this_thread::get_id()) heartbeat.join();
  }

  ~Group();
};

// Groups by id: the autograd functions save an id (an IValue cannot hold the group) and look it up

// The group with this id, if it is still alive (autograd functions keep ids, not groups).
std::shared_ptr<Group> groupById(int64_t id);
// Gives a new group its id and starts its heartbeat.
void activate(const std::shared_ptr<Group>& g);
// Stops every group's heartbeat (the environment is going away).
void stopAllHeartbeats();

// Waits for a Gloo work item; returns "" on success or the diagnosed failure message (recorded
// as the group's failure).
std::string waitWork(Group& g, const c10::intrusive_ptr<c10d::Work>& work, const std::string& op, int sequence,
                     int peer, Milliseconds timeout, Clock::time_point started);

std::string describeOp(const std::string& op, int sequence);
std::string causeOf(std::exception_ptr error);
std::string joinRanks(const std::vector<int>& ranks);
std::string secondsText(Milliseconds ms);

}  // namespace distributed
}  // namespace loco
