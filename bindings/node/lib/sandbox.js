// SPDX-License-Identifier: Apache-2.0
// The Sandbox class: lifecycle, information and metrics; commands, files and pty hang off it.
'use strict';
const native = require('./native');
const { InvalidArgumentError, NotRunningError, codes } = require('./errors');
const { Commands, Pty } = require('./commands');
const { Filesystem } = require('./files');
const { CodeInterpreter } = require('./code');
const { envList } = require('./util');

/** Sandbox lifetime when timeoutMs is not given (E2B's default); 0 means no limit. */
const DEFAULT_SANDBOX_TIMEOUT_MS = 300_000;
const STATES = { 0: 'booting', 1: 'running', 2: 'stopped', 3: 'failed', 4: 'paused' };

function metadataList(md) {
  if (md === undefined || md === null) return undefined;
  if (typeof md !== 'object') throw new InvalidArgumentError('metadata must be an object of strings');
  return Object.entries(md).map(([k, v]) => {
    if (!k || k.includes('=')) throw new InvalidArgumentError(`metadata: bad key ${JSON.stringify(k)}`);
    return `${k}=${v}`;
  });
}

function ruleList(v, what) {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw new InvalidArgumentError(`${what} must be an array of strings`);
  return v.map(String);
}

function networkOptions(opts) {
  const net = opts.network;
  if (net === false) {
    if (opts.hosts || opts.hostLoopback || opts.allowInternetAccess === false) {
      throw new InvalidArgumentError('hosts, hostLoopback and allowInternetAccess need a network (network: false turns it off)');
    }
    return { network: false };
  }
  if (net !== undefined && net !== null && net !== true && typeof net !== 'object') {
    throw new InvalidArgumentError('network must be an object {allowOut, denyOut} or false');
  }
  const rules = typeof net === 'object' && net !== null ? net : {};
  const extra = Object.keys(rules).filter((k) => k !== 'allowOut' && k !== 'denyOut');
  if (extra.length) throw new InvalidArgumentError(`network: unknown keys ${extra.join(', ')} (allowOut, denyOut)`);
  return {
    network: true,
    allowInternetAccess: opts.allowInternetAccess !== false,
    allowOut: ruleList(rules.allowOut, 'network.allowOut'),
    denyOut: ruleList(rules.denyOut, 'network.denyOut'),
    hosts: envList(opts.hosts, 'hosts'),
    hostLoopback: !!opts.hostLoopback,
    ...tapOptions(opts.tap),
  };
}

function tapOptions(tap) {
  if (tap === undefined || tap === null) return {};
  if (typeof tap !== 'object') throw new InvalidArgumentError('tap must be an object {name, address, gateway, dns}');
  const extra = Object.keys(tap).filter((k) => !['name', 'address', 'gateway', 'dns'].includes(k));
  if (extra.length) throw new InvalidArgumentError(`tap: unknown keys ${extra.join(', ')} (name, address, gateway, dns)`);
  if (!tap.name) throw new InvalidArgumentError('tap.name is required');
  return { tapName: tap.name, tapAddress: tap.address, tapGateway: tap.gateway, tapDns: tap.dns };
}

/**
 * The options resume() and fork() take: what a snapshot does not fix (lifetime, boot timeout,
 * console, egress policy). Anything else is refused rather than silently ignored.
 */
function restoreOptions(opts, allowed, what) {
  opts = opts || {};
  if (typeof opts !== 'object') throw new InvalidArgumentError(`${what}: options must be an object`);
  const extra = Object.keys(opts).filter((k) => opts[k] !== undefined && !allowed.includes(k));
  if (extra.length) {
    throw new InvalidArgumentError(
      `${what}: ${extra.join(', ')} cannot be set (the snapshot fixes them; allowed: ${allowed.join(', ')})`,
    );
  }
  if (opts.network === false) {
    throw new InvalidArgumentError(`${what}: network takes egress rules only; the sandbox keeps its network device`);
  }
  const lifetime = opts.timeoutMs === undefined ? DEFAULT_SANDBOX_TIMEOUT_MS : opts.timeoutMs;
  return {
    lifetimeMs: lifetime === Infinity ? 0 : positive(lifetime, 'timeoutMs'),
    bootTimeoutMs: positive(opts.bootTimeoutMs, 'bootTimeoutMs'),
    consoleFd: opts.consoleFd,
    isolated: !!opts.isolated,
    cgroup: opts.cgroup,
    ...networkOptions(opts),
  };
}

function metadataObject(list) {
  const o = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i > 0) o[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return o;
}

