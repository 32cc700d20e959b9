// SPDX-License-Identifier: Apache-2.0
// Error classes (E2B's names) carrying the C library's error code and message.
'use strict';
const native = require('./native');

/** The SBX_E* codes of include/sandbox.h, by name (negative numbers). */
const codes = Object.freeze({ ...native.codes });
const codeNames = Object.fromEntries(Object.entries(codes).map(([k, v]) => [v, k]));

/**
 * Base class of every error the library raises. `code` is the C library's SBX_E* value (a
 * negative number; see `codes`), `codeName` its name ("SBX_ENOENT"), `message` the library's
 * message with context (which path, which call, the guest's last console lines...).
 */
class SandboxError extends Error {
  constructor(message, code, options) {
    super(message, options);
    this.name = new.target.name;
    this.code = code === undefined ? codes.SBX_EINVAL : code;
    this.codeName = codeNames[this.code];
  }
}

/** SBX_ETIMEDOUT: an operation (or a command) did not finish in time. */
class TimeoutError extends SandboxError {}
/** SBX_ENOENT: no such file, directory, user or process. */
class NotFoundError extends SandboxError {}
/** SBX_EINVAL: a bad argument or option (also raised by the binding's own checks). */
class InvalidArgumentError extends SandboxError {}
/** SBX_ENOSPC: the guest's disk (or memory) is full. */
class NotEnoughSpaceError extends SandboxError {}
/** SBX_EINTR: the call was interrupted (sandbox.interrupt(), or the sandbox was killed). */
class InterruptedError extends SandboxError {}
/** SBX_ESTATE / SBX_EDEAD: the sandbox was killed, shut down, died or its lifetime ran out. */
class NotRunningError extends SandboxError {}
/** SBX_EACCES: permission denied in the guest. */
class PermissionDeniedError extends SandboxError {}
/** SBX_EEXIST: already exists. */
class AlreadyExistsError extends SandboxError {}

/**
 * A command exited with a non-zero status (or was killed by a signal). Carries the result:
 * exitCode, stdout, stderr, error (a description, or undefined), signal.
 */
class CommandExitError extends SandboxError {
  constructor(result) {
    const what = result.signal ? `was killed by signal ${result.signal}` : `exited with code ${result.exitCode}`;
    super(`command ${what}${result.stderr ? `: ${tail(result.stderr)}` : ''}`, codes.SBX_EINVAL);
    this.exitCode = result.exitCode;
    this.stdout = result.stdout;
    this.stderr = result.stderr;
    this.error = result.error;
    this.signal = result.signal;
    this.result = result;
  }
}

function tail(s) {
  const t = s.trimEnd();
  return t.length > 500 ? `...${t.slice(-500)}` : t;
}

const byCode = {
  [codes.SBX_ETIMEDOUT]: TimeoutError,
  [codes.SBX_ENOENT]: NotFoundError,
  [codes.SBX_EINVAL]: InvalidArgumentError,
  [codes.SBX_ENOSPC]: NotEnoughSpaceError,
  [codes.SBX_EINTR]: InterruptedError,
  [codes.SBX_ESTATE]: NotRunningError,
  [codes.SBX_EDEAD]: NotRunningError,
  [codes.SBX_EACCES]: PermissionDeniedError,
  [codes.SBX_EEXIST]: AlreadyExistsError,
};

/** Builds the error object for a C error code (used by the addon for every failure). */
function makeError(code, message) {
  const Cls = byCode[code] || SandboxError;
  return new Cls(message || native.strerror(code), code);
}

native.setErrorFactory(makeError);

module.exports = {
  codes,
  makeError,
  SandboxError,
  TimeoutError,
  NotFoundError,
  InvalidArgumentError,
  NotEnoughSpaceError,
  InterruptedError,
  NotRunningError,
  PermissionDeniedError,
  AlreadyExistsError,
  CommandExitError,
};
