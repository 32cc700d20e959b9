// SPDX-License-Identifier: Apache-2.0
// TypeScript declarations of the libsandbox Node.js binding (E2B-style API).

/** The SBX_E* error codes of include/sandbox.h (negative numbers). */
export declare const codes: Readonly<{
  SBX_EINVAL: number;
  SBX_ENOMEM: number;
  SBX_ENOKVM: number;
  SBX_EKVM: number;
  SBX_EIMAGE: number;
  SBX_ETIMEDOUT: number;
  SBX_EGUEST: number;
  SBX_EPROTO: number;
  SBX_EINTR: number;
  SBX_ESTATE: number;
  SBX_EIO: number;
  SBX_ENOTSUP: number;
  SBX_ENOENT: number;
  SBX_EACCES: number;
  SBX_ENOTDIR: number;
  SBX_EISDIR: number;
  SBX_ENOSPC: number;
  SBX_EEXIST: number;
  SBX_ENOTEMPTY: number;
  SBX_EBUSY: number;
  SBX_EDEAD: number;
  SBX_EAGAIN: number;
}>;

/** Sandbox lifetime when timeoutMs is not given (300000). */
export declare const DEFAULT_SANDBOX_TIMEOUT_MS: number;
/** Timeout of a foreground command when timeoutMs is not given (60000). */
export declare const DEFAULT_COMMAND_TIMEOUT_MS: number;

/** Base class of every error: `code` is the C SBX_E* value, `codeName` its name. */
export declare class SandboxError extends Error {
  constructor(message: string, code?: number, options?: { cause?: unknown });
  readonly code: number;
  readonly codeName: string | undefined;
}
/** SBX_ETIMEDOUT; for a command killed by its timeoutMs it also carries the output. */
export declare class TimeoutError extends SandboxError {
  exitCode?: number;
  stdout?: string;
  stderr?: string;
  result?: CommandResult;
}
/** SBX_ENOENT: no such file, directory, user or process. */
export declare class NotFoundError extends SandboxError {}
/** SBX_EINVAL: bad argument or option. */
export declare class InvalidArgumentError extends SandboxError {}
/** SBX_ENOSPC: the guest's disk or memory is full. */
export declare class NotEnoughSpaceError extends SandboxError {}
/** SBX_EINTR: interrupted (sandbox.interrupt(), or the sandbox was killed meanwhile). */
export declare class InterruptedError extends SandboxError {}
/** SBX_ESTATE / SBX_EDEAD: the sandbox was killed, shut down, died or its lifetime ran out. */
export declare class NotRunningError extends SandboxError {}
/** SBX_EACCES: permission denied in the guest. */
export declare class PermissionDeniedError extends SandboxError {}
/** SBX_EEXIST: already exists. */
export declare class AlreadyExistsError extends SandboxError {}
/** A command exited with a non-zero status or was killed by a signal. */
export declare class CommandExitError extends SandboxError {
  constructor(result: CommandResult);
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly error: string | undefined;
  readonly signal: number;
  readonly result: CommandResult;
}

export interface DiskOptions {
  /** Host file or block device (appears as /dev/vdb, /dev/vdc, ... in order). */
  path: string;
  readOnly?: boolean;
  /** Guest writes go to a private overlay discarded when the sandbox ends. */
  ephemeral?: boolean;
  serial?: string;
}

