// Run by test/native-boundary.test.ts in a child process started with `node --gc-interval=3`, so
// that a collection starts inside nearly every allocation, including the one V8 makes while it
// throws an addon call's error. Each iteration drops handles (their finalizers are due at the next
// collection) and then calls an export that throws. Node 20 used to abort here when the addon
// threw through napi_throw (native/addon.cpp, throwBypassingPendingException); the measured
// rate is in test/native-boundary.test.ts. Prints {"done": true, "caught": N} when it survives.
import { native } from "../../src/torch/native";
import * as torch from "../../src/torch";

const iterations = Number(process.argv[2] ?? 20_000);
let caught = 0;
for (let i = 0; i < iterations; i++) {
  // Dropped, not disposed: only their finalizers free them. A varying count of them moves the
  // forced collections against the throws (a fixed pattern can keep missing the throw).
  for (let j = i % 5; j >= 0; j--) torch.zeros([2]);
  try {
    (native as unknown as { isContiguous: () => unknown }).isContiguous();
  } catch (error) {
    if (error instanceof Error && error.message.startsWith("isContiguous: ")) caught++;
  }
}
console.log(JSON.stringify({ done: true, caught }));
