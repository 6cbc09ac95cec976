// Failure diagnosis for process groups: every rank publishes a heartbeat in the store (a beat
// counter, the number of collectives it has entered and the last operation's name). When an
// operation fails, the waiter reads the heartbeats twice, a silence window apart, and names the
// ranks that stopped beating (dead, killed or frozen) or that have not reached this collective
// (stalled elsewhere).
#include <c10/util/Exception.h>

#include <pthread.h>

#include <sstream>
#include <unordered_map>

#include "distributed.h"

namespace loco {
namespace distributed {

std::mutex registryMutex;
std::unordered_map<int64_t, std::weak_ptr<Group>> registry;
int64_t nextGroupId = 1;

std::shared_ptr<Group> groupById(int64_t id) {
  std::lock_guard<std::mutex> lock(registryMutex);
  auto it = registry.find(id);
  return it == registry.end() ? nullptr : it->second.lock();
}

Group::~Group() {
  stopHeartbeat();
  std::lock_guard<std::mutex> lock(registryMutex);
  registry.erase(id);
}

std::string heartbeatKey(int rank) { return "loco/heartbeat/" + std::to_string(rank); }

std::vector<uint8_t> bytesOf(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

void runHeartbeat(Group* g) {
  pthread_setname_np(pthread_self(), "loco-heartbeat");
  int64_t beat = 0;
  std::unique_lock<std::mutex> lock(g->heartbeatMutex);
  while (!g->stopping) {
    lock.unlock();
    std::string op;
    {
      std::lock_guard<std::mutex> state(g->stateMutex);
      op = g->lastOp;
    }
    std::ostringstream value;
    value << ++beat << ' ' << g->collectives.load() << ' ' << op;
    try {
      g->store->set(heartbeatKey(g->rank), bytesOf(value.str()));
    } catch (...) {
      // The store's host (rank 0) is gone; an operation's diagnosis reports it. Nothing to do here.
    }
    lock.lock();
    g->heartbeatCv.wait_for(lock, kHeartbeatPeriod, [g] { return g->stopping; });
  }
  g->heartbeatDone = true;
}

struct PeerState {
  bool present = false;
  int64_t beat = 0;
  int64_t collectives = 0;
  std::string lastOp;
};

std::vector<PeerState> readHeartbeats(Group& g) {
  std::vector<PeerState> peers(g.size);
  for (int r = 0; r < g.size; r++) {
    if (r == g.rank) continue;
    if (!g.store->check({heartbeatKey(r)})) continue;
    auto raw = g.store->get(heartbeatKey(r));
    std::istringstream in(std::string(raw.begin(), raw.end()));
    PeerState& p = peers[r];
    p.present = true;
    in >> p.beat >> p.collectives;
    std::getline(in >> std::ws, p.lastOp);
  }
  return peers;
}

std::string joinRanks(const std::vector<int>& ranks) {
  std::string out = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); i++) out += (i ? ", " : "") + std::to_string(ranks[i]);
  return out;
}

std::string secondsText(Milliseconds ms) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(1);
  out << double(ms.count()) / 1000.0 << " s";
  return out.str();
}

struct Snapshot {
  std::vector<PeerState> peers;
  Clock::time_point at;
};

Snapshot takeSnapshot(Group& g) {
  auto at = Clock::now();
  return Snapshot{readHeartbeats(g), at};
}

// Names the peers behind a failure. `sequence` is the collective's number (0 for send/recv).
// `early`: heartbeats read while the operation was still pending (saves waiting now).
std::string diagnose(Group& g, int sequence, int peer, const Snapshot* early) {
  try {
    Snapshot start = early ? *early : takeSnapshot(g);
    auto waited = Clock::now() - start.at;
    if (waited < kSilenceWindow) std::this_thread::sleep_for(kSilenceWindow - waited);
    auto& first = start.peers;
    auto second = readHeartbeats(g);
    std::vector<int> silent, behind;
    std::string behindDetail;
    for (int r = 0; r < g.size; r++) {
      if (r == g.rank || (peer >= 0 && r != peer)) continue;
      if (!second[r].present || second[r].beat == first[r].beat) {
        silent.push_back(r);
      } else if (sequence > 0 && second[r].collectives < sequence) {
        behind.push_back(r);
        behindDetail += (behindDetail.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) +
                        " last entered " + second[r].lastOp;
      }
    }
    std::string out;
    if (!silent.empty()) {
      out += joinRanks(silent) + (silent.size() == 1 ? " is" : " are") +
             " not responding (no heartbeat for " + secondsText(kSilenceWindow) +
             ": exited, killed or frozen)";
    }
    if (!behind.empty()) {
      out += (out.empty() ? "" : "; ") + joinRanks(behind) + (behind.size() == 1 ? " has" : " have") +
             " not reached this operation (" + behindDetail + ")";
    }
    return out.empty() ? "every peer is alive and has reached this operation" : out;
  } catch (const std::exception&) {
    return "rank 0 is not responding (its rendezvous store at " + g.masterAddr + ":" +
           std::to_string(g.masterPort) + " cannot be reached: exited or killed)";
  }
}