export interface SandboxOpts {
  /**
   * A template built with Template.build(), a name given to snapshot(), or a snapshot
   * directory path (contains '/'): the sandbox is mapped from it instead of booting. It fixes
   * vCPUs, memory, kernel and root filesystem. Default: boot `rootfs`.
   */
  template?: string;
  /** The template store (default $SBX_TEMPLATE_DIR, else ~/.local/share/libsandbox/templates). */
  templateDir?: string;
  /** Root filesystem to boot without a template: an image name ("base", "test") or an .ext4 path. Default "base". */
  rootfs?: string;
  /** Lifetime in ms (default 300000); 0 = no limit. */
  timeoutMs?: number;
  /** Environment of every command in the sandbox. */
  envs?: Record<string, string>;
  /** Free-form labels, readable with getInfo() and Sandbox.list(). */
  metadata?: Record<string, string>;
  /** vCPUs (default 1). */
  cpuCount?: number;
  /** Guest memory in MiB (default 512). */
  memoryMB?: number;
  /** Default user for commands and files (default "user" when the image has one). */
  user?: string;
  /** sbx_create() gives up after this long (default 30000). */
  bootTimeoutMs?: number;
  /** Guest kernel (default $SBX_KERNEL or vmlinux in the image directory). */
  kernel?: string;
  /** Where image names are looked up (default $SBX_CACHE_DIR or ~/.cache/libsandbox). */
  imageDir?: string;
  cmdlineExtra?: string;
  disks?: DiskOptions[];
  /** A file descriptor receiving a copy of the guest's serial console. */
  consoleFd?: number;
  /** false: every destination not in network.allowOut is blocked (default true). */
  allowInternetAccess?: boolean;
  /** Egress rules (docs/networking.md), or false for no network device (only loopback). */
  network?: NetworkRules | false;
  /** Names the sandbox's DNS answers itself: {name: ipv4}. */
  hosts?: Record<string, string>;
  /** The gateway 10.0.2.2 reaches this machine's 127.0.0.1 (default false). */
  hostLoopback?: boolean;
  /** An existing TAP device instead of the NAT; address is "IPV4/PREFIX", dns defaults to the gateway. */
  tap?: { name: string; address: string; gateway: string; dns?: string };
  /** The sandbox's VMM runs in a jailed child process (docs/SECURITY.md). */
  isolated?: boolean;
  /** Isolated mode only: a cgroup v2 directory the VMM process joins. */
  cgroup?: string;
  /** At most this many tasks for everything the sandbox runs (default: no limit). */
  maxProcesses?: number;
  /** Host memory (MiB) its connections may hold for guest data not yet read (default 64). */
  maxBufferMB?: number;
}

/**
 * Addresses ("10.1.2.3"), CIDRs ("10.0.0.0/8", "0.0.0.0/0"), domains ("example.com",
 * "*.example.com"), each optionally followed by ":PORT" or ":LOW-HIGH". An allow entry wins
 * over a deny entry.
 */
export interface NetworkRules {
  allowOut?: string[];
  denyOut?: string[];
}

/** What resume() and fork() take: a snapshot fixes everything else. */
export interface RestoreOpts {
  /** Lifetime in ms from now (default 300000); 0 = no limit. */
  timeoutMs?: number;
  /** A file descriptor receiving a copy of the guest's serial console. */
  consoleFd?: number;
  /** The egress policy (not inherited from the parent by fork()). */
  allowInternetAccess?: boolean;
  network?: NetworkRules;
}

export interface TemplateBuildProgress {
  /** 1-based index of the current instruction; 0 before the first. */
  step: number;
  /** Instructions after FROM (the final boot and snapshot come after). */
  steps: number;
  /** The instruction, or a phase: "boot", "start", "ready", "snapshot". */
  text: string;
  /** The step's result came from the layer cache. */
  cached: boolean;
  /** false when the step starts, true when it ended. */
  done: boolean;
  elapsedMs: number;
}

