// SPDX-License-Identifier: Apache-2.0
// ES module entry point: the same objects as index.js, as named exports.
import lib from './index.js';

export const {
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
  codes,
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
} = lib;
export default Sandbox;