std::string describeOp(const std::string& op, int sequence) {
  return sequence > 0 ? op + " #" + std::to_string(sequence) : op;
}

std::string causeOf(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

// Records the group's first failure and returns the message every later operation repeats.
std::string recordFailure(Group& g, const std::string& op, int sequence, int peer, Milliseconds timeout,
                          Clock::time_point started, const std::string& cause, const Snapshot* early) {
  std::string diagnosis = diagnose(g, sequence, peer, early);
  auto elapsed = std::chrono::duration_cast<Milliseconds>(Clock::now() - started);
  std::string message = describeOp(op, sequence) + " failed on rank " + std::to_string(g.rank) + " of " +
                        std::to_string(g.size) + " after " + secondsText(elapsed) + " (timeout " +
                        secondsText(timeout) + "): " + diagnosis + ". Gloo said: " + cause;
  std::lock_guard<std::mutex> lock(g.stateMutex);
  if (g.failure.empty()) g.failure = message;
  return message;
}

// Waits for a Gloo work item; returns "" on success or the diagnosed failure message.
// Collectives carry the timeout into Gloo, which reports it itself (the grace covers its lag). A
// collective still pending one silence window before its timeout has the peers' heartbeats read
// then, so that a stalled peer is named when the timeout strikes, not a window later. send/recv
// (peer >= 0) time out in the wait itself.
std::string waitWork(Group& g, const c10::intrusive_ptr<c10d::Work>& work, const std::string& op, int sequence,
                     int peer, Milliseconds timeout, Clock::time_point started) {
  std::unique_ptr<Snapshot> early;
  try {
    Milliseconds beforeDeadline = timeout - kSilenceWindow;
    if (peer >= 0 || beforeDeadline <= Milliseconds(0)) {
      work->wait(peer >= 0 ? timeout : timeout + kWaitGrace);
      return "";
    }
    try {
      work->wait(beforeDeadline);
      return "";
    } catch (...) {
      if (work->isCompleted()) throw;  // a real failure, not the early wake-up
    }
    try {
      early = std::make_unique<Snapshot>(takeSnapshot(g));
    } catch (...) {
      // The store is unreachable; the diagnosis will say so.
    }
    work->wait(timeout - beforeDeadline + kWaitGrace);
    return "";
  } catch (...) {
    return recordFailure(g, op, sequence, peer, timeout, started, causeOf(std::current_exception()), early.get());
  }
}

void activate(const std::shared_ptr<Group>& g) {
  {
    std::lock_guard<std::mutex> lock(registryMutex);
    g->id = nextGroupId++;
    registry[g->id] = g;
  }
  g->heartbeat = std::thread(runHeartbeat, g.get());
}

void stopAllHeartbeats() {
  std::vector<std::shared_ptr<Group>> groups;
  {
    std::lock_guard<std::mutex> lock(registryMutex);
    for (auto& entry : registry)
      if (auto g = entry.second.lock()) groups.push_back(g);
  }
  // The process is exiting: give each heartbeat a moment to finish its store call. One stuck on an
  // unreachable store is left running, its group deliberately leaked, rather than hang the exit.
  for (auto& g : groups) g->signalStop();
  auto deadline = Clock::now() + Milliseconds(1000);
  for (auto& g : groups) {
    while (!g->heartbeatDone && Clock::now() < deadline) std::this_thread::sleep_for(Milliseconds(5));
    if (g->heartbeatDone) {
      g->stopHeartbeat();
    } else {
      g->heartbeat.detach();
      new std::shared_ptr<Group>(g);
    }
  }
}


}  // namespace distributed
}  // namespace loco