export interface TemplateBuildOpts {
  /** [a-z0-9][a-z0-9._-]*, at most 63 characters; a finished build replaces an older one. */
  name: string;
  /** Path of the definition (a Dockerfile subset); or dockerfileText (exactly one). */
  dockerfile?: string;
  dockerfileText?: string;
  /** Directory COPY and ADD read from (default: the Dockerfile's directory, or the current one). */
  context?: string;
  /** Values of ARG. */
  buildArgs?: Record<string, string> | string[];
  tags?: string[];
  /** The template's vCPUs (default 1), memory (default 512) and root disk size (default: the image's). */
  cpuCount?: number;
  memoryMB?: number;
  diskMB?: number;
  /** Started after the last step and left running in the snapshot. */
  startCmd?: string;
  /** When to snapshot: "cmd:COMMAND", "port:N", "file:PATH" or "delay:MS" (default: at once). */
  ready?: string;
  readyTimeoutMs?: number;
  stepTimeoutMs?: number;
  /** Run every step even if its layer is cached. */
  noCache?: boolean;
  templateDir?: string;
  kernel?: string;
  imageDir?: string;
  /** RUN steps reach this machine's 127.0.0.1 at 10.0.2.2. */
  hostLoopback?: boolean;
  /** Live output of RUN steps and of the start command. */
  onOutput?: (stream: 'stdout' | 'stderr', text: string) => void;
  onProgress?: (progress: TemplateBuildProgress) => void;
}

export interface TemplateInfo {
  name: string;
  /** Saved by sandbox.snapshot() rather than built from a file. */
  isSnapshot: boolean;
  /** FROM (or the root image of a snapshot). */
  parent: string;
  cpuCount: number;
  memoryMB: number;
  /** 0: the image's size. */
  diskMB: number;
  steps: number;
  /** Steps taken from the layer cache in the last build. */
  cachedSteps: number;
  createdAt?: Date;
  /** Allocated on this machine by the template's snapshot. */
  memoryBytes: number;
  diskBytes: number;
  /** Template.build() only: its duration. */
  buildMs: number;
  tags: string[];
  /** Template.list(): why this entry cannot be used, else "". */
  error: string;
}

/** Templates of a local store (templateDir, else $SBX_TEMPLATE_DIR, else ~/.local/share/libsandbox/templates). */
export declare class Template {
  private constructor();
  static build(opts: TemplateBuildOpts): Promise<TemplateInfo>;
  static list(opts?: { templateDir?: string }): Promise<TemplateInfo[]>;
  static remove(name: string, opts?: { templateDir?: string }): Promise<void>;
}

export interface NetworkStats {
  txFrames: number;
  txBytes: number;
  rxFrames: number;
  rxBytes: number;
  /** Guest packets refused by the egress policy. */
  blocked: number;
  /** Frames dropped (queues full, malformed, unsupported). */
  dropped: number;
}

export interface SandboxInfo {
  sandboxId: string;
  templateId: string;
  metadata: Record<string, string>;
  startedAt: Date;
  endAt?: Date;
  state: 'booting' | 'running' | 'stopped' | 'failed' | 'paused';
  cpuCount: number;
  memoryMB: number;
  envdVersion: string;
  kernelRelease: string;
  osName: string;
  protocolVersion: number;
  bootMs: number;
  uptimeMs: number;
  guestCpus: number;
  guestMemKiB: number;
}

export interface ListedSandbox {
  sandboxId: string;
  templateId: string;
  /** The process that owns it. */
  pid: number;
  metadata: Record<string, string>;
  startedAt: Date;
  endAt?: Date;
  cpuCount: number;
  memoryMB: number;
  state: 'running';
}

export interface SandboxMetrics {
  timestamp: Date;
  cpuCount: number;
  /** CPU use since the previous getMetrics() call (or since boot), percent. */
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  diskUsed: number;
  diskTotal: number;
  uptimeMs: number;
  processes: number;
  cpuBusyMs: number;
  cpuTotalMs: number;
}

export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** How the command ended abnormally (timeout, signal), else undefined. */
  error: string | undefined;
  signal: number;
  timedOut: boolean;
  truncated: boolean;
  pid: number;
  durationMs: number;
}

export interface CommandStartOpts {
  envs?: Record<string, string>;
  cwd?: string;
  user?: string;
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
  /** ms; foreground default 60000, background default none; 0 = none. */
  timeoutMs?: number;
  /** Data for stdin (then EOF), or true to keep stdin open (background only). */
  stdin?: boolean | string | Uint8Array | ArrayBuffer;
  /** Shown by commands.list(). */
  tag?: string;
  /** Bytes captured per stream (default 16 MiB). */
  outputCap?: number;
}

