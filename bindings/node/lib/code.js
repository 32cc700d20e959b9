// SPDX-License-Identifier: Apache-2.0
// The code interpreter: sandbox.runCode() and code contexts, shaped like E2B's Code Interpreter
// SDK (docs/code-interpreter.md). Sandboxes made from the code-interpreter template serve it.
'use strict';
const native = require('./native');
const { InvalidArgumentError } = require('./errors');
const { envList, timeoutValue } = require('./util');

/** The template whose sandboxes serve runCode() (guest/interpreter/Dockerfile). */
const CODE_INTERPRETER_TEMPLATE = 'code-interpreter';

/** Result formats by E2B's names and their MIME types, in the order formats() lists them. */
const FORMATS = [
  ['text', 'text/plain'],
  ['html', 'text/html'],
  ['markdown', 'text/markdown'],
  ['svg', 'image/svg+xml'],
  ['png', 'image/png'],
  ['jpeg', 'image/jpeg'],
  ['pdf', 'application/pdf'],
  ['latex', 'text/latex'],
  ['json', 'application/json'],
  ['javascript', 'application/javascript'],
];
const KNOWN_MIMES = new Set(FORMATS.map(([, mime]) => mime));

/**
 * One result of an execution: a value in one or more formats. The value of the cell's last
 * expression is the main result (isMainResult); display() calls and matplotlib figures give
 * others. `data` maps each MIME type to its data as the interpreter sent it: text as is,
 * image/png, image/jpeg and application/pdf in base64 (as E2B), application/json as JSON
 * text. text, html, markdown, svg, png, jpeg, pdf, latex and javascript are those entries
 * (undefined when absent); json is the JSON value, parsed.
 */
class Result {
  /** @internal */
  constructor(raw) {
    this.isMainResult = raw.isMainResult;
    this.data = raw.data;
  }

  get json() {
    const raw = this.data['application/json'];
    return raw === undefined ? undefined : JSON.parse(raw);
  }

  /** The formats present by E2B's names ('text', 'html', 'png', ...); other MIME types last, as they are. */
  formats() {
    const has = (mime) => Object.hasOwn(this.data, mime);
    return [
      ...FORMATS.filter(([, mime]) => has(mime)).map(([name]) => name),
      ...Object.keys(this.data).filter((mime) => !KNOWN_MIMES.has(mime)),
    ];
  }
}
for (const [name, mime] of FORMATS) {
  if (name === 'json') continue;
  Object.defineProperty(Result.prototype, name, {
    get() {
      return this.data[mime];
    },
  });
}

/** A piece of output as onStdout / onStderr receive it (E2B's OutputMessage). */
class OutputMessage {
  /** @internal */
  constructor(line, timestamp, error) {
    /** The text. */
    this.line = line;
    /** When it arrived, in nanoseconds since the epoch. */
    this.timestamp = timestamp;
    /** True for stderr. */
    this.error = error;
  }

  toString() {
    return this.line;
  }
}

/** What the code raised: Python's exception (name, value, traceback) or JavaScript's thrown error (name, message, stack). */
class ExecutionError {
  /** @internal */
  constructor({ name, value, traceback }) {
    this.name = name;
    this.value = value;
    this.traceback = traceback;
  }
}

/** Output text -> its lines, each with its newline. */
function lines(text) {
  return text.match(/[^\n]*\n|[^\n]+/g) || [];
}

/** The outcome of runCode(). */
class Execution {
  /** @internal */
  constructor(raw) {
    this.results = raw.results.map((r) => new Result(r));
    /** The output, line by line (each line keeps its newline). */
    this.logs = { stdout: lines(raw.stdout), stderr: lines(raw.stderr) };
    /** undefined when the code raised nothing. */
    this.error = raw.error ? new ExecutionError(raw.error) : undefined;
    /** Of this execution in its context: 1, 2, ... */
    this.executionCount = raw.executionCount;
    /** Stopped by interruptCode(). */
    this.interrupted = raw.interrupted;
    /** Stopped because timeoutMs ran out. */
    this.timedOut = raw.timedOut;
    /** The code did not stop when asked (or killed its interpreter): the context was restarted and its state is lost. */
    this.restarted = raw.restarted;
    /** bash: the status of the cell's last command; else undefined. */
    this.exitCode = raw.exitCode < 0 ? undefined : raw.exitCode;
    /** The id of the context it ran in. */
    this.context = raw.context;
  }

