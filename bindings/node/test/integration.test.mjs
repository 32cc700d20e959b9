// SPDX-License-Identifier: Apache-2.0
// Guest-booting tests of the Node binding: every test boots a real microVM (no mocks).
// ctest runs each test on its own (test/ctest-run.mjs); `node --test test/` runs them all.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, symlinkSync, rmSync, readlinkSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Sandbox,
  Template,
  codes,
  InvalidArgumentError,
  CommandExitError,
  TimeoutError,
  NotFoundError,
  NotRunningError,
  InterruptedError,
  SandboxError,
  OutputMessage,
  ExecutionError,
} from '../index.mjs';
import { boot, codeSandbox, sleep, until, patternBytes } from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

test('commands_run', async (t) => {
  const sb = await boot(t, { envs: { SANDBOX_WIDE: 'yes' } });
  if (!sb) return;
  const r = await sb.commands.run('echo out; echo err >&2; printf "%s %s" "$(whoami)" "$PWD"');
  assert.equal(r.exitCode, 0);
  assert.equal(r.stdout, `out\nuser /home/user`);
  assert.equal(r.stderr, 'err\n');
  assert.equal(r.error, undefined);

  // envs (sandbox-wide under per-call), cwd, user, argv form, stdin data
  const e = await sb.commands.run('echo "$SANDBOX_WIDE $MINE"; pwd; id -u', {
    envs: { MINE: 'mine' },
    cwd: '/tmp',
    user: 'root',
  });
  assert.equal(e.stdout, 'yes mine\n/tmp\n0\n');
  const a = await sb.commands.run(['python3', '-c', 'import sys; print(sys.argv[1:])', 'a b', "c'd"]);
  assert.equal(a.stdout, `['a b', "c'd"]\n`);
  const s = await sb.commands.run('tr a-z A-Z', { stdin: 'hello stdin' });
  assert.equal(s.stdout, 'HELLO STDIN');

  // non-zero exit: CommandExitError with the output, as E2B does
  await assert.rejects(sb.commands.run('echo partial; echo broken >&2; exit 3'), (err) => {
    assert.ok(err instanceof CommandExitError);
    assert.ok(err instanceof SandboxError);
    assert.equal(err.exitCode, 3);
    assert.equal(err.stdout, 'partial\n');
    assert.equal(err.stderr, 'broken\n');
    return true;
  });
  // a missing cwd is the guest's answer, NotFoundError
  await assert.rejects(sb.commands.run('true', { cwd: '/no/such/dir' }), NotFoundError);
  // timeoutMs kills the command: TimeoutError carrying what it printed
  const t0 = Date.now();
  await assert.rejects(sb.commands.run('echo before; sleep 30', { timeoutMs: 1500 }), (err) => {
    assert.ok(err instanceof TimeoutError, `${err}`);
    assert.equal(err.stdout, 'before\n');
    return true;
  });
  assert.ok(Date.now() - t0 < 20000);
});

test('commands_streaming', async (t) => {
  const sb = await boot(t);
  if (!sb) return;
  const seen = [];
  const errs = [];
  const t0 = Date.now();
  const r = await sb.commands.run('for i in 1 2 3 4; do echo line$i; echo e$i >&2; sleep 0.4; done', {
    onStdout: (d) => seen.push([Date.now() - t0, d]),
    onStderr: (d) => errs.push(d),
  });
  const total = Date.now() - t0;
  assert.equal(r.stdout, 'line1\nline2\nline3\nline4\n');
  assert.equal(seen.map((x) => x[1]).join(''), r.stdout);
  assert.equal(errs.join(''), 'e1\ne2\ne3\ne4\n');
  assert.ok(seen.length >= 2, `output arrived in ${seen.length} pieces`);
  // the first line arrived well before the command finished: streamed, not buffered
  assert.ok(seen[0][0] < total - 800, `first chunk at ${seen[0][0]} ms of ${total} ms`);

  // a lot of output, including a multi-byte character split anywhere
  const big = await sb.commands.run(`python3 -c "import sys; sys.stdout.write('é' * 300000)"`, {
    onStdout: () => {},
  });
  assert.equal(big.stdout, 'é'.repeat(300000));

  // a throwing callback stops the command and the error comes back
  await assert.rejects(
    sb.commands.run('while true; do echo x; sleep 0.05; done', {
      onStdout: () => {
        throw new Error('callback says stop');
      },
    }),
    /callback says stop/,
  );
});

