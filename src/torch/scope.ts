// Deterministic release of native memory. A scope records every tensor created while it runs and
// disposes all of them at its end except those the scope returns (which move to the enclosing
// scope) and those marked with keep(). The JS garbage collector is only a safety net.
//
// V8 is told the bytes of the tensors only the GC can free (external memory, so that it collects
// dropped handles in time). A tensor a scope owns is held by the scope until it closes, so while a
// scope is open new tensors are not reported (a step's activations made V8 run 8-10 full collections
// per ResNet-50 step that freed nothing); one that leaves every scope, returned or kept, is reported
// then. LOCO_EXTERNAL_MEMORY=all reports every tensor (the behaviour before; for comparisons).
import { native } from "./native";

/** What a scope needs to know about a tensor; implemented by Tensor. */
export interface Scoped {
  readonly isDisposed: boolean;
  /** Releases the native tensor; a no-op when already released. */
  release(): void;
  /** Index of the scope that owns it (-1: none, the caller owns it). */
  scopeDepth: number;
  /** Reports its native bytes to V8, now that the GC may have to free it. */
  accountExternal(): void;
}

const reportScoped = process.env.LOCO_EXTERNAL_MEMORY === "all";

const scopes: Scoped[][] = [];

/** Called by every new tensor. */
export function track(t: Scoped): void {
  const depth = scopes.length - 1;
  t.scopeDepth = depth;
  if (depth >= 0) scopes[depth].push(t);
}

/** Removes a tensor from automatic disposal: the caller now owns it and must dispose() it. */
export function keep<T extends Scoped>(t: T): T {
  if (t.scopeDepth >= 0) t.accountExternal();
  t.scopeDepth = -1;
  return t;
}

function isScoped(value: unknown): value is Scoped {
  return typeof value === "object" && value !== null && "scopeDepth" in value && "release" in value;
}

// Marks the tensors reachable from a scope's result (arrays, plain objects, Maps) as escaping.
function collectEscaping(value: unknown, out: Set<Scoped>, seen: Set<unknown>): void {
  if (typeof value !== "object" || value === null || seen.has(value)) return;
  seen.add(value);
  if (isScoped(value)) {
    out.add(value);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collectEscaping(v, out, seen);
  } else if (value instanceof Map) {
    for (const v of value.values()) collectEscaping(v, out, seen);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectEscaping(v, out, seen);
  }
}

function closeScope(depth: number, result: unknown): void {
  const owned = scopes[depth];
  scopes.length = depth;
  if (depth === 0 && !reportScoped) native.setExternalAccounting(true);
  const escaping = new Set<Scoped>();
  collectEscaping(result, escaping, new Set());
  const outer = depth - 1;
  for (const t of owned) {
    if (t.scopeDepth !== depth) continue; // kept, or already moved out
    if (escaping.has(t)) {
      t.scopeDepth = outer;
      if (outer >= 0) scopes[outer].push(t);
      else t.accountExternal();
    } else if (!t.isDisposed) {
      t.release();
    }
  }
}

/**
 * Runs `fn` and disposes every tensor created inside it, except the tensors in its result
 * (returned directly or inside arrays / plain objects / Maps) and those passed to keep().
 * Scopes nest. `fn` must be synchronous: an async function would leave its scope early.
 */
export function scope<T>(fn: () => T): T {
  const depth = scopes.length;
  if (depth === 0 && !reportScoped) native.setExternalAccounting(false);
  scopes.push([]);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    closeScope(depth, undefined);
    throw error;
  }
  if (result instanceof Promise) {
    closeScope(depth, undefined);
    throw new Error("loco.scope: the function returned a Promise; scopes are synchronous (wrap each step instead)");
  }
  closeScope(depth, result);
  return result;
}

/** Number of scopes currently open. */
export function scopeDepth(): number {
  return scopes.length;
}
