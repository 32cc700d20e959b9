// SPDX-License-Identifier: Apache-2.0
// sandbox.commands and sandbox.pty: run commands, background processes and terminals.
'use strict';
const { StringDecoder } = require('node:string_decoder');
const native = require('./native');
const { CommandExitError, TimeoutError, InvalidArgumentError, NotFoundError, codes } = require('./errors');
const { envList, timeoutValue, signalNumber, holding, Outcome } = require('./util');

const EV_STDOUT = 1;
const EV_STDERR = 2;
const EV_EXIT = 3;
const EV_ERROR = 4;
const EV_END = 6;

/** Foreground commands are killed after this long unless timeoutMs says otherwise (as E2B). */
const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;

function execArgs(cmd, opts) {
  const a = {};
  if (Array.isArray(cmd)) a.argv = cmd.map(String);
  else if (typeof cmd === 'string') a.cmd = cmd;
  else throw new InvalidArgumentError('cmd must be a string (run by bash -l -c) or an array (argv)');
  a.envs = envList(opts.envs);
  if (opts.cwd !== undefined) a.cwd = opts.cwd;
  if (opts.user !== undefined) a.user = String(opts.user);
  if (opts.tag !== undefined) a.tag = opts.tag;
  if (opts.outputCap !== undefined) a.outputCap = opts.outputCap;
  if (opts.stdin !== undefined && opts.stdin !== null && typeof opts.stdin !== 'boolean') a.stdin = opts.stdin;
  return a;
}

function describe(r) {
  if (r.timedOut) return `killed after the timeout of ${r.timeoutMs} ms`;
  if (r.signal) return `killed by signal ${r.signal}`;
  return undefined;
}

/** Native exit record + collected text -> CommandResult. */
function makeResult(r, stdout, stderr, timeoutMs) {
  const res = {
    exitCode: r.exitCode,
    stdout,
    stderr,
    error: undefined,
    signal: r.signal || 0,
    timedOut: !!r.timedOut,
    truncated: !!r.truncated,
    pid: r.pid,
    durationMs: r.durationMs,
  };
  res.error = describe({ ...res, timeoutMs });
  return res;
}

/** Throws for a failed result as E2B does: TimeoutError for a timeout, else CommandExitError. */
function checkResult(res) {
  if (res.timedOut) {
    const e = new TimeoutError(`command ${res.error}`, codes.SBX_ETIMEDOUT);
    Object.assign(e, { exitCode: res.exitCode, stdout: res.stdout, stderr: res.stderr, result: res });
    throw e;
  }
  if (res.exitCode !== 0) throw new CommandExitError(res);
  return res;
}

/**
 * A running process (background command, attached process or terminal). Output reaches the
 * callbacks as it arrives and is also collected (stdout / stderr). wait() resolves with the
 * CommandResult (throws CommandExitError on a non-zero exit).
 */
class CommandHandle {
  /** @internal */
  constructor(sandbox, opts, kind) {
    this._sandbox = sandbox;
    this._kind = kind; // 'command' | 'pty'
    this._opts = opts;
    this._out = [];
    this._err = [];
    this._dec = { [EV_STDOUT]: new StringDecoder('utf8'), [EV_STDERR]: new StringDecoder('utf8') };
    this._outcome = new Outcome();
    this._ended = new Outcome();
    this._callbackError = undefined;
    this._handle = undefined;
    this._exit = undefined;
    this.pid = 0;
    this.onEvent = this._onEvent.bind(this);
  }

  /** @internal attaches the native handle once the process started. */
  _attach(res) {
    this._handle = res.handle;
    this.pid = res.pid;
    this.dropped = res.dropped || 0;
    this._sandbox._handles.set(this.pid, this);
  }

  _onEvent(kind, a) {
    switch (kind) {
      case EV_STDOUT:
      case EV_STDERR: {
        const pty = this._kind === 'pty';
        if (pty) {
          this._out.push(this._dec[EV_STDOUT].write(a));
          if (this._opts.onData) this._call(this._opts.onData, new Uint8Array(a.buffer, a.byteOffset, a.length));
          return;
        }
        const text = this._dec[kind].write(a);
        if (!text) return;
        (kind === EV_STDOUT ? this._out : this._err).push(text);
        const cb = kind === EV_STDOUT ? this._opts.onStdout : this._opts.onStderr;
        if (cb) this._call(cb, text);
        return;
      }
      case EV_EXIT:
        this._exit = a;
        return;
      case EV_ERROR:
        this._error = a;
        return;
      case EV_END:
        this._finish();
        return;
      default:
    }
  }

  _call(cb, arg) {
    if (this._callbackError) return;
    try {
      cb(arg);
    } catch (e) {
      // A throwing callback ends the command: the process is killed and wait() rethrows it.
      this._callbackError = e;
      this.kill().catch(() => {});
    }
  }