export interface ProcessInfo {
  pid: number;
  tag?: string;
  cmd: string;
  args: string[];
  argv: string[];
  cwd: string;
  running: boolean;
  exitCode?: number;
  signal?: number;
  pty: boolean;
  attached: boolean;
}

export type SignalName = string | number;

export declare class CommandHandle {
  readonly pid: number;
  /** Bytes of output lost before connect() (only for attached handles). */
  readonly dropped: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number | undefined;
  readonly error: string | undefined;
  wait(): Promise<CommandResult>;
  kill(signal?: SignalName, opts?: { group?: boolean }): Promise<boolean>;
  signal(signal: SignalName, opts?: { group?: boolean }): Promise<void>;
  sendStdin(data: string | Uint8Array | ArrayBuffer): Promise<void>;
  closeStdin(): Promise<void>;
  disconnect(): Promise<void>;
}

export declare class PtyHandle extends CommandHandle {
  sendInput(data: string | Uint8Array | ArrayBuffer): Promise<void>;
  resize(size: { rows: number; cols: number }): Promise<void>;
}

export declare class Commands {
  run(cmd: string | string[], opts?: CommandStartOpts & { background?: false }): Promise<CommandResult>;
  run(cmd: string | string[], opts: CommandStartOpts & { background: true }): Promise<CommandHandle>;
  run(cmd: string | string[], opts?: CommandStartOpts & { background?: boolean }): Promise<CommandResult | CommandHandle>;
  list(): Promise<ProcessInfo[]>;
  kill(pid: number, signal?: SignalName, opts?: { group?: boolean }): Promise<boolean>;
  connect(pid: number, opts?: { onStdout?: (data: string) => void; onStderr?: (data: string) => void }): Promise<CommandHandle>;
  sendStdin(pid: number, data: string | Uint8Array | ArrayBuffer): Promise<void>;
  closeStdin(pid: number): Promise<void>;
}

export interface PtyCreateOpts {
  rows?: number;
  cols?: number;
  onData?: (data: Uint8Array) => void;
  cwd?: string;
  envs?: Record<string, string>;
  user?: string;
  /** 0 / undefined: none. */
  timeoutMs?: number;
  /** Instead of the login shell. */
  cmd?: string | string[];
  tag?: string;
}

export declare class Pty {
  create(opts?: PtyCreateOpts): Promise<PtyHandle>;
  connect(pid: number, opts?: { onData?: (data: Uint8Array) => void }): Promise<PtyHandle>;
  sendInput(pid: number, data: string | Uint8Array | ArrayBuffer): Promise<void>;
  resize(pid: number, size: { rows: number; cols: number }): Promise<void>;
  kill(pid: number, signal?: SignalName): Promise<boolean>;
}

export interface EntryInfo {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  path: string;
  size: number;
  mode: number;
  /** "rwxr-xr-x" */
  permissions: string;
  owner: string;
  group: string;
  uid: number;
  gid: number;
  modifiedTime: Date;
  symlinkTarget?: string;
}

export interface WriteInfo {
  name: string;
  path: string;
  type: 'file';
}

export interface FilesystemEvent {
  name: string;
  type: 'create' | 'write' | 'remove' | 'rename' | 'chmod' | 'overflow';
}

export declare class WatchHandle {
  stop(): Promise<void>;
}

export type WriteData =
  | string
  | Uint8Array
  | ArrayBuffer
  | Blob
  | ReadableStream<Uint8Array | string>
  | AsyncIterable<Uint8Array | string>;

export interface WriteOpts {
  /** Permission bits of a new file (default 0o644). */
  mode?: number;
  /** Owner (default the sandbox's user). */
  user?: string;
  append?: boolean;
}

