// SPDX-License-Identifier: Apache-2.0
// Small argument converters shared by the modules (JS values -> what the addon takes).
'use strict';
const os = require('node:os');
const native = require('./native');
const { InvalidArgumentError } = require('./errors');

/** {KEY: value} (or ["K=V"]) -> ["KEY=value"]; undefined stays undefined. */
function envList(envs, what = 'envs') {
  if (envs === undefined || envs === null) return undefined;
  if (Array.isArray(envs)) return envs.map(String);
  if (typeof envs !== 'object') throw new InvalidArgumentError(`${what} must be an object of strings`);
  return Object.entries(envs).map(([k, v]) => {
    if (!k || k.includes('=')) throw new InvalidArgumentError(`${what}: bad key ${JSON.stringify(k)}`);
    return `${k}=${v}`;
  });
}

/**
 * A timeout in milliseconds as E2B takes it (0 = none) -> the C value. `dflt` applies when
 * undefined.
 */
function timeoutValue(ms, dflt, what = 'timeoutMs') {
  if (ms === undefined || ms === null) ms = dflt;
  if (ms === 0 || ms === Infinity) return native.NO_TIMEOUT;
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0)
    throw new InvalidArgumentError(`${what} must be a non-negative number of milliseconds`);
  return Math.min(Math.ceil(ms), native.NO_TIMEOUT - 1);
}

/** 'SIGTERM' / 'TERM' / 15 -> 15 (Linux numbers, as in the guest). */
function signalNumber(sig, dflt = 9) {
  if (sig === undefined || sig === null) return dflt;
  if (typeof sig === 'number') return sig;
  const name = String(sig).toUpperCase();
  const n = os.constants.signals[name.startsWith('SIG') ? name : `SIG${name}`];
  if (n === undefined) throw new InvalidArgumentError(`unknown signal ${sig}`);
  return n;
}

/** Runs fn while a pending JS-level promise keeps the event loop alive. */
async function holding(promise) {
  native.hold();
  try {
    return await promise;
  } finally {
    native.release();
  }
}

/** A promise settled later, that never causes an unhandled rejection by itself. */
class Outcome {
  constructor() {
    this.settled = false;
    this.value = undefined;
    this.error = undefined;
    this.waiters = [];
  }
  resolve(v) {
    if (this.settled) return;
    this.settled = true;
    this.value = v;
    for (const w of this.waiters.splice(0)) w.resolve(v);
  }
  reject(e) {
    if (this.settled) return;
    this.settled = true;
    this.error = e;
    for (const w of this.waiters.splice(0)) w.reject(e);
  }
  /** A fresh promise for one waiter. */
  promise() {
    if (this.settled) return this.error ? Promise.reject(this.error) : Promise.resolve(this.value);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
}

module.exports = { envList, timeoutValue, signalNumber, holding, Outcome };
