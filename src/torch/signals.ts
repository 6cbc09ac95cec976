// SIGINT and SIGTERM during long native computations (native/signals.cpp): a JS signal listener
// only runs between event-loop turns, so it cannot react while a training step runs; this handler
// reacts at once. The first signal prints `first` and is counted (poll requested(), which reads
// the addon's interruptCount()); the second prints `second` and ends the process with status
// 128 + signal. removeInterruptHandler() (the guard's dispose) restores Node's own handlers.
import { native } from "./native";

export interface InterruptGuard {
  /** Whether a SIGINT or SIGTERM has arrived since install (interruptCount() > 0). */
  requested(): boolean;
  /** Restores the previous handlers (Node's own): removeInterruptHandler(). */
  dispose(): void;
}

let active = false;

/** Installs the native SIGINT/SIGTERM handler; one at a time. */
export function installInterruptHandler(first: string, second: string): InterruptGuard {
  if (active) throw new Error("installInterruptHandler: a handler is already installed");
  native.installInterruptHandler(first, second);
  active = true;
  return {
    requested: () => interruptCount() > 0,
    dispose: () => {
      if (!active) return;
      removeInterruptHandler();
    },
  };
}

/** Signals received since installInterruptHandler. */
export function interruptCount(): number {
  return native.interruptCount();
}

/** Restores the handlers that were in place before installInterruptHandler. */
export function removeInterruptHandler(): void {
  native.removeInterruptHandler();
  active = false;
}