test('commands_background', async (t) => {
  const sb = await boot(t);
  if (!sb) return;
  const lines = [];
  const h = await sb.commands.run('for i in 1 2 3; do echo tick$i; sleep 0.3; done; exit 4', {
    background: true,
    onStdout: (d) => lines.push(d),
    tag: 'ticker',
  });
  assert.ok(h.pid > 1);
  const listed = await sb.commands.list();
  const mine = listed.find((p) => p.pid === h.pid);
  assert.ok(mine, 'the background command is listed');
  assert.equal(mine.tag, 'ticker');
  await assert.rejects(h.wait(), (e) => e instanceof CommandExitError && e.exitCode === 4);
  assert.equal(lines.join(''), 'tick1\ntick2\ntick3\n');
  assert.equal(h.exitCode, 4);
  assert.equal(h.stdout, 'tick1\ntick2\ntick3\n');

  // kill a long-running one: wait() reports the signal
  const sleeper = await sb.commands.run('sleep 600', { background: true });
  assert.equal(await sleeper.kill(), true);
  await assert.rejects(sleeper.wait(), (e) => e instanceof CommandExitError && e.signal === 9);
  assert.equal(await sb.commands.kill(sleeper.pid), false, 'no such process any more');

  // disconnect, let it produce output, connect again by pid: nothing lost
  const bg = await sb.commands.run('echo first; sleep 1; echo second', { background: true });
  await until(() => bg.stdout.includes('first'), 10000, 'first line');
  await bg.disconnect();
  await sleep(1500);
  const again = await sb.commands.connect(bg.pid);
  const res = await again.wait();
  assert.equal(res.exitCode, 0);
  assert.match(res.stdout, /second\n$/);
});

test('commands_stdin', async (t) => {
  const sb = await boot(t);
  if (!sb) return;
  const h = await sb.commands.run('cat; echo done', { background: true, stdin: true });
  await h.sendStdin('hello ');
  await h.sendStdin(Buffer.from('world\n'));
  await h.closeStdin();
  const r = await h.wait();
  assert.equal(r.stdout, 'hello world\ndone\n');

  // by pid, through commands.sendStdin / closeStdin
  const h2 = await sb.commands.run('wc -c', { background: true, stdin: true });
  await sb.commands.sendStdin(h2.pid, 'x'.repeat(100000));
  await sb.commands.closeStdin(h2.pid);
  assert.equal((await h2.wait()).stdout.trim(), '100000');

  // stdin of a process that was not started with stdin: true is refused
  const h3 = await sb.commands.run('sleep 5', { background: true });
  await assert.rejects(h3.sendStdin('x'), SandboxError);
  await h3.kill();
});

test('files_roundtrip', async (t) => {
  const sb = await boot(t);
  if (!sb) return;
  // text (with non-ASCII), creating parent directories
  await sb.files.write('/tmp/a/b/c.txt', 'héllo\nwörld\n');
  assert.equal(await sb.files.read('/tmp/a/b/c.txt'), 'héllo\nwörld\n');
  const cat = await sb.commands.run('cat /tmp/a/b/c.txt');
  assert.equal(cat.stdout, 'héllo\nwörld\n');

  // bytes: 3 MiB of a reproducible pattern, checked by the guest too
  const data = patternBytes(3 << 20);
  const sha = createHash('sha256').update(data).digest('hex');
  const info = await sb.files.write('big.bin', data);
  assert.equal(info.name, 'big.bin');
  const back = await sb.files.read('big.bin', { format: 'bytes' });
  assert.ok(back instanceof Uint8Array);
  assert.equal(back.length, data.length);
  assert.equal(createHash('sha256').update(back).digest('hex'), sha);
  assert.equal((await sb.commands.run('sha256sum big.bin')).stdout.split(' ')[0], sha);

  // stream: write from an async iterable in pieces, read back as a web stream
  async function* pieces() {
    for (let off = 0; off < data.length; off += 700000) yield data.subarray(off, off + 700000);
  }
  await sb.files.write('/tmp/streamed.bin', pieces());
  const stream = await sb.files.read('/tmp/streamed.bin', { format: 'stream' });
  const h = createHash('sha256');
  let n = 0;
  for await (const chunk of stream) {
    h.update(chunk);
    n += chunk.length;
  }
  assert.equal(n, data.length);
  assert.equal(h.digest('hex'), sha);

  // a part of a file, blob, append, mode
  const part = await sb.files.read('/tmp/streamed.bin', { format: 'bytes', offset: 1000, length: 10 });
  assert.deepEqual([...part], [...data.subarray(1000, 1010)]);
  const blob = await sb.files.read('/tmp/a/b/c.txt', { format: 'blob' });
  assert.equal(await blob.text(), 'héllo\nwörld\n');
  await sb.files.write('/tmp/log.txt', 'one\n');
  await sb.files.write('/tmp/log.txt', 'two\n', { append: true });
  assert.equal(await sb.files.read('/tmp/log.txt'), 'one\ntwo\n');
  await sb.files.write('/tmp/run.sh', '#!/bin/sh\necho ran\n', { mode: 0o755 });
  assert.equal((await sb.commands.run('/tmp/run.sh')).stdout, 'ran\n');

  // several files at once
  const infos = await sb.files.write([
    { path: '/tmp/m/1.txt', data: 'one' },
    { path: '/tmp/m/2.txt', data: new TextEncoder().encode('two') },
  ]);
  assert.deepEqual(infos.map((i) => i.name), ['1.txt', '2.txt']);
  assert.equal(await sb.files.read('/tmp/m/2.txt'), 'two');

  await assert.rejects(sb.files.read('/tmp/nope.txt'), NotFoundError);
});