function positive(v, what) {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
    throw new InvalidArgumentError(`${what} must be a non-negative integer`);
  return v;
}

/**
 * A hardware-isolated Linux sandbox (a KVM microVM running inside this process). Create one
 * with `await Sandbox.create(...)`; end it with `await sandbox.kill()`. Sandboxes still open
 * when the process exits are destroyed then. One made from the code-interpreter template
 * also runs code like a notebook (runCode(), E2B's Code Interpreter SDK).
 */
class Sandbox extends CodeInterpreter {
  /** @internal use Sandbox.create() */
  constructor(box, templateId) {
    super();
    this._box = box;
    this._handles = new Map();
    this._lastCpu = null;
    this._paused = false;
    /** The sandbox id: lowercase alphanumeric, unique on this machine. */
    this.sandboxId = native.info(box).id;
    /** The template, snapshot or root filesystem it was created from. */
    this.templateId = templateId;
    this.commands = new Commands(this);
    this.files = new Filesystem(this);
    this.pty = new Pty(this);
  }

  /**
   * Creates a sandbox. Sandbox.create(template?, opts?) or Sandbox.create(opts).
   * template: a template built with Template.build(), a name given to snapshot(), or a
   * snapshot directory path (contains '/'): the sandbox is mapped copy-on-write from it
   * instead of booting (milliseconds; its processes are running). It fixes vCPUs, memory,
   * kernel and root filesystem. templateDir: the store template names are looked up in
   * (default $SBX_TEMPLATE_DIR, else ~/.local/share/libsandbox/templates). Without a template
   * the sandbox boots rootfs: an image name in the image directory ('base', the default:
   * Debian with bash and python3; 'test': busybox) or an .ext4 path.
   * opts: timeoutMs (lifetime, default 300000; 0 = no limit), envs (environment of every
   * command), metadata (string labels), cpuCount, memoryMB, user (default user),
   * bootTimeoutMs, and the C options kernel, imageDir, cmdlineExtra, disks, consoleFd.
   * Networking (docs/networking.md): allowInternetAccess (default true), network
   * ({allowOut, denyOut}: addresses, CIDRs, domains such as '*.example.com', each optionally
   * with ':PORT'; an allow entry wins over a deny entry; or false: no network device), hosts
   * ({name: ipv4} answered by the sandbox's DNS), hostLoopback (the gateway 10.0.2.2 reaches
   * this machine's 127.0.0.1; default false), tap ({name, address: 'IP/PREFIX', gateway,
   * dns}: an existing TAP device instead of the NAT).
   */
  static async create(template, opts) {
    if (typeof template === 'object' && template !== null) {
      opts = template;
      template = undefined;
    }
    opts = { ...(opts || {}) };
    if (template !== undefined) opts.template = template;
    if (opts.template !== undefined && opts.template !== null && opts.rootfs !== undefined && opts.rootfs !== null) {
      throw new InvalidArgumentError('give template (a template or snapshot) or rootfs (a root filesystem image), not both');
    }
    const lifetime = opts.timeoutMs === undefined ? DEFAULT_SANDBOX_TIMEOUT_MS : opts.timeoutMs;
    const box = await native.create({
      templateName: opts.template,
      templateDir: opts.templateDir,
      rootfs: opts.rootfs,
      vcpus: positive(opts.cpuCount, 'cpuCount'),
      memoryMib: positive(opts.memoryMB, 'memoryMB'),
      lifetimeMs: lifetime === Infinity ? 0 : positive(lifetime, 'timeoutMs'),
      bootTimeoutMs: positive(opts.bootTimeoutMs, 'bootTimeoutMs'),
      envs: envList(opts.envs),
      metadata: metadataList(opts.metadata),
      defaultUser: opts.user,
      kernel: opts.kernel,
      imageDir: opts.imageDir,
      cmdlineExtra: opts.cmdlineExtra,
      disks: opts.disks,
      consoleFd: opts.consoleFd,
      isolated: !!opts.isolated,
      cgroup: opts.cgroup,
      maxProcesses: positive(opts.maxProcesses, 'maxProcesses'),
      maxBufferMib: positive(opts.maxBufferMB, 'maxBufferMB'),
      ...networkOptions(opts),
    });
    return new Sandbox(box, opts.template ?? opts.rootfs ?? 'base');
  }

