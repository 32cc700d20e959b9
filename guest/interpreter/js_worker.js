// SPDX-License-Identifier: Apache-2.0
// JavaScript side of the code interpreter service (docs/code-interpreter.md).
//
// Started by server.py as `node --expose-internals js_worker.js --control-fd N`, one process
// per javascript context. Cells run in one persistent `vm` context, so top-level declarations
// persist between them. Node.js 18 or later, no packages.
//
// A cell with top-level `await` is rewritten into an async function as Node's own REPL does
// it (its internal processTopLevelAwait, hence --expose-internals): declarations stay
// top-level, the last expression is returned.
//
// Control socket (fd N, one JSON object per line), as for the Python worker:
//   server -> worker  {"op": "exec", "code": S, "envs": {K: V}, "reseed": B, "count": N}
//   worker -> server  {"type": "ready"} once; per execution {"type": "started"}, then "result"
//                     and "error" answers (the protocol's shapes), then
//                     {"type": "done", "exit_code": null} once stdout and stderr are flushed.
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const util = require('util');
const vm = require('vm');
const { createRequire } = require('module');

const MAX_MESSAGE = 64 * 1024 * 1024 - 4096; // the service's line limit, with room to spare
const INTERRUPTED = 'Script execution was interrupted by `SIGINT`';

let processTopLevelAwait = null;
try {
  ({ processTopLevelAwait } = require('internal/repl/await'));
} catch {
  // Another Node.js build: top-level await stays V8's syntax error, which says so.
}

const fdArg = process.argv.indexOf('--control-fd');
const control = new net.Socket({
  fd: Number(process.argv[fdArg + 1]), readable: true, writable: true,
});

function send(msg) {
  let line = JSON.stringify(msg);
  const size = Buffer.byteLength(line);
  if (size > MAX_MESSAGE) {
    line = JSON.stringify({
      type: 'error', name: 'ResultTooLarge',
      value: `a result of ${size} bytes exceeds the service's line limit`,
      traceback: '',
    });
  }
  control.write(line + '\n');
}

// The context: a fresh global object with Node's own globals (process, Buffer, timers,
// URL, fetch, ...) added, a console writing to our stdout/stderr, and require() resolving
// from the working directory.
const context = vm.createContext({});
const contextGlobal = vm.runInContext('globalThis', context);
for (const name of Object.getOwnPropertyNames(globalThis)) {
  if (name === 'global' || name in contextGlobal) continue;
  Object.defineProperty(contextGlobal, name, Object.getOwnPropertyDescriptor(globalThis, name));
}
const cellModule = { exports: {} };
Object.assign(contextGlobal, {
  global: contextGlobal,
  console: new console.Console({ stdout: process.stdout, stderr: process.stderr }),
  require: createRequire(path.join(process.cwd(), '[cell]')),
  module: cellModule,
  exports: cellModule.exports,
  __filename: path.join(process.cwd(), '[cell]'),
  __dirname: process.cwd(),
});

// Errors of callbacks and promises nobody awaits would end the process: report them instead.
function report(what, e) {
  const d = describe(e);
  process.stderr.write(`${what}: ${d.traceback || `${d.name}: ${d.value}`}\n`);
}
process.on('uncaughtException', (e) => report('Uncaught exception', e));
process.on('unhandledRejection', (e) => report('Unhandled promise rejection', e));

// A SIGINT while the synchronous part of a cell runs stops it (breakOnSigint); while the cell's
// promise is awaited it lands here and stops the wait. Otherwise it is ignored.
let stopAwait = null;
process.on('SIGINT', () => {
  if (stopAwait) stopAwait();
});

function awaitInterruptible(promise) {
  return new Promise((resolve, reject) => {
    stopAwait = () => reject(new Error(INTERRUPTED));
    promise.then(resolve, reject);
  }).finally(() => {
    stopAwait = null;
  });
}

// The stack without the frames of this worker and of node:vm below the cell's own.
function cleanStack(stack) {
  const lines = stack.split('\n');
  const ours = ['node:vm', __filename, 'node:internal/process/task_queues'];
  const end = lines.findIndex((l) => /^\s+at /.test(l) && ours.some((s) => l.includes(s)));
  return (end < 0 ? lines : lines.slice(0, end)).join('\n');
}