test('files_ops', async (t) => {
  const sb = await boot(t);
  if (!sb) return;
  assert.equal(await sb.files.makeDir('/tmp/w/x/y'), true);
  assert.equal(await sb.files.makeDir('/tmp/w/x/y'), false);
  await sb.files.write('/tmp/w/f.txt', '12345');
  await sb.commands.run('ln -s f.txt /tmp/w/link');

  const top = await sb.files.list('/tmp/w');
  assert.deepEqual(top.map((e) => e.name).sort(), ['f.txt', 'link', 'x']);
  const deep = await sb.files.list('/tmp/w', { depth: 3 });
  assert.ok(deep.some((e) => e.path === '/tmp/w/x/y' && e.type === 'dir'));

  const f = await sb.files.getInfo('/tmp/w/f.txt');
  assert.equal(f.type, 'file');
  assert.equal(f.size, 5);
  assert.equal(f.permissions, 'rw-r--r--');
  assert.equal(f.owner, 'user');
  assert.ok(f.modifiedTime instanceof Date && Math.abs(Date.now() - f.modifiedTime) < 3600e3);
  const l = await sb.files.getInfo('/tmp/w/link');
  assert.equal(l.type, 'symlink');
  assert.equal(l.symlinkTarget, 'f.txt');

  assert.equal(await sb.files.exists('/tmp/w/f.txt'), true);
  assert.equal(await sb.files.exists('/tmp/w/none'), false);
  await assert.rejects(sb.files.getInfo('/tmp/w/none'), NotFoundError);
  await assert.rejects(sb.files.list('/tmp/w/none'), NotFoundError);

  const moved = await sb.files.rename('/tmp/w/f.txt', '/tmp/w/x/g.txt');
  assert.equal(moved.path, '/tmp/w/x/g.txt');
  assert.equal(await sb.files.exists('/tmp/w/f.txt'), false);
  await sb.files.remove('/tmp/w/x');
  assert.equal(await sb.files.exists('/tmp/w/x'), false);

  // copy a host tree in and back out
  const host = mkdtempSync(path.join(os.tmpdir(), 'sbx-node-'));
  t.after(() => rmSync(host, { recursive: true, force: true }));
  mkdirSync(path.join(host, 'src/sub'), { recursive: true });
  writeFileSync(path.join(host, 'src/a.txt'), 'A');
  writeFileSync(path.join(host, 'src/sub/b.bin'), Buffer.from(patternBytes(200000)));
  symlinkSync('a.txt', path.join(host, 'src/ln'));
  let progressCalls = 0;
  await sb.files.copyIn(path.join(host, 'src'), '/tmp/tree', { onProgress: () => void progressCalls++ });
  assert.ok(progressCalls > 0);
  assert.equal(await sb.files.read('/tmp/tree/a.txt'), 'A');
  assert.equal((await sb.files.getInfo('/tmp/tree/sub/b.bin')).size, 200000);
  await sb.files.copyOut('/tmp/tree', path.join(host, 'out'));
  assert.equal(readFileSync(path.join(host, 'out/a.txt'), 'utf8'), 'A');
  assert.deepEqual(readFileSync(path.join(host, 'out/sub/b.bin')), Buffer.from(patternBytes(200000)));
  assert.equal(readlinkSync(path.join(host, 'out/ln')), 'a.txt');
});

test('pty', async (t) => {
  const sb = await boot(t);
  if (!sb) return;
  let screen = '';
  const dec = new TextDecoder();
  const term = await sb.pty.create({ rows: 30, cols: 100, onData: (d) => (screen += dec.decode(d, { stream: true })) });
  assert.ok(term.pid > 1);
  await term.sendInput('stty size; echo "tty: $TERM"\n');
  await until(() => screen.includes('30 100') && screen.includes('tty: xterm-256color'), 15000, 'stty output');
  await term.resize({ rows: 40, cols: 120 });
  await sb.pty.sendInput(term.pid, 'stty size\n');
  await until(() => screen.includes('40 120'), 15000, 'resized stty output');
  await term.sendInput('exit 7\n');
  await assert.rejects(term.wait(), (e) => e instanceof CommandExitError && e.exitCode === 7);

  // a terminal killed from outside
  const t2 = await sb.pty.create({ cmd: 'sleep 600' });
  assert.equal(await sb.pty.kill(t2.pid), true);
  await assert.rejects(t2.wait(), (e) => e instanceof CommandExitError && e.signal === 9);
});

