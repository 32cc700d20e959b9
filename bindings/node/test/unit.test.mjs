// SPDX-License-Identifier: Apache-2.0
// Native tests of the Node binding (no guest): loading, argument checking, error mapping.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as lib from '../index.mjs';

const {
  Sandbox,
  Template,
  codes,
  SandboxError,
  InvalidArgumentError,
  NotFoundError,
  TimeoutError,
  NotEnoughSpaceError,
  InterruptedError,
  NotRunningError,
  CommandExitError,
} = lib;
const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

test('loads', () => {
  assert.match(Sandbox.version, /^\d+\.\d+\.\d+$/);
  // CommonJS and ESM entry points are the same objects
  const cjs = require('../index.js');
  assert.equal(cjs.Sandbox, Sandbox);
  assert.equal(lib.default, Sandbox);
  // the codes come from sandbox.h through the addon
  assert.equal(codes.SBX_EINVAL, -1);
  assert.equal(codes.SBX_ENOENT, -13);
  assert.equal(codes.SBX_EAGAIN, -22);
  assert.equal(Object.keys(codes).length, 22);
});

test('error_classes', () => {
  const { makeError } = require('../lib/errors.js');
  const cases = [
    [codes.SBX_ENOENT, NotFoundError],
    [codes.SBX_EINVAL, InvalidArgumentError],
    [codes.SBX_ETIMEDOUT, TimeoutError],
    [codes.SBX_ENOSPC, NotEnoughSpaceError],
    [codes.SBX_EINTR, InterruptedError],
    [codes.SBX_EDEAD, NotRunningError],
    [codes.SBX_ESTATE, NotRunningError],
    [codes.SBX_EKVM, SandboxError],
  ];
  for (const [code, Cls] of cases) {
    const e = makeError(code, 'context message');
    assert.ok(e instanceof Cls && e instanceof SandboxError && e instanceof Error, `${code}`);
    assert.equal(e.code, code);
    assert.equal(e.message, 'context message');
    assert.equal(e.name, Cls.name);
    assert.match(e.codeName, /^SBX_E/);
  }
  // without a message: the library's description
  assert.equal(makeError(codes.SBX_ENOENT).message, 'no such file, directory, user or process');
  const ce = new CommandExitError({ exitCode: 2, stdout: 'o', stderr: 'bad thing\n', error: undefined, signal: 0 });
  assert.equal(ce.exitCode, 2);
  assert.equal(ce.stdout, 'o');
  assert.match(ce.message, /exited with code 2: bad thing/);
});

test('create_argument_errors', async () => {
  const bad = [
    { memoryMB: -1 },
    { memoryMB: 1.5 },
    { cpuCount: 'two' },
    { template: 5 },
    { timeoutMs: -5 },
    { envs: 5 },
    { envs: { 'A=B': 'x' } },
    { metadata: 'x' },
    { disks: [{}] },
    { disks: 'x' },
    { kernel: 'a\u0000b' },
    { maxBufferMB: -1 },
    { maxBufferMB: 70000 },
    { maxProcesses: 1.5 },
    { cgroup: '/sys/fs/cgroup' },
  ];
  for (const opts of bad) {
    await assert.rejects(Sandbox.create(opts), InvalidArgumentError, JSON.stringify(opts));
  }
});

test('native_argument_errors', async () => {
  const native = require('../lib/native.js');
  // handles are checked: a wrong object is an InvalidArgumentError, not a crash
  assert.throws(() => native.info({}), InvalidArgumentError);
  assert.throws(() => native.exec(null, { cmd: 'x' }), /not a sandbox handle/);
  assert.throws(() => native.pumpWrite({}, 'x'), /not a process or watch handle/);
  assert.throws(() => native.fileRead(42, 10), /not a file handle/);
  // option types of operations are checked before anything runs
  const { makeError } = require('../lib/errors.js');
  assert.ok(makeError);
  const fake = Object.create(null);
  assert.throws(() => native.kill(fake), InvalidArgumentError);
  assert.throws(() => native.setErrorFactory(5), InvalidArgumentError);
});

test('process_exits_cleanly', () => {
  // loading the addon and doing nothing leaves no handle that keeps the process alive
  const r = spawnSync(
    process.execPath,
    ['--input-type=module', '-e', `import { Sandbox } from ${JSON.stringify(path.join(here, '../index.mjs'))}; console.log(Sandbox.version);`],
    { encoding: 'utf8', timeout: 30000 },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^\d+\.\d+\.\d+\n$/);
});

test('create_without_kvm_fails_cleanly', async (t) => {
  // Where KVM cannot boot guests (this is the native tier), create() must reject with the
  // library's reason and leave nothing behind; where it can, use a missing kernel instead.
  const t0 = Date.now();
  await assert.rejects(Sandbox.create({ kernel: '/nonexistent/vmlinux', memoryMB: 256 }), (e) => {
    assert.ok(e instanceof SandboxError);
    assert.ok([codes.SBX_ENOKVM, codes.SBX_EIMAGE].includes(e.code), `${e.code} ${e.message}`);
    assert.ok(e.message.length > 10);
    return true;
  });
  assert.ok(Date.now() - t0 < 10000);
  assert.deepEqual(await Sandbox.list({ query: { metadata: { never: 'created' } } }), []);
});

