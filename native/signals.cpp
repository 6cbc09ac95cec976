// SIGINT / SIGTERM during a long computation (TypeScript side: src/torch/signals.ts). Node runs JS
// signal listeners only between event-loop turns, so while a training step runs (seconds of native
// work) a listener cannot see a second Ctrl-C. This handler runs at once: the first signal prints a
// message and is counted (the trainer polls interruptCount between steps, finishes the step and
// checkpoints); the second prints a message and ends the process with status 128 + signal, mid-step
// or mid-write (checkpoints are renamed into place atomically, so the last complete one stays
// intact).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

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

}  // namespace

std::vector<NativeExport> signalExports() {
  return {
      {"installInterruptHandler", installInterruptHandler},
      {"removeInterruptHandler", removeInterruptHandler},
      {"interruptCount", interruptCount},
  };
}

}  // namespace loco