test('watch', async (t) => {
  const sb = await boot(t);
  if (!sb) return;
  await sb.files.makeDir('/tmp/watched/sub');
  const events = [];
  let exited = false;
  const w = await sb.files.watchDir('/tmp/watched', (e) => events.push(e), {
    recursive: true,
    onExit: () => (exited = true),
  });
  await sb.files.write('/tmp/watched/new.txt', 'x');
  await sb.commands.run('echo more >> /tmp/watched/sub/deep.txt; rm /tmp/watched/new.txt');
  await until(
    () =>
      events.some((e) => e.type === 'create' && e.name === 'sub/deep.txt') &&
      events.some((e) => e.type === 'remove' && e.name === 'new.txt'),
    15000,
    `watch events (got ${JSON.stringify(events)})`,
  );
  assert.ok(events.some((e) => e.name === 'new.txt' && (e.type === 'create' || e.type === 'rename')));
  await w.stop();
  await until(() => exited, 5000, 'onExit');
  const n = events.length;
  await sb.files.write('/tmp/watched/after.txt', 'x');
  await sleep(500);
  assert.equal(events.length, n, 'no events after stop()');
});

test('lifecycle', async (t) => {
  const sb = await boot(t, { metadata: { owner: 'node-test', run: String(process.pid) }, cpuCount: 1, timeoutMs: 0 });
  if (!sb) return;
  assert.match(sb.sandboxId, /^[a-z0-9]+$/);
  assert.deepEqual(sb.metadata, { owner: 'node-test', run: String(process.pid) });
  const info = await sb.getInfo();
  assert.equal(info.sandboxId, sb.sandboxId);
  assert.equal(info.templateId, 'base');
  assert.equal(info.state, 'running');
  assert.equal(info.memoryMB, 256);
  assert.equal(info.cpuCount, 1);
  assert.equal(info.endAt, undefined);
  assert.match(info.osName, /Debian/);
  assert.equal(await sb.isRunning(), true);

  const [m] = await sb.getMetrics();
  assert.ok(m.memTotal > 100 * 1024 * 1024 && m.memUsed > 0 && m.memUsed < m.memTotal);
  assert.ok(m.diskTotal > 0 && m.cpuCount === 1 && m.processes > 0);

  const listed = await Sandbox.list({ query: { metadata: { run: String(process.pid) } } });
  assert.deepEqual(listed.map((s) => s.sandboxId), [sb.sandboxId]);
  assert.equal(listed[0].pid, process.pid);

  // setTimeout: the lifetime ends on its own
  await sb.setTimeout(1500);
  assert.ok((await sb.getInfo()).endAt instanceof Date);
  await until(async () => !(await sb.isRunning()), 15000, 'lifetime to end');
  await assert.rejects(sb.commands.run('true'), NotRunningError);

  // kill: resolves, then everything rejects; the console is still readable
  assert.equal(await sb.kill(), true);
  assert.equal(await sb.kill(), false);
  assert.equal(sb.state, 'killed');
  assert.equal(await sb.isRunning(), false);
  await assert.rejects(sb.files.read('/etc/hostname'), NotRunningError);
  assert.match(sb.console(), /\S/);
  assert.deepEqual((await Sandbox.list({ query: { metadata: { run: String(process.pid) } } })).length, 0);
});

test('kill_interrupts', async (t) => {
  const sb = await boot(t);
  if (!sb) return;
  const bg = await sb.commands.run('sleep 600', { background: true });
  // settle-capturing wrappers: the rejections happen while kill() is awaited
  const outcome = (p) => p.then((v) => ({ v }), (e) => ({ e }));
  const running = outcome(sb.commands.run('sleep 600', { timeoutMs: 0 }));
  const waiting = outcome(bg.wait());
  await sleep(500);
  const t0 = Date.now();
  await sb.kill();
  const r = await running;
  assert.ok(r.e instanceof InterruptedError || r.e instanceof NotRunningError, `${r.e}`);
  assert.match(r.e.message, /killed/);
  const w = await waiting;
  assert.ok(w.e instanceof SandboxError, `${w.e}`);
  assert.ok(Date.now() - t0 < 10000, `kill took ${Date.now() - t0} ms`);
});

test('event_loop_runs', async (t) => {
  const sb = await boot(t);
  if (!sb) return;
  let ticks = 0;
  const iv = setInterval(() => ticks++, 50);
  const t0 = Date.now();
  // a long command, a big transfer and a wait all at once: the loop must keep ticking
  await Promise.all([
    sb.commands.run('sleep 3'),
    sb.files.write('/tmp/big', patternBytes(4 << 20)),
    sb.commands.run('sleep 2', { background: true }).then((h) => h.wait()),
  ]);
  clearInterval(iv);
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= 2900);
  // at 50 ms a tick at least a third of the expected ticks must have happened
  assert.ok(ticks >= elapsed / 50 / 3, `${ticks} ticks in ${elapsed} ms`);
});

