// SPDX-License-Identifier: Apache-2.0
// Shared test helpers: booting a small guest (or skipping where KVM cannot boot one).
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Sandbox, Template, codes, CODE_INTERPRETER_TEMPLATE } from '../index.mjs';

const repo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

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

/**
 * A sandbox of the code-interpreter template for test t, killed when the test ends. The
 * template is built first from the repository's guest/interpreter/Dockerfile into the test
 * store ($SBX_CODE_STORE, shared with the C and Python tests: later builds are cache hits).
 * Skips when the code image has not been built.
 */
export async function codeSandbox(t) {
  const cache =
    process.env.SBX_CACHE_DIR ||
    path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'libsandbox');
  const image = path.join(cache, 'code.ext4');
  if (!existsSync(image)) {
    t.skip(`${image} is missing (make images builds it)`);
    return null;
  }
  const templateDir = process.env.SBX_CODE_STORE || path.join(repo, 'build', 'code-store');
  const t0 = Date.now();
  await Template.build({
    name: CODE_INTERPRETER_TEMPLATE,
    dockerfile: path.join(repo, 'guest', 'interpreter', 'Dockerfile'),
    templateDir,
    kernel: process.env.SBX_KERNEL,
    readyTimeoutMs: 600_000, // the emulated host is slow to import numpy and pandas
  });
  console.error(`template ready in ${Date.now() - t0} ms`);
  const sb = await Sandbox.create({ template: CODE_INTERPRETER_TEMPLATE, templateDir, bootTimeoutMs: 120_000 });
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
