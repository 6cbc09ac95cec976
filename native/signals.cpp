// SIGINT / SIGTERM during a long computation (TypeScript side: src/torch/signals.ts). Node runs JS
// signal listeners only between event-loop turns, so while a training step runs (seconds of native
// work) a listener cannot see a second Ctrl-C. This handler runs at once: the first signal prints a
// message and is counted (the trainer polls interruptCount between steps, finishes the step and
// checkpoints); the second prints a message and ends the process with status 128 + signal, mid-step
// or mid-write (checkpoints are renamed into place atomically, so the last complete one stays
// intact).
//
// stopWithParent: a child of `loco experiment` stops when its parent dies, SIGKILL included (no
// signal reaches the child then). A detached thread polls getppid(): once the process has been
// re-parented it sends this process SIGTERM (the handler above: finish the step, checkpoint,
// exit), and a second SIGTERM after a grace period (exit at once) in case a long phase does not
// poll for stops. It runs outside the event loop, so a long native step cannot delay it.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "common.h"

namespace loco {
namespace {

std::atomic<int> signalCount{0};
struct sigaction previousInt, previousTerm;
bool handlerInstalled = false;
char firstMessage[2048];
size_t firstLength = 0;
char secondMessage[2048];
size_t secondLength = 0;

// Only async-signal-safe calls below: write(2) and _exit(2).
void writeAll(const char* data, size_t length) {
  while (length > 0) {
    ssize_t n = write(STDERR_FILENO, data, length);
    if (n <= 0) return;
    data += n;
    length -= size_t(n);
  }
}

void onSignal(int sig) {
  const char* name = sig == SIGINT ? "\nSIGINT: " : "\nSIGTERM: ";
  writeAll(name, std::strlen(name));
  if (signalCount.fetch_add(1) == 0) {
    writeAll(firstMessage, firstLength);
  } else {
    writeAll(secondMessage, secondLength);
    _exit(128 + sig);
  }
}

size_t copyMessage(const Napi::Value& value, char* out, size_t capacity, const char* which) {
  if (!value.IsString()) {
    throw Napi::TypeError::New(value.Env(),
                               std::string("installInterruptHandler: the ") + which + " message must be a string");
  }
  std::string text = value.As<Napi::String>().Utf8Value();
  size_t n = std::min(text.size(), capacity);
  std::memcpy(out, text.data(), n);
  return n;
}

Napi::Value installInterruptHandler(const Napi::CallbackInfo& info) {
  if (handlerInstalled) throw Napi::Error::New(info.Env(), "installInterruptHandler: already installed");
  firstLength = copyMessage(info[0], firstMessage, sizeof firstMessage, "first");
  secondLength = copyMessage(info[1], secondMessage, sizeof secondMessage, "second");
  signalCount.store(0);
  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_handler = onSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, &previousInt);
  sigaction(SIGTERM, &action, &previousTerm);
  handlerInstalled = true;
  return info.Env().Undefined();
}

Napi::Value removeInterruptHandler(const Napi::CallbackInfo& info) {
  if (handlerInstalled) {
    sigaction(SIGINT, &previousInt, nullptr);
    sigaction(SIGTERM, &previousTerm, nullptr);
    handlerInstalled = false;
  }
  return info.Env().Undefined();
}

Napi::Value interruptCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), signalCount.load());
}

std::atomic<bool> parentWatchStarted{false};

void watchParent(pid_t parent, int graceMs) {
  while (getppid() == parent) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  kill(getpid(), SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(graceMs));
  kill(getpid(), SIGTERM);
}

Napi::Value stopWithParent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber()) {
    throw Napi::TypeError::New(env, "stopWithParent(parentPid, graceMs): expected two numbers");
  }
  pid_t parent = pid_t(info[0].As<Napi::Number>().Int64Value());
  int graceMs = std::max(0, int(info[1].As<Napi::Number>().Int32Value()));
  if (parentWatchStarted.exchange(true)) throw Napi::Error::New(env, "stopWithParent: already watching");
  std::thread(watchParent, parent, graceMs).detach();
  return env.Undefined();
}

}  // namespace

std::vector<NativeExport> signalExports() {
  return {
      {"installInterruptHandler", installInterruptHandler},
      {"removeInterruptHandler", removeInterruptHandler},
      {"interruptCount", interruptCount},
      {"stopWithParent", stopWithParent},
  };
}

}  // namespace loco