function runNode(script, timeoutMs = 120000) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      cwd: here,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child did not exit within ${timeoutMs} ms; stdout: ${out} stderr: ${err}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, err });
    });
  });
}

test('clean_exit', async (t) => {
  // Boot in this process first, so the test skips where guests cannot boot.
  const probe = await boot(t);
  if (!probe) return;
  await probe.kill();
  const lib = JSON.stringify(path.join(here, '..', 'index.mjs'));
  const tag = `exit-${process.pid}`;
  // 1. the script ends with a sandbox open and a background command streaming output
  const a = await runNode(`
    import { Sandbox } from ${lib};
    const sb = await Sandbox.create({ memoryMB: 256, metadata: { tag: '${tag}' } });
    const h = await sb.commands.run('while true; do echo x; sleep 0.1; done', { background: true, onStdout: () => {} });
    await sb.files.watchDir('/tmp', () => {});
    console.log('opened', sb.sandboxId, h.pid);
  `);
  assert.equal(a.code, 0, a.err);
  assert.match(a.out, /^opened [a-z0-9]+ \d+/);
  // 2. process.exit() while a command is running
  const b = await runNode(`
    import { Sandbox } from ${lib};
    const sb = await Sandbox.create({ memoryMB: 256, metadata: { tag: '${tag}' } });
    sb.commands.run('sleep 600', { timeoutMs: 0 }).catch(() => {});
    setTimeout(() => { console.log('exiting'); process.exit(5); }, 500);
  `);
  assert.equal(b.code, 5, b.err);
  assert.match(b.out, /exiting/);
  // neither left a registered sandbox behind
  assert.deepEqual(await Sandbox.list({ query: { metadata: { tag } } }), []);
});

test('network', async (t) => {
  // A server on this machine's loopback, reached through the gateway; the policy and its
  // updates; DNS names; a sandbox without network. Traffic stays on this machine.
  const net = await import('node:net');
  const server = net.createServer((c) => c.end(`hello ${server.address().port}\n`));
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const port = server.address().port;
  const sb = await boot(t, { hostLoopback: true, hosts: { 'svc.test': '10.0.2.2' } });
  if (!sb) return;
  const fetch = (host) =>
    sb.commands.run(`timeout 20 bash -c 'exec 3<>/dev/tcp/${host}/${port} && cat <&3'`);
  assert.equal((await fetch('10.0.2.2')).stdout, `hello ${port}\n`);
  assert.equal((await fetch('svc.test')).stdout, `hello ${port}\n`);
  await sb.updateNetwork({ allowInternetAccess: false });
  await assert.rejects(fetch('10.0.2.2'), (err) => {
    assert.ok(err instanceof CommandExitError);
    assert.notEqual(err.exitCode, 124); // refused at once, not timed out
    return true;
  });
  await sb.updateNetwork({ allowInternetAccess: false, allowOut: [`10.0.2.2:${port}`] });
  assert.equal((await fetch('10.0.2.2')).stdout, `hello ${port}\n`);
  await assert.rejects(sb.updateNetwork({ denyOut: ['10.0.0.0/40'] }), /10\.0\.0\.0\/40/);
  const st = await sb.networkStats();
  assert.ok(st.txFrames > 0 && st.rxFrames > 0 && st.blocked >= 1, JSON.stringify(st));
  await sb.kill();

  const off = await boot(t, { network: false });
  assert.equal((await off.commands.run('ls /sys/class/net')).stdout, 'lo\n');
  await assert.rejects(Sandbox.create({ network: false, hostLoopback: true }), /need a network/);
});

/**
 * fetch() with a deadline on a referenced timer. Once (1 run in many) a fetch to the exposed
 * port stayed unsettled with nothing left keeping the event loop alive, and the test runner
 * ended the test as pending; the timer keeps the loop alive and aborts such a fetch, which
 * `until` then retries.
 */
async function fetchWithin(url, ms = 5000) {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), ms);
  try {
    return await fetch(url, { signal: ac.signal });
  } finally {
    clearTimeout(timer);
  }
}

test('get_host', async (t) => {
  // A server bound to the guest's 127.0.0.1, fetched from this machine (no guest network).
  const sb = await boot(t, { network: false });
  if (!sb) return;
  await sb.files.write('/tmp/www/index.html', 'served from the guest\n');
  await sb.commands.run('python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp/www', { background: true });
  const addr = sb.getHost(8000);
  assert.match(addr, /^127\.0\.0\.1:\d+$/);
  assert.equal(sb.getHost(8000), addr);
  let body;
  await until(async () => {
    try {
      body = await (await fetchWithin(`http://${addr}/index.html`)).text();
      return true;
    } catch {
      return false;
    }
  }, 30000, 'the guest web server');
  assert.equal(body, 'served from the guest\n');
  sb.unexpose(8000);
  await assert.rejects(fetchWithin(`http://${addr}/index.html`));
  assert.throws(() => sb.getHost(0), SandboxError);
});