// What was thrown (any value, possibly from the context's realm) as name, value, traceback.
function describe(e) {
  try {
    if (e !== null && (typeof e === 'object' || typeof e === 'function')) {
      return {
        name: typeof e.name === 'string' ? e.name : 'Error',
        value: typeof e.message === 'string' ? e.message : util.inspect(e),
        traceback: typeof e.stack === 'string' ? cleanStack(e.stack) : '',
      };
    }
    return { name: 'Error', value: util.inspect(e), traceback: '' };
  } catch {
    return { name: 'Error', value: '<an exception that cannot be described>', traceback: '' };
  }
}

// V8 seeds Math.random once per process: a worker started before a template snapshot would
// give every clone the same sequence. On request (the first real execution) it is replaced by
// xoshiro128** seeded from the kernel.
function reseedMathRandom() {
  const seed = new Uint32Array(4);
  const fd = fs.openSync('/dev/urandom', 'r');
  try {
    fs.readSync(fd, seed, 0, 16, null);
  } finally {
    fs.closeSync(fd);
  }
  if (!(seed[0] | seed[1] | seed[2] | seed[3])) seed[0] = 1; // the all-zero state is stuck
  let [a, b, c, d] = seed;
  const rotl = (x, k) => (x << k) | (x >>> (32 - k));
  const next = () => {
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return result;
  };
  const random = () => ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992;
  Object.defineProperty(vm.runInContext('Math', context), 'random', {
    value: random, writable: true, configurable: true, enumerable: false,
  });
}

function applyEnvs(envs) {
  const saved = {};
  for (const [key, value] of Object.entries(envs)) {
    const set = Object.prototype.hasOwnProperty.call(process.env, key);
    saved[key] = set ? process.env[key] : undefined;
    process.env[key] = value;
  }
  return saved;
}

function restoreEnvs(saved) {
  for (const [key, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
}

// The cell as a script; one with top-level await as the REPL's async wrapper, whose promise
// gives the last expression's value (`boxed`: as {value}, in newer Node versions).
function compile(code, filename) {
  try {
    return { script: new vm.Script(code, { filename }), wrapped: false };
  } catch (e) {
    const awaits = e.name === 'SyntaxError' && processTopLevelAwait !== null;
    const rewritten = awaits ? processTopLevelAwait(code) : null;
    if (!rewritten) throw e;
    const marker = 'return { value: (';
    return {
      script: new vm.Script(rewritten, { filename }),
      wrapped: true,
      boxed: rewritten.includes(marker) && !code.includes(marker),
    };
  }
}

const flushed = (stream) => new Promise((resolve) => stream.write('', resolve));

async function runCell(msg) {
  const saved = applyEnvs(msg.envs || {});
  try {
    send({ type: 'started' });
    if (msg.reseed) reseedMathRandom();
    const { script, wrapped, boxed } = compile(msg.code, `<cell ${msg.count}>`);
    let value = script.runInContext(context, { breakOnSigint: true });
    if (wrapped) {
      value = await awaitInterruptible(value);
      if (boxed) value = value === undefined ? undefined : value.value;
    }
    if (util.types.isPromise(value)) value = await awaitInterruptible(value);
    if (value !== undefined) {
      send({ type: 'result', is_main_result: true, data: { 'text/plain': util.inspect(value) } });
    }
  } catch (e) {
    send({ type: 'error', ...describe(e) });
  } finally {
    restoreEnvs(saved);
    await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
    send({ type: 'done', exit_code: null });
  }
}

// Requests arrive one at a time (the service runs one cell per context at once); they are
// chained anyway so that a cell never starts before the previous one is done.
let queue = Promise.resolve();
let parts = []; // the start of a line not complete yet
control.on('data', (chunk) => {
  let start = 0;
  let nl;
  while ((nl = chunk.indexOf(10, start)) >= 0) {
    parts.push(chunk.subarray(start, nl));
    const msg = JSON.parse(Buffer.concat(parts).toString('utf8'));
    parts = [];
    queue = queue.then(() => runCell(msg));
    start = nl + 1;
  }
  if (start < chunk.length) parts.push(chunk.subarray(start));
});
control.on('end', () => process.exit(0)); // the service is gone
control.on('error', () => process.exit(0));

send({ type: 'ready' });