  /** The text of the main result, or undefined. */
  get text() {
    return this.results.find((r) => r.isMainResult)?.text;
  }
}

/** A context object ({id, language, cwd}) or an id -> the id. */
function contextId(context, required) {
  if (context !== null && typeof context === 'object') context = context.id;
  if (typeof context === 'string') return context;
  if (!required && (context === undefined || context === null)) return undefined;
  throw new InvalidArgumentError('context must be a context ({id, language, cwd}) or a context id');
}

/** The code interpreter methods of Sandbox (E2B's Code Interpreter SDK). */
class CodeInterpreter {
  /**
   * Runs code in a context, like a notebook cell: state persists between calls, the value of
   * the last expression is the main result, an exception is `error`. opts: language
   * ('python' (default), 'javascript', 'bash': that language's default context), context (a
   * context or its id, instead), onStdout / onStderr (OutputMessage), onResult (Result),
   * onError (ExecutionError), envs (for this execution only), timeoutMs (the code is
   * interrupted after it and the execution says timedOut; undefined: 300000, 0: none).
   * Callbacks run on the event loop as output arrives; one that throws (or returns a
   * promise that rejects) interrupts the code, and runCode rejects with its error.
   */
  async runCode(code, opts = {}) {
    if (typeof code !== 'string') throw new InvalidArgumentError('code must be a string');
    const { language, onStdout, onStderr, onResult, onError, envs, timeoutMs } = opts;
    for (const [k, fn] of Object.entries({ onStdout, onStderr, onResult, onError })) {
      if (fn !== undefined && fn !== null && typeof fn !== 'function') throw new InvalidArgumentError(`${k} must be a function`);
    }
    const context = contextId(opts.context);
    const args = {
      code,
      context,
      language,
      envs: envList(envs),
      timeoutMs: timeoutMs === undefined || timeoutMs === null ? 0 : timeoutValue(timeoutMs),
    };
    // A failing callback interrupts the code (its context: the default one of the language
    // without a context), and runCode rejects once the execution ended and the interrupt is done.
    let failure;
    let stopping;
    const pending = [];
    const fail = (e) => {
      if (stopping) return;
      failure = e;
      stopping = native.codeInterrupt(this._box, context ?? language ?? 'python').catch(() => {});
    };
    const guard = (fn) => (...a) => {
      if (stopping) return;
      try {
        const r = fn(...a);
        if (r && typeof r.then === 'function') pending.push(Promise.resolve(r).catch(fail));
      } catch (e) {
        fail(e);
      }
    };
    const output = (stream, buf) => {
      const cb = stream === 1 ? onStdout : onStderr;
      return cb && cb(new OutputMessage(buf.toString('utf8'), Date.now() * 1e6, stream !== 1));
    };
    let raw;
    try {
      raw = await native.runCode(
        this._box,
        args,
        onStdout || onStderr ? guard(output) : undefined,
        onResult ? guard((r) => onResult(new Result(r))) : undefined,
      );
    } catch (e) {
      if (!stopping) throw e;
    }
    await Promise.all(pending);
    if (stopping) {
      await stopping;
      throw failure;
    }
    const ex = new Execution(raw);
    if (ex.error && onError) await onError(ex.error);
    return ex;
  }

  /** Creates a context: a new interpreter of `language` (default python) working in `cwd` (default /home/user). At most 64 exist. */
  async createCodeContext({ cwd, language } = {}) {
    return native.codeContextCreate(this._box, language, cwd);
  }

  /** The contexts ({id, language, cwd}), default ones included. */
  async listCodeContexts() {
    return native.codeContextList(this._box);
  }

  /** Starts the context's interpreter afresh: its state and execution count are reset. */
  async restartCodeContext(context) {
    await native.codeContextRestart(this._box, contextId(context, true));
  }

  /** Removes a context (a default one is only cleared: it starts afresh when next used). */
  async removeCodeContext(context) {
    await native.codeContextRemove(this._box, contextId(context, true));
  }

  /** Interrupts what runs in a context; it keeps its state. Nothing running is not an error. */
  async interruptCode(context) {
    await native.codeInterrupt(this._box, contextId(context, true));
  }
}

module.exports = { CodeInterpreter, Execution, ExecutionError, OutputMessage, Result, CODE_INTERPRETER_TEMPLATE };