/** A scratch directory removed when test t ends. */
function scratch(t, prefix) {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Sandboxes made from a snapshot or template take their size from it: only the boot timeout. */
const FROM_SNAPSHOT = { bootTimeoutMs: 120000 };

test('snapshot_then_create', async (t) => {
  // A snapshot (a directory) is a template: a sandbox made from it has the files written
  // before, and both go on independently.
  const sb = await boot(t);
  if (!sb) return;
  const dir = scratch(t, 'sbx-node-snap-');
  await sb.files.write('/home/user/note.txt', 'before the snapshot\n');
  const snap = path.join(dir, 'snap');
  assert.equal(await sb.snapshot(snap), snap);
  await sb.files.write('/home/user/note.txt', 'after the snapshot\n');
  const c = await Sandbox.create({ template: snap, ...FROM_SNAPSHOT });
  t.after(() => c.kill());
  assert.notEqual(c.sandboxId, sb.sandboxId);
  assert.equal(c.templateId, snap);
  assert.equal(await c.files.read('/home/user/note.txt'), 'before the snapshot\n');
  assert.equal((await c.getInfo()).memoryMB, 256);
  await c.files.write('/home/user/note.txt', 'changed in the copy\n');
  assert.equal(await sb.files.read('/home/user/note.txt'), 'after the snapshot\n');
  await assert.rejects(sb.snapshot(snap), SandboxError); // the directory exists
});

test('pause_resume', async (t) => {
  // pause() writes the sandbox to a directory and stops it; resume() brings it back with
  // the same id, its files and its running processes.
  const sb = await boot(t, { metadata: { test: 'pause' } });
  if (!sb) return;
  const dir = scratch(t, 'sbx-node-pause-');
  const id = sb.sandboxId;
  await sb.files.write('/home/user/kept.txt', 'kept across the pause\n');
  await sb.commands.run('sleep 1000', { background: true });
  const p = path.join(dir, 'paused');
  assert.equal(await sb.pause(p), p);
  assert.equal(sb.state, 'paused');
  assert.equal(await sb.isRunning(), false);
  await assert.rejects(sb.files.read('/home/user/kept.txt'), NotRunningError);
  assert.ok(!(await Sandbox.list()).some((s) => s.sandboxId === id));
  const r = await Sandbox.resume(p, { timeoutMs: 120000, ...FROM_SNAPSHOT });
  t.after(() => r.kill());
  assert.equal(r.sandboxId, id);
  assert.equal(r.state, 'running');
  assert.deepEqual(r.metadata, { test: 'pause' });
  assert.equal(await r.files.read('/home/user/kept.txt'), 'kept across the pause\n');
  assert.match((await r.commands.run('pgrep -x sleep')).stdout, /^\d+\n$/);
  assert.ok(!existsSync(p)); // a pause is resumed at most once
  assert.equal(await sb.kill(), false); // the paused object is done; the resumed one stays
  assert.ok((await Sandbox.list()).some((s) => s.sandboxId === id));
  await assert.rejects(Sandbox.resume(p), SandboxError);
});

test('fork', async (t) => {
  // fork(2): two running copies with the parent's files, each independent.
  const sb = await boot(t);
  if (!sb) return;
  await sb.files.write('/home/user/shared.txt', 'from the parent\n');
  const kids = await sb.fork(2, { timeoutMs: 120000 });
  t.after(() => Promise.all(kids.map((k) => k.kill())));
  const ids = new Set(kids.map((k) => k.sandboxId));
  assert.equal(kids.length, 2);
  assert.equal(ids.size, 2);
  assert.ok(!ids.has(sb.sandboxId));
  for (const [i, k] of kids.entries()) {
    assert.equal(await k.files.read('/home/user/shared.txt'), 'from the parent\n');
    await k.files.write('/home/user/mine.txt', `copy ${i}\n`);
  }
  assert.equal(await kids[0].files.read('/home/user/mine.txt'), 'copy 0\n');
  assert.equal(await kids[1].files.read('/home/user/mine.txt'), 'copy 1\n');
  assert.equal(await sb.files.exists('/home/user/mine.txt'), false);
  await kids[0].kill();
  assert.equal((await kids[1].commands.run('cat /home/user/mine.txt')).stdout, 'copy 1\n');
  assert.equal((await sb.commands.run('cat /home/user/shared.txt')).stdout, 'from the parent\n');
  await assert.rejects(sb.fork(0), InvalidArgumentError);
  await assert.rejects(sb.fork(1, { envs: { A: 'b' } }), InvalidArgumentError);
});

test('template_build', async (t) => {
  // Template.build() from a Dockerfile text, a sandbox from it, list and remove.
  const dir = scratch(t, 'sbx-node-tpl-');
  const out = [];
  const steps = [];
  let info;
  try {
    info = await Template.build({
      name: 'nodehello',
      dockerfileText: 'FROM base\nRUN echo hi > /hello && echo built\n',
      memoryMB: 256,
      templateDir: dir,
      onOutput: (stream, text) => out.push(text),
      onProgress: (p) => steps.push(p),
    });
  } catch (e) {
    if (e.code === codes.SBX_ENOTSUP) {
      t.skip(`sbx_template_build is not implemented yet: ${e.message}`);
      return;
    }
    if (e.code === codes.SBX_ENOKVM) {
      t.skip(`cannot boot a guest here: ${e.message.split('\n')[0]}`);
      return;
    }
    throw e;
  }
  assert.equal(info.name, 'nodehello');
  assert.equal(info.isSnapshot, false);
  assert.equal(info.memoryMB, 256);
  assert.equal(info.steps, 1);
  assert.ok(info.buildMs > 0);
  assert.match(out.join(''), /built/);
  assert.ok(steps.some((p) => p.text.includes('echo hi') && p.done), JSON.stringify(steps));
  assert.ok((await Template.list({ templateDir: dir })).some((x) => x.name === 'nodehello'));
  const sb = await Sandbox.create({ template: 'nodehello', templateDir: dir, ...FROM_SNAPSHOT });
  t.after(() => sb.kill());
  assert.equal(await sb.files.read('/hello'), 'hi\n');
  await sb.kill();
  await Template.remove('nodehello', { templateDir: dir });
  assert.ok(!(await Template.list({ templateDir: dir })).some((x) => x.name === 'nodehello'));
  await assert.rejects(Template.remove('nodehello', { templateDir: dir }), NotFoundError);
});

test('code_run', async (t) => {
  // runCode: state across calls, the main result, logs, envs, errors, a timeout.
  const sb = await codeSandbox(t);
  if (!sb) return;
  let e = await sb.runCode("x = 40\nprint('set')\nprint('twice')");
  assert.deepEqual(e.results, []);
  assert.deepEqual(e.logs, { stdout: ['set\n', 'twice\n'], stderr: [] });
  assert.equal(e.text, undefined);
  assert.equal(e.error, undefined);
  e = await sb.runCode('x + 2');
  assert.equal(e.text, '42');
  assert.equal(e.results.length, 1);
  assert.ok(e.results[0].isMainResult);
  assert.deepEqual(e.results[0].formats(), ['text']);
  assert.deepEqual([e.executionCount, e.context, e.exitCode], [2, 'python', undefined]);
  e = await sb.runCode("import os\nprint(os.environ.get('ONLY_NOW'))", { envs: { ONLY_NOW: 'yes' } });
  assert.deepEqual(e.logs.stdout, ['yes\n']);

  const errors = [];
  e = await sb.runCode('def f():\n    return 1 / 0\nf()', { onError: (err) => errors.push(err) });
  assert.ok(e.error instanceof ExecutionError);
  assert.deepEqual([e.error.name, e.error.value], ['ZeroDivisionError', 'division by zero']);
  assert.match(e.error.traceback, /in f/);
  assert.deepEqual(errors, [e.error]);
  await assert.rejects(sb.runCode('1', { context: 'nosuchcontext' }), NotFoundError);
  await assert.rejects(sb.runCode('1', { language: 'cobol' }), InvalidArgumentError);
  await assert.rejects(sb.runCode(5), InvalidArgumentError);

  // a timeout interrupts the code; the context keeps its state
  const t0 = Date.now();
  e = await sb.runCode('while True:\n    pass', { timeoutMs: 2000 });
  assert.ok(e.timedOut && !e.restarted, JSON.stringify(e));
  assert.equal(e.error.name, 'KeyboardInterrupt');
  assert.ok(Date.now() - t0 < 60000);
  assert.equal((await sb.runCode('x')).text, '40');
});

test('code_png', async (t) => {
  // Rich results: a DataFrame as text and HTML, a matplotlib figure as a base64 PNG.
  const sb = await codeSandbox(t);
  if (!sb) return;
  let e = await sb.runCode("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})");
  const df = e.results[0];
  assert.ok(df.isMainResult);
  assert.match(df.text, /a {2}b/);
  assert.match(df.html, /<table/);
  assert.deepEqual(df.formats().slice(0, 2), ['text', 'html']);
  e = await sb.runCode("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nNone");
  assert.equal(e.results.length, 1);
  const fig = e.results[0];
  assert.ok(!fig.isMainResult && fig.formats().includes('png'));
  const png = Buffer.from(fig.png, 'base64');
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [640, 480]);
});

