// Devices. loco runs on the CPU today; tensors and modules still take a device (creation options,
// Tensor.to, Module.to) so that code written against loco stays device-generic and a libtorch built
// with another backend needs no API change. A device this build cannot use is a clear error naming
// it and what is available (native/devices.cpp checks every device name, here and in operators).
import { native } from "./native";

/** A device name as PyTorch spells it: "cpu", "cuda", "cuda:1", "mps". */
export type Device = "cpu" | "cuda" | "mps" | `cuda:${number}` | `cpu:${number}`;

/** Device types this libtorch build can place tensors on ("cpu" always). */
export function availableDevices(): string[] {
  return native.availableDevices();
}

/**
 * The canonical name of `device` ("cpu", "cuda:0") when this build can use it; otherwise an Error
 * whose message starts with `fn` and names the device and what is available.
 */
export function checkDevice(device: unknown, fn = "checkDevice"): string {
  if (typeof device !== "string") {
    throw new TypeError(`${fn}: a device is a string such as "cpu", got ${device === null ? "null" : typeof device}`);
  }
  try {
    return native.checkDevice(device);
  } catch (error) {
    const message = (error as Error).message.replace(/^checkDevice: /, "");
    throw new Error(`${fn}: ${message}`);
  }
}

/** Whether this build can use `device`. */
export function isDeviceAvailable(device: string): boolean {
  try {
    native.checkDevice(device);
    return true;
  } catch {
    return false;
  }
}