  /**
   * Brings back a sandbox written to `path` by pause(), in this process or another one: same
   * id, processes, files, envs and metadata. The directory is removed on success (a pause is
   * resumed at most once) and left as it was on failure. opts: timeoutMs (lifetime from now,
   * default 300000), bootTimeoutMs, consoleFd, allowInternetAccess, network ({allowOut,
   * denyOut}).
   */
  static async resume(path, opts) {
    const o = restoreOptions(
      opts,
      ['timeoutMs', 'bootTimeoutMs', 'consoleFd', 'allowInternetAccess', 'network', 'isolated', 'cgroup'],
      'Sandbox.resume',
    );
    const box = await native.resume(path, o);
    const sb = new Sandbox(box, '');
    // The template is not part of the pause; the registry entry of the id still has it.
    const me = (await native.listRunning()).find((s) => s.id === sb.sandboxId);
    if (me) sb.templateId = me.rootfs;
    return sb;
  }
  /**
   * Sandboxes running on this machine, from any process of this user. query.metadata keeps
   * those whose metadata contains all the given pairs.
   */
  static async list({ query } = {}) {
    const l = await native.listRunning();
    const want = (query && query.metadata) || {};
    return l
      .map((s) => ({
        sandboxId: s.id,
        templateId: s.rootfs,
        pid: s.pid,
        metadata: metadataObject(s.metadata),
        startedAt: new Date(s.createdMs),
        endAt: s.endsMs ? new Date(s.endsMs) : undefined,
        cpuCount: s.vcpus,
        memoryMB: s.memoryMib,
        state: 'running',
      }))
      .filter((s) => Object.entries(want).every(([k, v]) => s.metadata[k] === String(v)));
  }

  /** The version of libsandbox. */
  static get version() {
    return native.version();
  }

  /** Metadata given at creation. */
  get metadata() {
    return Object.fromEntries(native.metadata(this._box));
  }

  /** 'booting' | 'running' | 'stopped' | 'failed' | 'paused' (after pause()) | 'killed'. */
  get state() {
    if (this._paused) return 'paused';
    if (native.killed(this._box)) return 'killed';
    return STATES[native.state(this._box)] || 'failed';
  }

  /**
   * Stops the sandbox and frees everything it holds. Calls in progress on it (commands,
   * transfers, waits) are interrupted and reject. Resolves false if it was already killed.
   */
  async kill() {
    const was = !native.killed(this._box);
    await native.kill(this._box);
    return was;
  }

  /**
   * Saves the running sandbox (memory, devices, disk changes, running processes) as a
   * snapshot that Sandbox.create() accepts like a template: a template name (stored in the
   * default store, $SBX_TEMPLATE_DIR, replacing an older one of that name) or a directory
   * path (contains '/'; must not exist). The sandbox stands still while its memory is
   * written, then goes on. Resolves to nameOrPath.
   */
  async snapshot(nameOrPath) {
    await native.snapshot(this._box, nameOrPath);
    return nameOrPath;
  }

  /**
   * Writes the sandbox to the directory `path` (must not exist) and stops it: its memory and
   * VM are released, state becomes 'paused' and nothing else can be done with this object.
   * Sandbox.resume(path) brings it back (same id, processes and files). Resolves to path
   * (E2B's pause() resolves to an id to resume; here the directory is that id).
   */
  async pause(path) {
    await native.pause(this._box, path);
    // Only destroying the handle remains: do it now, before a resumed sandbox carries the id.
    this._paused = true;
    await native.kill(this._box);
    return path;
  }

  /**
   * Makes n (1..1024) running copies of this sandbox from one checkpoint, each independent:
   * own id, memory (copy-on-write) and disk; processes, files, envs and metadata as this one
   * had them. This sandbox goes on. opts (the copies'; the egress policy is not inherited):
   * timeoutMs (default 300000), consoleFd, allowInternetAccess, network ({allowOut,
   * denyOut}). Either all copies are made or none.
   */
  async fork(n = 1, opts) {
    const o = restoreOptions(opts, ['timeoutMs', 'consoleFd', 'allowInternetAccess', 'network'], 'fork');
    if (!Number.isInteger(n) || n < 1 || n > 1024) throw new InvalidArgumentError('n must be an integer 1..1024');
    const boxes = await native.fork(this._box, n, o);
    return boxes.map((b) => new Sandbox(b, this.templateId));
  }

  /** Sets the lifetime to end timeoutMs from now (extends or shortens it); 0 removes the limit. */
  async setTimeout(timeoutMs) {
    await native.setTimeout(this._box, positive(timeoutMs, 'timeoutMs'));
  }