test('code_javascript_bash', async (t) => {
  const sb = await codeSandbox(t);
  if (!sb) return;
  let e = await sb.runCode("const a = 20; console.log('js', a); a * 2 + 2", { language: 'javascript' });
  assert.deepEqual(e.logs.stdout, ['js 20\n']);
  assert.equal(e.text, '42');
  assert.equal(e.context, 'javascript');
  e = await sb.runCode("function g() { throw new TypeError('bad'); }\ng()", { language: 'javascript' });
  assert.deepEqual([e.error.name, e.error.value], ['TypeError', 'bad']);
  assert.match(e.error.traceback, /at g/);
  e = await sb.runCode('cd /tmp && export V=7 && echo out && echo err >&2', { language: 'bash' });
  assert.deepEqual(e.logs, { stdout: ['out\n'], stderr: ['err\n'] });
  assert.equal(e.exitCode, 0);
  e = await sb.runCode('echo $V $(pwd); (exit 3)', { language: 'bash' });
  assert.deepEqual(e.logs.stdout, ['7 /tmp\n']);
  assert.equal(e.exitCode, 3);
});

test('code_contexts', async (t) => {
  const sb = await codeSandbox(t);
  if (!sb) return;
  const a = await sb.createCodeContext();
  const b = await sb.createCodeContext({ cwd: '/tmp', language: 'python' });
  assert.notEqual(a.id, b.id);
  assert.deepEqual([a.language, a.cwd, b.cwd], ['python', '/home/user', '/tmp']);
  await sb.runCode("z = 'a'", { context: a });
  assert.equal((await sb.runCode("import os\n'z' in dir(), os.getcwd()", { context: b.id })).text, "(False, '/tmp')");
  const ids = (await sb.listCodeContexts()).map((c) => c.id);
  assert.ok(ids.includes(a.id) && ids.includes(b.id), ids.join(' '));
  await sb.restartCodeContext(a);
  const e = await sb.runCode("'z' in dir()", { context: a });
  assert.equal(e.text, 'False');
  assert.equal(e.executionCount, 1);
  await sb.removeCodeContext(a.id);
  assert.ok(!(await sb.listCodeContexts()).some((c) => c.id === a.id));
  await assert.rejects(sb.runCode('1', { context: a }), NotFoundError);
  await assert.rejects(sb.interruptCode(a), NotFoundError);
  await assert.rejects(sb.removeCodeContext(undefined), InvalidArgumentError);
  await sb.interruptCode(b); // nothing runs: not an error
});

