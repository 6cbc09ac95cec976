// Ctrl-C and SIGTERM during long native computations (see native/addon.cpp, "interrupts"): a JS
// signal listener only runs between event-loop turns, so it cannot react while a training step
// runs; this handler reacts at once. The first signal prints `first` and is counted (poll
// requested()); the second prints `second` and ends the process with status 128 + signal.
import { native } from "./native";

export interface InterruptGuard {
  /** Whether a SIGINT or SIGTERM has arrived since install. */
  requested(): boolean;
  /** Restores the previous handlers (Node's own). */
  dispose(): void;
}

let active = false;

export function installInterruptHandler(first: string, second: string): InterruptGuard {
  if (active) throw new Error("installInterruptHandler: a handler is already installed");
  active = true;
  if (typeof native.installInterruptHandler !== "function") return jsInterruptHandler(first);
  native.installInterruptHandler(first, second);
  return {
    requested: () => native.interruptCount() > 0,
    dispose: () => {
      if (!active) return;
      native.removeInterruptHandler();
      active = false;
    },
  };
}

/**
 * The fallback for an addon built before the native handler existed: JS listeners, removed at the
 * first signal so that a second one gets the default action (the process ends); it acts at once
 * only between steps.
 */
function jsInterruptHandler(first: string): InterruptGuard {
  let count = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    count++;
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    process.stderr.write(`\n${signal}: ${first}`);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return {
    requested: () => count > 0,
    dispose: () => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      active = false;
    },
  };
}