  /** Information about the sandbox (E2B's SandboxInfo plus what the guest reported). */
  async getInfo() {
    const i = native.info(this._box);
    return {
      sandboxId: i.id,
      templateId: this.templateId,
      metadata: this.metadata,
      startedAt: new Date(i.createdMs),
      endAt: i.endsMs ? new Date(i.endsMs) : undefined,
      state: STATES[i.state] || 'failed',
      cpuCount: i.vcpus,
      memoryMB: i.memoryMib,
      envdVersion: i.envdVersion,
      kernelRelease: i.kernelRelease,
      osName: i.osName,
      protocolVersion: i.protocolVersion,
      bootMs: i.bootMs,
      uptimeMs: i.uptimeMs,
      guestCpus: i.guestCpus,
      guestMemKiB: i.guestMemKib,
    };
  }

  /** True while the guest runs and its agent answers (a ping). */
  async isRunning({ timeoutMs = 5000 } = {}) {
    if (native.killed(this._box) || native.state(this._box) !== 1) return false;
    try {
      await native.ping(this._box, timeoutMs);
      return true;
    } catch {
      return false;
    }
  }

  /** Round trip to the guest agent; rejects (TimeoutError, NotRunningError...) if it fails. */
  async ping(timeoutMs = 10_000) {
    await native.ping(this._box, timeoutMs);
  }

  /**
   * Resource use, as E2B's list of samples (here one, taken now): cpuUsedPct since the
   * previous call (or since boot), memory and disk in bytes, plus the raw counters.
   */
  /**
   * Replaces the egress policy of the running sandbox: {allowInternetAccess = true, allowOut,
   * denyOut} as in create(). It applies to every packet from now on, open connections
   * included; a bad entry throws InvalidArgumentError naming it and leaves the old policy.
   */
  async updateNetwork({ allowInternetAccess = true, allowOut, denyOut } = {}) {
    native.networkUpdate(this._box, {
      allowInternetAccess,
      allowOut: ruleList(allowOut, 'allowOut'),
      denyOut: ruleList(denyOut, 'denyOut'),
    });
  }

  /**
   * Where guest TCP `port` is reachable from this machine, "127.0.0.1:PORT" (E2B's getHost;
   * synchronous). The port is exposed first if needed; services bound only to the guest's
   * 127.0.0.1 are reachable too, with or without guest network.
   */
  getHost(port) {
    return native.getHost(this._box, port);
  }

  /** Exposes guest `port` on hostAddr (default 127.0.0.1) and hostPort (0: any); returns the host port. */
  expose(port, { hostPort = 0, hostAddr } = {}) {
    return native.expose(this._box, port, hostPort, hostAddr);
  }

  /** Stops exposing guest `port`: its host listeners and connections are closed. */
  unexpose(port) {
    native.unexpose(this._box, port);
  }

  /** Frames and bytes through the sandbox's network, and how many the policy blocked. */
  async networkStats() {
    return native.networkStats(this._box);
  }

  async getMetrics({ timeoutMs = 10_000 } = {}) {
    const m = await native.metrics(this._box, timeoutMs);
    const prev = this._lastCpu || { busy: 0, total: 0 };
    const dt = m.cpuTotalMs - prev.total;
    this._lastCpu = { busy: m.cpuBusyMs, total: m.cpuTotalMs };
    return [
      {
        timestamp: new Date(),
        cpuCount: m.cpus,
        cpuUsedPct: dt > 0 ? Math.round((10000 * (m.cpuBusyMs - prev.busy)) / dt) / 100 : 0,
        memUsed: (m.memTotalKib - m.memAvailableKib) * 1024,
        memTotal: m.memTotalKib * 1024,
        diskUsed: m.diskUsedBytes,
        diskTotal: m.diskTotalBytes,
        uptimeMs: m.uptimeMs,
        processes: m.processes,
        cpuBusyMs: m.cpuBusyMs,
        cpuTotalMs: m.cpuTotalMs,
      },
    ];
  }

  /** Asks the guest to shut down cleanly and waits for the VM to stop (kill() still frees it). */
  async shutdown(timeoutMs = 10_000) {
    await native.shutdown(this._box, timeoutMs);
  }

  /** The most recent guest console output (last 64 KiB), also after a crash or kill. */
  console() {
    return native.console(this._box);
  }

  /** Makes every call in progress on this sandbox reject with InterruptedError. */
  interrupt() {
    native.interrupt(this._box);
  }

  async [Symbol.asyncDispose || Symbol.for('nodejs.asyncDispose')]() {
    await this.kill();
  }
}

/** @internal re-exported for tests: rejects when the sandbox is gone */
function assertRunning(sb) {
  if (native.killed(sb._box)) throw new NotRunningError('the sandbox has been killed', codes.SBX_ESTATE);
}

module.exports = { Sandbox, DEFAULT_SANDBOX_TIMEOUT_MS, assertRunning };