  _finish() {
    this._sandbox._handles.delete(this.pid);
    for (const k of [EV_STDOUT, EV_STDERR]) {
      const rest = this._dec[k].end();
      if (rest) {
        (k === EV_STDOUT || this._kind === 'pty' ? this._out : this._err).push(rest);
        const cb = k === EV_STDOUT ? this._opts.onStdout : this._opts.onStderr;
        if (cb && this._kind !== 'pty') this._call(cb, rest);
      }
    }
    if (this._callbackError) this._outcome.reject(this._callbackError);
    else if (this._exit) this._outcome.resolve(makeResult(this._exit, this.stdout, this.stderr, this._opts.timeoutMs));
    else if (this._error) this._outcome.reject(this._error);
    else
      this._outcome.reject(
        new NotFoundError(
          this._disconnected ? 'the handle was disconnected before the process exited' : 'the process handle ended',
          codes.SBX_ENOENT,
        ),
      );
    this._ended.resolve();
  }

  /** Output so far (text). */
  get stdout() {
    if (this._out.length > 1) this._out = [this._out.join('')];
    return this._out[0] || '';
  }
  get stderr() {
    if (this._err.length > 1) this._err = [this._err.join('')];
    return this._err[0] || '';
  }
  /** The exit code once the process has exited, else undefined. */
  get exitCode() {
    return this._exit ? this._exit.exitCode : undefined;
  }
  /** A description of how the process ended abnormally (timeout, signal), else undefined. */
  get error() {
    return this._exit ? describe({ ...this._exit, timeoutMs: this._opts.timeoutMs }) : undefined;
  }

  /**
   * Waits for the process to exit. Resolves with the CommandResult; rejects with
   * CommandExitError (non-zero exit), TimeoutError (killed by its timeoutMs), or the error
   * that ended the handle. Keeps the process (the event loop) alive while waiting.
   */
  async wait() {
    const res = await holding(this._outcome.promise());
    return checkResult(res);
  }

  /** Sends a signal (default SIGKILL) to the process (and its group). False if it has already exited. */
  async kill(signal = 'SIGKILL', { group = true } = {}) {
    return native.killPid(this._sandbox._box, this.pid, signalNumber(signal), group);
  }

  /** Sends a signal through this handle (sbx_proc_signal). */
  async signal(signal, { group = false } = {}) {
    return native.pumpSignal(this._handle, signalNumber(signal, 15), group);
  }

  /** Writes to the process's stdin (needs `stdin: true` at start) or, for a terminal, its input. */
  async sendStdin(data) {
    return native.pumpWrite(this._handle, data);
  }

  /** Closes stdin (EOF). */
  async closeStdin() {
    return native.pumpCloseStdin(this._handle);
  }

  /**
   * Stops receiving output; the process goes on running (commands.connect(pid) finds it
   * again, with the output produced meanwhile).
   */
  async disconnect() {
    this._disconnected = true;
    await native.pumpClose(this._handle);
    await this._ended.promise();
  }
}

/** A terminal: CommandHandle plus sendInput / resize. Output goes to onData as bytes. */
class PtyHandle extends CommandHandle {
  /** Types keys into the terminal (string or bytes). */
  async sendInput(data) {
    return native.pumpWrite(this._handle, data);
  }
  /** Changes the terminal size (the process gets SIGWINCH). */
  async resize({ rows, cols }) {
    return native.pumpResize(this._handle, rows, cols);
  }
}

class Commands {
  /** @internal */
  constructor(sandbox) {
    this._sandbox = sandbox;
  }

  /**
   * Runs a command: a string is run by `bash -l -c` (sh without bash), an array is an argv.
   * Foreground (default): resolves with {exitCode, stdout, stderr, error, ...}; rejects with
   * CommandExitError on a non-zero exit, TimeoutError when killed by timeoutMs (default 60000,
   * 0 = none). With background: true resolves at start with a CommandHandle (no timeout by
   * default). stdin: a string/bytes written to the process's stdin (then EOF), or true to keep
   * stdin open for handle.sendStdin() (background only).
   */
  async run(cmd, opts = {}) {
    const box = this._sandbox._box;
    const args = execArgs(cmd, opts);
    if (opts.background) return this._start(args, opts);
    if (opts.stdin === true) throw new InvalidArgumentError('stdin: true needs background: true (use a string or bytes to pass input)');
    args.timeoutMs = timeoutValue(opts.timeoutMs, DEFAULT_COMMAND_TIMEOUT_MS);
    const streaming = !!(opts.onStdout || opts.onStderr);
    let out = [];
    let err = [];
    let cb = null;
    const dec = { [EV_STDOUT]: new StringDecoder('utf8'), [EV_STDERR]: new StringDecoder('utf8') };
    if (streaming) {
      // With a callback the library streams instead of capturing: collect here.
      cb = (stream, buf) => {
        const text = dec[stream].write(buf);
        if (!text) return;
        (stream === EV_STDOUT ? out : err).push(text);
        const f = stream === EV_STDOUT ? opts.onStdout : opts.onStderr;
        if (f) f(text);
      };
    }
    const r = await native.exec(box, args, cb);
    let stdout;
    let stderr;
    if (streaming) {
      for (const k of [EV_STDOUT, EV_STDERR]) {
        const rest = dec[k].end();
        if (!rest) continue;
        (k === EV_STDOUT ? out : err).push(rest);
        const f = k === EV_STDOUT ? opts.onStdout : opts.onStderr;
        if (f) f(rest);
      }
      stdout = out.join('');
      stderr = err.join('');
      out = err = null;
    } else {
      stdout = r.stdout.toString('utf8');
      stderr = r.stderr.toString('utf8');
    }
    return checkResult(makeResult(r, stdout, stderr, opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS));
  }

