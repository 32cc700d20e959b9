// SPDX-License-Identifier: Apache-2.0
// libsandbox for Node.js: E2B-style sandboxes backed by KVM microVMs in this process.
'use strict';
const errors = require('./lib/errors');
const { Sandbox, DEFAULT_SANDBOX_TIMEOUT_MS } = require('./lib/sandbox');
const { CommandHandle, PtyHandle, DEFAULT_COMMAND_TIMEOUT_MS } = require('./lib/commands');
const { WatchHandle } = require('./lib/files');
const { Template } = require('./lib/template');
const { Execution, ExecutionError, OutputMessage, Result, CODE_INTERPRETER_TEMPLATE } = require('./lib/code');

module.exports = {
  Sandbox,
  Template,
  CommandHandle,
  PtyHandle,
  WatchHandle,
  Execution,
  ExecutionError,
  OutputMessage,
  Result,
  DEFAULT_SANDBOX_TIMEOUT_MS,
  DEFAULT_COMMAND_TIMEOUT_MS,
  CODE_INTERPRETER_TEMPLATE,
  codes: errors.codes,
  SandboxError: errors.SandboxError,
  TimeoutError: errors.TimeoutError,
  NotFoundError: errors.NotFoundError,
  InvalidArgumentError: errors.InvalidArgumentError,
  NotEnoughSpaceError: errors.NotEnoughSpaceError,
  InterruptedError: errors.InterruptedError,
  NotRunningError: errors.NotRunningError,
  PermissionDeniedError: errors.PermissionDeniedError,
  AlreadyExistsError: errors.AlreadyExistsError,
  CommandExitError: errors.CommandExitError,
  default: Sandbox,
};
