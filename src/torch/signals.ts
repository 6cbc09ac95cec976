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

/**
 * The environment variable by which a parent process (`loco experiment`) asks a `loco` child to
 * stop when the parent dies: its value is the parent's pid.
 */
export const STOP_WITH_PARENT_ENV = "LOCO_STOP_WITH_PARENT";

/** Seconds between the graceful SIGTERM on the parent's death and the one that exits at once. */
export const PARENT_GRACE_SECONDS = 10;

/**
 * When STOP_WITH_PARENT_ENV names this process's parent: watch it (native/signals.cpp) and, once it
 * is gone (even SIGKILLed), stop as on SIGTERM (a training run finishes its step, checkpoints and
 * exits), then exit at once PARENT_GRACE_SECONDS later if still running. The variable is removed
 * so that this process's own children do not inherit it. Returns whether a watch started.
 */
export function stopWithParentFromEnv(): boolean {
  const value = process.env[STOP_WITH_PARENT_ENV];
  if (value === undefined) return false;
  delete process.env[STOP_WITH_PARENT_ENV];
  const parent = Number(value);
  if (!Number.isInteger(parent) || parent <= 1) return false;
  native.stopWithParent(parent, PARENT_GRACE_SECONDS * 1000);
  return true;
}
