// SPDX-License-Identifier: Apache-2.0
// Shared test helpers: booting a small guest (or skipping where KVM cannot boot one).
import { Sandbox, codes } from '../index.mjs';

/** Small guests keep the emulated test host responsive. */
export const GUEST = { rootfs: 'base', memoryMB: 256 };

/**
 * Boots a sandbox for test t and kills it when the test ends. Skips the test (the ctest
 * wrapper turns that into exit code 77) when this machine cannot boot guests.
 */
export async function boot(t, opts = {}) {
  let sb;
  try {
    sb = await Sandbox.create({ ...GUEST, ...opts });
  } catch (e) {
    if (e.code === codes.SBX_ENOKVM || e.code === codes.SBX_EIMAGE) {
      t.skip(`cannot boot a guest here: ${e.message.split('\n')[0]}`);
      return null;
    }
    throw e;
  }
  t.after(() => sb.kill());
  return sb;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls cond() until true or timeoutMs passes. */
export async function until(cond, timeoutMs = 10000, what = 'condition') {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Bytes that are the same on every run (xorshift), so a corruption is reproducible. */
export function patternBytes(n, seed = 12345) {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}