export interface ReadOpts {
  offset?: number;
  length?: number;
  /** Whole-file reads fail beyond this many bytes (default 1 GiB). */
  maxBytes?: number;
}

export declare class Filesystem {
  read(path: string, opts?: ReadOpts & { format?: 'text' }): Promise<string>;
  read(path: string, opts: ReadOpts & { format: 'bytes' }): Promise<Uint8Array>;
  read(path: string, opts: ReadOpts & { format: 'blob' }): Promise<Blob>;
  read(path: string, opts: ReadOpts & { format: 'stream' }): Promise<ReadableStream<Uint8Array>>;
  write(path: string, data: WriteData, opts?: WriteOpts): Promise<WriteInfo>;
  write(files: { path: string; data: WriteData; mode?: number }[], opts?: WriteOpts): Promise<WriteInfo[]>;
  list(path: string, opts?: { depth?: number }): Promise<EntryInfo[]>;
  exists(path: string): Promise<boolean>;
  getInfo(path: string): Promise<EntryInfo>;
  remove(path: string, opts?: { recursive?: boolean }): Promise<void>;
  rename(oldPath: string, newPath: string): Promise<EntryInfo>;
  makeDir(path: string, opts?: { mode?: number }): Promise<boolean>;
  watchDir(
    path: string,
    onEvent: (event: FilesystemEvent) => void,
    opts?: { recursive?: boolean; onExit?: (err?: Error) => void },
  ): Promise<WatchHandle>;
  copyIn(hostPath: string, guestPath: string, opts?: { onProgress?: (bytes: number, files: number) => boolean | void }): Promise<void>;
  copyOut(guestPath: string, hostPath: string, opts?: { onProgress?: (bytes: number, files: number) => boolean | void }): Promise<void>;
}

/** The template whose sandboxes serve runCode(): 'code-interpreter' (guest/interpreter/Dockerfile). */
export declare const CODE_INTERPRETER_TEMPLATE: string;

/** One result of an execution: the value of the cell's last expression (the main result), a display() call or a figure. */
export declare class Result {
  private constructor();
  readonly isMainResult: boolean;
  /** MIME type -> data: text as is, image/png, image/jpeg and application/pdf in base64, application/json as JSON text. */
  readonly data: Record<string, string>;
  readonly text?: string;
  readonly html?: string;
  readonly markdown?: string;
  readonly svg?: string;
  /** base64 */
  readonly png?: string;
  /** base64 */
  readonly jpeg?: string;
  /** base64 */
  readonly pdf?: string;
  readonly latex?: string;
  /** The application/json value, parsed. */
  readonly json?: unknown;
  readonly javascript?: string;
  /** The formats present: 'text', 'html', 'markdown', 'svg', 'png', 'jpeg', 'pdf', 'latex', 'json', 'javascript'; other MIME types last. */
  formats(): string[];
}

/** A piece of output as onStdout / onStderr receive it. */
export declare class OutputMessage {
  private constructor();
  readonly line: string;
  /** When it arrived, in nanoseconds since the epoch. */
  readonly timestamp: number;
  /** True for stderr. */
  readonly error: boolean;
  toString(): string;
}

/** What the code raised: Python's exception or JavaScript's thrown error (name, message, stack). */
export declare class ExecutionError {
  private constructor();
  readonly name: string;
  readonly value: string;
  readonly traceback: string;
}

/** The outcome of runCode(). */
export declare class Execution {
  private constructor();
  readonly results: Result[];
  /** The output line by line (each line keeps its newline). */
  readonly logs: { stdout: string[]; stderr: string[] };
  readonly error: ExecutionError | undefined;
  /** Of this execution in its context: 1, 2, ... */
  readonly executionCount: number;
  /** Stopped by interruptCode(). */
  readonly interrupted: boolean;
  /** Stopped because timeoutMs ran out. */
  readonly timedOut: boolean;
  /** The code did not stop when asked: the context was restarted and its state is lost. */
  readonly restarted: boolean;
  /** bash: the status of the cell's last command; else undefined. */
  readonly exitCode: number | undefined;
  /** The id of the context it ran in. */
  readonly context: string;
  /** The text of the main result. */
  readonly text: string | undefined;
}