test('every_public_function_is_bound', async () => {
  // Every SBX_API function of sandbox.h is called by the addon, so every C capability is
  // reachable from JavaScript. sbx_metadata (one key) is covered by sbx_metadata_at (all).
  const { readFileSync } = await import('node:fs');
  const header = readFileSync(path.join(here, '..', '..', '..', 'include', 'sandbox.h'), 'utf8');
  const addon = readFileSync(path.join(here, '..', 'src', 'addon.c'), 'utf8');
  const names = [...header.matchAll(/^SBX_API\s+[^(]*?\b(sbx_[a-z_]+)\s*\(/gm)].map((m) => m[1]);
  assert.ok(names.length > 50, `only ${names.length} functions found in sandbox.h`);
  const covered = new Set(['sbx_metadata']);
  const missing = names.filter((n) => !covered.has(n) && !new RegExp(`\\b${n}\\b`).test(addon));
  assert.deepEqual(missing, []);
});

test('template_argument_errors', async () => {
  // template names a template of the store (not an image); bad template and snapshot
  // arguments fail before anything boots.
  const { mkdtempSync, rmSync } = await import('node:fs');
  const os = await import('node:os');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sbx-node-unit-'));
  try {
    await assert.rejects(Sandbox.create({ template: 'no-such-template', templateDir: dir }), (e) => {
      assert.ok(e instanceof NotFoundError, `${e}`);
      assert.match(e.message, /no-such-template/);
      return true;
    });
    await assert.rejects(Sandbox.create({ template: 'x', rootfs: 'base' }), InvalidArgumentError);
    await assert.rejects(Sandbox.create({ templateDir: 5 }), InvalidArgumentError);
    await assert.rejects(Sandbox.resume(5), InvalidArgumentError);
    await assert.rejects(Sandbox.resume('/x', { envs: { A: 'b' } }), InvalidArgumentError);
    await assert.rejects(Sandbox.resume('/x', { network: false }), InvalidArgumentError);
    await assert.rejects(Template.build({ name: 't', templateDir: dir }), InvalidArgumentError);
    await assert.rejects(Template.build({ name: 't', dockerfile: 'D', dockerfileText: 'FROM base' }), InvalidArgumentError);
    await assert.rejects(Template.build({ name: 't', dockerfileText: 'FROM base', tags: 'a' }), InvalidArgumentError);
    await assert.rejects(Template.build({ name: 't', dockerfileText: 'FROM base', onOutput: 5 }), InvalidArgumentError);
    await assert.rejects(Template.build({ dockerfileText: 'FROM base', templateDir: dir }), InvalidArgumentError);
    await assert.rejects(Template.remove(5), InvalidArgumentError);
    assert.deepEqual(await Template.list({ templateDir: path.join(dir, 'none') }), []);
    await assert.rejects(Template.remove('nope', { templateDir: dir }), NotFoundError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('code_results', () => {
  // runCode's results: formats by E2B's names, parsed JSON, the main result's text, logs.
  const { Result, Execution } = lib;
  const native = require('../lib/native.js');
  assert.throws(() => native.runCode({}, { code: '1' }), /not a sandbox handle/);
  assert.throws(() => native.codeInterrupt(null, 'python'), /not a sandbox handle/);
  const { Execution: E } = require('../lib/code.js');
  assert.equal(E, Execution);
  const raw = (results, more = {}) => ({
    results,
    stdout: 'a\nb',
    stderr: '',
    error: null,
    executionCount: 3,
    interrupted: false,
    timedOut: false,
    restarted: false,
    exitCode: -1,
    context: 'python',
    ...more,
  });
  const data = { 'text/plain': '42', 'text/html': '<b>42</b>', 'application/json': '{"a":[1,2]}', 'x-custom/type': 'raw' };
  const ex = new Execution(raw([{ isMainResult: false, data: { 'image/png': 'iVBORw0KGgo=' } }, { isMainResult: true, data }]));
  const [fig, main] = ex.results;
  assert.ok(main instanceof Result);
  assert.deepEqual([main.text, main.html, main.png, fig.png], ['42', '<b>42</b>', undefined, 'iVBORw0KGgo=']);
  assert.deepEqual(main.json, { a: [1, 2] });
  assert.deepEqual(main.formats(), ['text', 'html', 'json', 'x-custom/type']);
  assert.equal(ex.text, '42');
  assert.deepEqual(ex.logs, { stdout: ['a\n', 'b'], stderr: [] });
  assert.deepEqual([ex.exitCode, ex.error, ex.executionCount], [undefined, undefined, 3]);
  const bash = new Execution(raw([], { exitCode: 3, error: { name: 'E', value: 'v', traceback: 't' } }));
  assert.deepEqual([bash.exitCode, bash.text, bash.error.name], [3, undefined, 'E']);
  assert.ok(bash.error instanceof lib.ExecutionError);
});