  async _start(args, opts) {
    const h = new CommandHandle(this._sandbox, opts, 'command');
    args.keepStdin = opts.stdin === true;
    args.timeoutMs = timeoutValue(opts.timeoutMs, 0);
    h._attach(await native.procStart(this._sandbox._box, args, h.onEvent));
    return h;
  }

  /** Processes started through the library (running ones and the last 64 finished). */
  async list() {
    const l = await native.procList(this._sandbox._box);
    return l.map((p) => ({
      pid: p.pid,
      tag: p.tag || undefined,
      cmd: p.argv[0],
      args: p.argv.slice(1),
      argv: p.argv,
      cwd: p.cwd,
      running: p.running,
      exitCode: p.running ? undefined : p.exitCode,
      signal: p.running ? undefined : p.signal,
      pty: p.pty,
      attached: p.attached,
    }));
  }

  /** Sends a signal (default SIGKILL) to any process in the sandbox. False if there is no such process. */
  async kill(pid, signal = 'SIGKILL', { group = true } = {}) {
    return native.killPid(this._sandbox._box, pid, signalNumber(signal), group);
  }

  /**
   * Attaches to a process started earlier (background command or terminal), receiving the
   * output it produced while nobody was attached, then its live output. Works for a process
   * that exited recently too (wait() then gives its status).
   */
  async connect(pid, opts = {}) {
    const h = new CommandHandle(this._sandbox, opts, 'command');
    h._attach(await native.procAttach(this._sandbox._box, pid, h.onEvent));
    return h;
  }

  /** Writes to the stdin of a process by pid. */
  async sendStdin(pid, data) {
    return withHandle(this, pid, (h) => h.sendStdin(data));
  }

  /** Closes the stdin of a process by pid. */
  async closeStdin(pid) {
    return withHandle(this, pid, (h) => h.closeStdin());
  }
}

/**
 * Runs fn with the live handle of process pid in this process, or with a handle attached
 * (owner.connect) for the call and detached afterwards.
 */
async function withHandle(owner, pid, fn) {
  const live = owner._sandbox._handles.get(pid);
  if (live) return fn(live);
  const h = await owner.connect(pid);
  try {
    return await fn(h);
  } finally {
    await h.disconnect().catch(() => {});
  }
}

class Pty {
  /** @internal */
  constructor(sandbox) {
    this._sandbox = sandbox;
  }

  /**
   * Opens a terminal of rows x cols (default 24 x 80) running the user's login shell (or
   * cmd), TERM=xterm-256color. Output reaches onData as bytes.
   */
  async create(opts = {}) {
    const { rows = 24, cols = 80 } = opts;
    const h = new PtyHandle(this._sandbox, opts, 'pty');
    let args = null;
    if (opts.cmd !== undefined || opts.envs || opts.cwd || opts.user !== undefined || opts.timeoutMs || opts.tag) {
      args = opts.cmd !== undefined ? execArgs(opts.cmd, opts) : execArgs('', opts);
      if (opts.cmd === undefined) delete args.cmd;
      args.timeoutMs = timeoutValue(opts.timeoutMs, 0);
    }
    h._attach(await native.ptyOpen(this._sandbox._box, rows, cols, args, h.onEvent));
    return h;
  }

  /** Attaches to a terminal opened earlier. */
  async connect(pid, opts = {}) {
    const h = new PtyHandle(this._sandbox, opts, 'pty');
    h._attach(await native.procAttach(this._sandbox._box, pid, h.onEvent));
    return h;
  }

  /** Types into the terminal of process pid. */
  async sendInput(pid, data) {
    return withHandle(this, pid, (h) => native.pumpWrite(h._handle, data));
  }

  /** Resizes the terminal of process pid. */
  async resize(pid, { rows, cols }) {
    return withHandle(this, pid, (h) => native.pumpResize(h._handle, rows, cols));
  }

  /** Kills the terminal's process (SIGKILL to its group). False if it has exited. */
  async kill(pid, signal = 'SIGKILL') {
    return native.killPid(this._sandbox._box, pid, signalNumber(signal), true);
  }
}

module.exports = { Commands, Pty, CommandHandle, PtyHandle, DEFAULT_COMMAND_TIMEOUT_MS };