test('code_streaming', async (t) => {
  // Callbacks fire as the output happens, in order; a throwing callback interrupts the code.
  const sb = await codeSandbox(t);
  if (!sb) return;
  const events = [];
  const code = [
    'import sys, time',
    "print('one', flush=True)",
    'time.sleep(1)',
    "display('shown')",
    'time.sleep(1)',
    "print('two', file=sys.stderr, flush=True)",
    'time.sleep(1)',
    "'last'",
  ].join('\n');
  const e = await sb.runCode(code, {
    onStdout: (m) => events.push(['stdout', m, Date.now()]),
    onStderr: (m) => events.push(['stderr', m, Date.now()]),
    onResult: (r) => events.push(['result', r, Date.now()]),
  });
  const end = Date.now();
  const seen = []; // consecutive pieces of one stream joined: the service may send a line in parts
  for (const [k, v] of events) {
    if (k === 'result') seen.push([k, [v.text, v.isMainResult]]);
    else if (seen.length && seen.at(-1)[0] === k) seen.at(-1)[1] += v.line;
    else seen.push([k, v.line]);
  }
  assert.deepEqual(
    seen,
    [
      ['stdout', 'one\n'],
      ['result', ["'shown'", false]],
      ['stderr', 'two\n'],
      ['result', ["'last'", true]],
    ],
  );
  assert.ok(end - events[0][2] > 2000, `the first output came ${end - events[0][2]} ms before the end`);
  const err = events.find(([k]) => k === 'stderr')[1];
  assert.ok(events[0][1] instanceof OutputMessage && !events[0][1].error && err.error);
  assert.equal(String(events[0][1]), events[0][1].line);
  assert.equal(e.text, "'last'");

  // A callback that throws (or rejects) interrupts the code; runCode rejects with its error.
  const t0 = Date.now();
  const boom = new Error('boom');
  await assert.rejects(
    sb.runCode("import time\nprint('first', flush=True)\ntime.sleep(60)\nfinished = True", {
      onStdout: () => {
        throw boom;
      },
    }),
    (err) => err === boom,
  );
  await assert.rejects(
    sb.runCode('import time\ndisplay(1)\ntime.sleep(60)\nfinished = True', { onResult: async () => Promise.reject(boom) }),
    (err) => err === boom,
  );
  assert.ok(Date.now() - t0 < 60000);
  assert.equal((await sb.runCode("'finished' in dir()")).text, 'False');
});