/** A code context: one interpreter with its own state and working directory. */
export interface Context {
  id: string;
  language: string;
  cwd: string;
}

export interface RunCodeOpts {
  /** 'python' (default), 'javascript' or 'bash': runs in that language's default context. */
  language?: string;
  /** A context (or its id) to run in instead. */
  context?: Context | string;
  onStdout?: (output: OutputMessage) => unknown;
  onStderr?: (output: OutputMessage) => unknown;
  onResult?: (result: Result) => unknown;
  onError?: (error: ExecutionError) => unknown;
  /** Environment variables for this execution only. */
  envs?: Record<string, string>;
  /** ms after which the code is interrupted (timedOut); undefined: 300000; 0: none. */
  timeoutMs?: number;
}

export declare class Sandbox {
  private constructor();
  static create(opts?: SandboxOpts): Promise<Sandbox>;
  static create(template: string, opts?: SandboxOpts): Promise<Sandbox>;
  /** Brings back a sandbox paused to `path` (same id, processes, files). */
  static resume(
    path: string,
    opts?: RestoreOpts & { bootTimeoutMs?: number; isolated?: boolean; cgroup?: string },
  ): Promise<Sandbox>;
  static list(opts?: { query?: { metadata?: Record<string, string> } }): Promise<ListedSandbox[]>;
  static readonly version: string;

  readonly sandboxId: string;
  readonly templateId: string;
  readonly commands: Commands;
  readonly files: Filesystem;
  readonly pty: Pty;
  readonly metadata: Record<string, string>;
  readonly state: 'booting' | 'running' | 'stopped' | 'failed' | 'paused' | 'killed';

  kill(): Promise<boolean>;
  /** Saves a snapshot (a template name or a new directory path) that create() accepts as a template; resolves to it. */
  snapshot(nameOrPath: string): Promise<string>;
  /** Writes the sandbox to the new directory `path` and stops it (state 'paused'); resolves to path. */
  pause(path: string): Promise<string>;
  /** n (1..1024) independent running copies of this sandbox. */
  fork(n?: number, opts?: RestoreOpts): Promise<Sandbox[]>;
  setTimeout(timeoutMs: number): Promise<void>;
  getInfo(): Promise<SandboxInfo>;
  isRunning(opts?: { timeoutMs?: number }): Promise<boolean>;
  ping(timeoutMs?: number): Promise<void>;
  getMetrics(opts?: { timeoutMs?: number }): Promise<SandboxMetrics[]>;
  /** Replaces the egress policy; applies to open connections too. */
  updateNetwork(opts?: { allowInternetAccess?: boolean } & NetworkRules): Promise<void>;
  networkStats(): Promise<NetworkStats>;
  /** "127.0.0.1:PORT" where guest TCP `port` is reachable (exposed on first use). */
  getHost(port: number): string;
  /** Exposes guest `port`; returns the host port. */
  expose(port: number, opts?: { hostPort?: number; hostAddr?: string }): number;
  unexpose(port: number): void;
  shutdown(timeoutMs?: number): Promise<void>;
  console(): string;
  interrupt(): void;
  /** Runs code like a notebook cell (a sandbox of the code-interpreter template). */
  runCode(code: string, opts?: RunCodeOpts): Promise<Execution>;
  createCodeContext(opts?: { cwd?: string; language?: string }): Promise<Context>;
  listCodeContexts(): Promise<Context[]>;
  restartCodeContext(context: Context | string): Promise<void>;
  removeCodeContext(context: Context | string): Promise<void>;
  interruptCode(context: Context | string): Promise<void>;
}

export default Sandbox;
