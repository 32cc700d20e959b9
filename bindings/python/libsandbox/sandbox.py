# SPDX-License-Identifier: Apache-2.0
"""The Sandbox class: create, inspect, extend and kill a microVM sandbox (E2B-style API)."""
from __future__ import annotations

import ctypes
import datetime as _dt
import functools
import os
import threading
import weakref
from dataclasses import dataclass
from typing import IO, Any, Dict, List, Optional, Sequence, Union

from . import _native as N
from ._guard import Guard, _flush_signals, bridge
from .code import CodeInterpreter
from .exceptions import (
    InvalidArgumentException,
    NotFoundException,
    SandboxNotRunningException,
    from_code,
)

#: Default sandbox lifetime in seconds, as in E2B (``timeout=None`` or ``0``: no limit).
DEFAULT_TIMEOUT = 300

_STATES = {
    N.SBX_STATE_BOOTING: "booting",
    N.SBX_STATE_RUNNING: "running",
    N.SBX_STATE_STOPPED: "stopped",
    N.SBX_STATE_FAILED: "failed",
    N.SBX_STATE_PAUSED: "paused",
}


def _ms(seconds: Optional[float], what: str, none_means: int = 0) -> int:
    """Seconds (float) -> milliseconds for the C API. None -> none_means."""
    if seconds is None:
        return none_means
    if seconds < 0:
        raise InvalidArgumentException(f"{what} must not be negative: {seconds!r}", N.SBX_EINVAL)
    return int(round(seconds * 1000))


def _call_ms(seconds: Optional[float], what: str) -> int:
    """A blocking call's timeout: None means 'as long as it takes' (SBX_NO_TIMEOUT)."""
    if seconds is None:
        return N.SBX_NO_TIMEOUT
    ms = _ms(seconds, what)
    return min(ms, N.SBX_NO_TIMEOUT - 1)


def _time(ns: int) -> Optional[_dt.datetime]:
    if not ns:
        return None
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc)


@dataclass
class Disk:
    """An additional block device for the guest (/dev/vdb, /dev/vdc, ... in order).

    Attributes:
        path: host file or block device.
        read_only: the guest cannot write it.
        ephemeral: guest writes go to a private overlay discarded when the sandbox ends.
        serial: VIRTIO_BLK_ID serial (at most 20 bytes), or None.
    """

    path: str
    read_only: bool = False
    ephemeral: bool = False
    serial: Optional[str] = None


@dataclass
class SandboxInfo:
    """What :meth:`Sandbox.get_info` returns (E2B names first, then libsandbox extras)."""

    sandbox_id: str
    template_id: str
    metadata: Dict[str, str]
    started_at: Optional[_dt.datetime]
    end_at: Optional[_dt.datetime]  #: None when the sandbox has no lifetime limit
    state: str  #: "booting", "running", "stopped" or "failed"
    cpu_count: int
    memory_mb: int
    envd_version: str
    kernel_release: str = ""
    os_name: str = ""
    protocol_version: int = 0
    boot_time: float = 0.0  #: seconds sbx_create() took until the agent answered
    uptime: float = 0.0  #: seconds since the sandbox became ready
    guest_cpus: int = 0  #: as the guest reports them
    guest_memory_kib: int = 0  #: MemTotal as the guest reports it


@dataclass
class SandboxListing:
    """A sandbox running on this machine (any process of this user): :meth:`Sandbox.list`."""

    sandbox_id: str
    pid: int  #: the process that owns it
    template_id: str
    metadata: Dict[str, str]
    started_at: Optional[_dt.datetime]
    end_at: Optional[_dt.datetime]
    cpu_count: int
    memory_mb: int


def _port(p: int, low: int = 1) -> int:
    if not isinstance(p, int) or isinstance(p, bool) or not low <= p <= 65535:
        raise InvalidArgumentException(f"port must be {low}..65535: {p!r}", N.SBX_EINVAL)
    return p


@dataclass
class NetworkStats:
    """Counters of the sandbox's network (:meth:`Sandbox.network_stats`)."""

    tx_frames: int  #: frames the guest sent
    tx_bytes: int
    rx_frames: int  #: frames delivered to the guest
    rx_bytes: int
    blocked: int  #: guest packets refused by the egress policy
    dropped: int  #: frames dropped (queues full, malformed, unsupported)


def _net_policy(
    allow_internet_access: bool,
    allow_out: Optional[Sequence[str]],
    deny_out: Optional[Sequence[str]],
    keep: List[Any],
) -> "N.sbx_net_policy":
    p = N.sbx_net_policy()
    p.block_internet = 0 if allow_internet_access else 1
    for name in ("allow_out", "deny_out"):
        items = allow_out if name == "allow_out" else deny_out
        if items is None:
            continue
        if isinstance(items, str):
            raise InvalidArgumentException(f"{name} must be a list of strings", N.SBX_EINVAL)
        arr = N.strv(list(items))
        keep.append(arr)
        setattr(p, name, arr.ptr)
    return p


@dataclass
class SandboxMetrics:
    """Guest resource use (:meth:`Sandbox.get_metrics`). Sizes in bytes."""

    timestamp: _dt.datetime
    cpu_count: int
    #: CPU use in percent since the previous get_metrics() on this sandbox (the first time:
    #: since the guest booted).
    cpu_used_pct: float
    mem_total: int
    mem_used: int
    disk_total: int
    disk_used: int
    processes: int
    uptime: float  #: guest kernel uptime in seconds
    cpu_busy_ms: int = 0
    cpu_total_ms: int = 0
    mem_available: int = 0


class _Handles:
    """The open sub-handles (processes, files, watches) of a sandbox, closed before it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.set: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _destroy(ptr: int, handles: _Handles) -> None:
    """Runs once no call is in flight: closes the sub-handles, then the sandbox."""
    with handles.lock:
        live = list(handles.set)
        handles.set.clear()
    for h in live:
        try:
            h._release()
        except Exception:
            pass
    with bridge.lock:  # the Ctrl-C watcher never sees a freed pointer
        N.lib().sbx_destroy(ptr)


def _fspath(p: Any) -> Any:
    """A path-like as a str (bytes and None unchanged)."""
    return os.fspath(p) if isinstance(p, os.PathLike) else p


def _options(
    keep: List[Any],
    *,
    timeout: Optional[float],
    boot_timeout: Optional[float] = None,
    console: Union[None, int, IO[Any]] = None,
    allow_internet_access: bool = True,
    network: Union[None, bool, Dict[str, Any]] = None,
    hosts: Optional[Dict[str, str]] = None,
    host_loopback: bool = False,
    tap: Optional[Dict[str, str]] = None,
    isolated: bool = False,
    cgroup: Optional[str] = None,
    max_processes: Optional[int] = None,
    max_buffer_mb: Optional[int] = None,
) -> "N.sbx_options":
    """The sbx_options shared by create, resume and fork (lifetime, boot, console, network,
    hardening); what the arrays point to is appended to ``keep``."""
    o = N.sbx_options()
    o.version = N.SBX_OPTIONS_VERSION
    o.isolated = int(bool(isolated))
    o.cgroup = N.enc(_fspath(cgroup))
    for name, value in (("max_processes", max_processes), ("max_buffer_mb", max_buffer_mb)):
        if value is not None and (not isinstance(value, int) or not 1 <= value < 1 << 32):
            raise InvalidArgumentException(f"{name} must be a positive int: {value!r}", N.SBX_EINVAL)
    o.max_processes = max_processes or 0
    o.max_buffer_mib = max_buffer_mb or 0
    o.boot_timeout_ms = _ms(boot_timeout, "boot_timeout")
    if boot_timeout is not None and o.boot_timeout_ms == 0:
        o.boot_timeout_ms = 1
    o.lifetime_ms = _ms(timeout, "timeout")
    if timeout and o.lifetime_ms == 0:
        o.lifetime_ms = 1
    if console is not None:
        o.console_fd = console if isinstance(console, int) else console.fileno()
    if network is False:
        o.network = N.SBX_NET_NONE
        if hosts or host_loopback or not allow_internet_access:
            raise InvalidArgumentException(
                "hosts, host_loopback and allow_internet_access need a network "
                "(network=False turns it off)",
                N.SBX_EINVAL,
            )
        return o
    rules = {} if network in (None, True) else dict(network)  # type: ignore[arg-type]
    extra = set(rules) - {"allow_out", "deny_out"}
    if extra:
        raise InvalidArgumentException(
            f"network: unknown keys {sorted(extra)} (allow_out, deny_out)", N.SBX_EINVAL
        )
    o.net_policy = _net_policy(
        allow_internet_access, rules.get("allow_out"), rules.get("deny_out"), keep
    )
    host_arr = N.strv(N.kv_list(hosts, "hosts"))
    if host_arr:
        keep.append(host_arr)
        o.hosts = host_arr.ptr
    o.host_loopback = int(bool(host_loopback))
    if tap is not None:
        extra = set(tap) - {"name", "address", "gateway", "dns"}
        if extra:
            raise InvalidArgumentException(
                f"tap: unknown keys {sorted(extra)} (name, address, gateway, dns)",
                N.SBX_EINVAL,
            )
        o.network = N.SBX_NET_TAP
        o.tap_name = N.enc(tap.get("name"))
        o.tap_address = N.enc(tap.get("address"))
        o.tap_gateway = N.enc(tap.get("gateway"))
        o.tap_dns = N.enc(tap.get("dns"))
    return o


def _policy_only(network: Any, what: str) -> Optional[Dict[str, Any]]:
    """A resumed or forked sandbox keeps its network device: only the egress rules apply."""
    if network is None or isinstance(network, dict):
        return network
    raise InvalidArgumentException(
        f"{what}: network takes egress rules only ({{'allow_out': [...], 'deny_out': [...]}}): "
        "the sandbox keeps the network device it had",
        N.SBX_EINVAL,
    )


def _start(call: Any) -> int:
    """Runs a C call that makes a sandbox (sbx_create, sbx_resume) into a fresh handle
    pointer and returns it; raises (destroying the failed handle) when the call fails. The
    call stores the handle before it blocks, so the Ctrl-C bridge can interrupt it."""
    L = N.lib()
    out = ctypes.c_void_p()
    token = [None]
    try:
        try:
            bridge.enter(token, out)
            rc = call(out)
            _flush_signals()
        finally:
            bridge.exit(token)
    except BaseException:
        with bridge.lock:
            if out.value:
                L.sbx_destroy(out)
        raise
    if rc < 0:
        msg = N.dec(L.sbx_errmsg(out)) if out.value else ""
        with bridge.lock:
            L.sbx_destroy(out)
        raise from_code(rc, msg)
    return out.value  # type: ignore[return-value]


def version() -> str:
    """The version of the loaded libsandbox ("MAJOR.MINOR.PATCH")."""
    return N.dec(N.lib().sbx_version())


def strerror(code: int) -> str:
    """The library's name for an SBX_E* code."""
    return N.dec(N.lib().sbx_strerror(code))


class Sandbox(CodeInterpreter):
    """A hardware-isolated Linux sandbox: a KVM microVM running inside this process.

    Create one with :meth:`create` (or ``Sandbox(...)`` with the same arguments); use it as a
    context manager to kill it on exit. Everything is reachable through attributes named as
    in E2B's SDK: :attr:`commands`, :attr:`files`, :attr:`pty`; a sandbox made from the
    ``code-interpreter`` template also runs code like a notebook (:meth:`run_code`, E2B's
    Code Interpreter SDK).

    Threading: several threads may use one sandbox at once (each operation has its own
    connection to the guest). :meth:`kill` interrupts calls in flight and waits for them.
    Blocking calls made on the main thread are interrupted by Ctrl-C (KeyboardInterrupt);
    the sandbox stays usable.
    """

    _live: "weakref.WeakValueDictionary[str, Sandbox]" = weakref.WeakValueDictionary()

    def __init__(
        self,
        template: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        envs: Optional[Dict[str, str]] = None,
        metadata: Optional[Dict[str, str]] = None,
        cpu: Optional[int] = None,
        memory_mb: Optional[int] = None,
        *,
        rootfs: Optional[str] = None,
        template_dir: Optional[str] = None,
        user: Optional[str] = None,
        kernel: Optional[str] = None,
        image_dir: Optional[str] = None,
        boot_timeout: Optional[float] = None,
        disks: Sequence[Disk] = (),
        console: Union[None, int, IO[Any]] = None,
        kernel_cmdline: Optional[str] = None,
        allow_internet_access: bool = True,
        network: Union[None, bool, Dict[str, Any]] = None,
        hosts: Optional[Dict[str, str]] = None,
        host_loopback: bool = False,
        tap: Optional[Dict[str, str]] = None,
        isolated: bool = False,
        cgroup: Optional[str] = None,
        max_processes: Optional[int] = None,
        max_buffer_mb: Optional[int] = None,
    ) -> None:
        """Creates a sandbox (boots, or maps a template); see :meth:`create` for the arguments."""
        if template is not None and rootfs is not None:
            raise InvalidArgumentException(
                "give template (a template or snapshot) or rootfs (a root filesystem image), "
                "not both",
                N.SBX_EINVAL,
            )
        keep: List[Any] = []
        o = _options(
            keep,
            timeout=timeout,
            boot_timeout=boot_timeout,
            console=console,
            allow_internet_access=allow_internet_access,
            network=network,
            hosts=hosts,
            host_loopback=host_loopback,
            tap=tap,
            isolated=isolated,
            cgroup=cgroup,
            max_processes=max_processes,
            max_buffer_mb=max_buffer_mb,
        )
        o.template_name = N.enc(_fspath(template))
        o.template_dir = N.enc(_fspath(template_dir))
        o.rootfs = N.enc(_fspath(rootfs))
        o.kernel = N.enc(_fspath(kernel))
        o.image_dir = N.enc(_fspath(image_dir))
        o.default_user = N.enc(user)
        o.cmdline_extra = N.enc(kernel_cmdline)
        if cpu is not None:
            if cpu < 1:
                raise InvalidArgumentException(f"cpu must be at least 1: {cpu!r}", N.SBX_EINVAL)
            o.vcpus = int(cpu)
        if memory_mb is not None:
            if memory_mb < 1:
                raise InvalidArgumentException(
                    f"memory_mb must be positive: {memory_mb!r}", N.SBX_EINVAL
                )
            o.memory_mib = int(memory_mb)
        env_arr = N.strv(N.kv_list(envs, "envs"))
        meta_arr = N.strv(N.kv_list(metadata, "metadata"))
        keep += [env_arr, meta_arr]
        if env_arr:
            o.envs = env_arr.ptr
        if meta_arr:
            o.metadata = meta_arr.ptr
        if disks:
            arr = (N.sbx_disk * len(disks))()
            for i, d in enumerate(disks):
                p, s = os.fsencode(d.path), N.enc(d.serial)
                keep += [p, s]
                arr[i].path, arr[i].serial = p, s
                arr[i].read_only, arr[i].ephemeral = int(d.read_only), int(d.ephemeral)
            o.disks = arr
            o.ndisks = len(disks)
            keep.append(arr)

        L = N.lib()
        ptr = _start(lambda out: L.sbx_create(ctypes.byref(out), ctypes.byref(o)))
        label = _fspath(template) if template is not None else _fspath(rootfs) or "base"
        self._adopt(ptr, label)

    def _adopt(self, ptr: int, template: str) -> None:
        """Makes this object own the running sandbox ``ptr`` (it destroys ptr on failure)."""
        from .commands import Commands
        from .files import Files
        from .pty import Pty

        self._ptr: int = ptr
        self._template = template
        self._paused = False
        self._last_cpu: Optional[tuple] = None
        # The guard and the handle set must not refer back to self: the finalizer keeps them.
        self._handles = _Handles()
        self._guard = Guard(self._ptr, functools.partial(_destroy, self._ptr, self._handles))
        # Destroyed when garbage-collected or at interpreter exit if not killed before.
        self._finalizer = weakref.finalize(self, Sandbox._finalize, self._guard)
        info = self._raw_info()
        self._id = N.dec(info.id)
        Sandbox._live[self._id] = self
        self.commands = Commands(self)
        self.files = Files(self)
        self.pty = Pty(self)

    @classmethod
    def _wrap(cls, ptr: int, template: str) -> "Sandbox":
        sb = cls.__new__(cls)
        try:
            sb._adopt(ptr, template)
        except BaseException:
            if getattr(sb, "_guard", None) is None:
                with bridge.lock:
                    N.lib().sbx_destroy(ptr)
            else:
                sb._finalizer.detach()
                sb._guard.close()
            raise
        return sb

    # --- creation -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        template: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        envs: Optional[Dict[str, str]] = None,
        metadata: Optional[Dict[str, str]] = None,
        cpu: Optional[int] = None,
        memory_mb: Optional[int] = None,
        **kwargs: Any,
    ) -> "Sandbox":
        """Creates a sandbox and returns once its guest agent answered.

        Args:
            template: a template built with :meth:`Template.build`, a name given to
                :meth:`snapshot`, or a snapshot directory path (contains ``/``): the sandbox
                is mapped copy-on-write from it instead of booting (milliseconds; the
                template's processes are running). It fixes vCPUs, memory, kernel and root
                filesystem: leave ``cpu``, ``memory_mb``, ``kernel`` and ``rootfs`` unset.
                ``None`` (default): boot ``rootfs``.
            timeout: lifetime in seconds: the sandbox stops on its own this long after
                creation (extend it with :meth:`set_timeout`). ``None`` or ``0``: no limit.
                Default 300, as in E2B.
            envs: environment variables of every process in the sandbox.
            metadata: free-form labels, readable with :meth:`get_info` and
                :meth:`Sandbox.list`.
            cpu: number of vCPUs (default 1).
            memory_mb: guest RAM in MiB (default 512).
            rootfs: (keyword) the root filesystem image to boot when no template is given: a
                name looked up as ``<name>.ext4`` in the image directory (default "base":
                Debian with bash and python3; "test": busybox), or a path.
            template_dir: (keyword) the template store ``template`` names are looked up in
                (default ``$SBX_TEMPLATE_DIR``, else ``~/.local/share/libsandbox/templates``).
            user: (keyword) the default user of commands and files (default ``user``).
            kernel: (keyword) guest kernel path (default: ``vmlinux`` in the image directory).
            image_dir: (keyword) where image names are looked up (default
                ``$SBX_CACHE_DIR`` or ``~/.cache/libsandbox``).
            boot_timeout: (keyword) seconds the boot may take (default 30).
            disks: (keyword) extra block devices (:class:`Disk`).
            console: (keyword) a file descriptor or file receiving the guest console.
            kernel_cmdline: (keyword) appended to the guest kernel command line.
            allow_internet_access: (keyword) False blocks every destination not in
                ``network["allow_out"]`` (E2B's semantics). Default True.
            network: (keyword) ``{"allow_out": [...], "deny_out": [...]}``: addresses,
                CIDRs (``"0.0.0.0/0"``), domains (``"*.example.com"``), each optionally with
                ``":PORT"`` or ``":LOW-HIGH"``; an allow entry wins over a deny entry. False:
                no network device at all (only loopback). See docs/networking.md.
            hosts: (keyword) names the sandbox's DNS answers itself, ``{"name": "ipv4"}``.
            host_loopback: (keyword) True: the gateway 10.0.2.2 reaches this machine's own
                127.0.0.1 (default: unreachable).
            tap: (keyword) instead of the NAT, an existing TAP device:
                ``{"name": "tap0", "address": "10.1.0.2/24", "gateway": "10.1.0.1",
                "dns": "10.1.0.1"}`` (dns optional: the gateway).
            isolated: (keyword) True: the sandbox's VMM runs in a jailed child process
                (own namespaces, empty root, no capabilities, seccomp); see docs/SECURITY.md.
            cgroup: (keyword, isolated only) a cgroup v2 directory the VMM process joins.
            max_processes: (keyword) at most this many tasks for everything the sandbox runs
                (a pids cgroup in the guest; default: no limit).
            max_buffer_mb: (keyword) host memory, in MiB, its connections may hold for guest
                data not yet read (default 64).

        Raises:
            NotFoundException: no such template in the store.
            TemplateException: kernel or root filesystem missing or malformed, or a damaged
                snapshot.
            KvmUnavailableException: no usable /dev/kvm.
            TimeoutException: the boot took longer than ``boot_timeout``.
            InvalidArgumentException: a bad option.
            KeyboardInterrupt: Ctrl-C during the boot (nothing is left behind).
        """
        return cls(template, timeout, envs, metadata, cpu, memory_mb, **kwargs)

    @classmethod
    def resume(
        cls,
        path: Union[str, "os.PathLike[str]"],
        *,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        boot_timeout: Optional[float] = None,
        console: Union[None, int, IO[Any]] = None,
        allow_internet_access: bool = True,
        network: Optional[Dict[str, Any]] = None,
        isolated: bool = False,
        cgroup: Optional[str] = None,
    ) -> "Sandbox":
        """Brings back a sandbox written to ``path`` by :meth:`pause` (in this process or
        another one): same id, processes, files, envs and metadata. The directory is removed
        on success (a pause is resumed at most once) and left as it was on failure.

        ``timeout`` (lifetime from now), ``boot_timeout``, ``console``, the egress policy
        (``allow_internet_access``, ``network`` rules), ``isolated`` and ``cgroup`` are as in
        :meth:`create`.
        """
        keep: List[Any] = []
        o = _options(
            keep,
            timeout=timeout,
            boot_timeout=boot_timeout,
            console=console,
            allow_internet_access=allow_internet_access,
            network=_policy_only(network, "resume"),
            isolated=isolated,
            cgroup=cgroup,
        )
        p = N.enc(_fspath(path))
        L = N.lib()
        ptr = _start(lambda out: L.sbx_resume(ctypes.byref(out), p, ctypes.byref(o)))
        sb = cls._wrap(ptr, "")
        # The template is not part of the pause: the registry entry of the id still has it.
        for e in cls.list():
            if e.sandbox_id == sb._id:
                sb._template = e.template_id
        return sb

    @classmethod
    def connect(cls, sandbox_id: str) -> "Sandbox":
        """Returns the live :class:`Sandbox` object of this process with that id.

        Sandboxes are microVMs inside the process that created them: other processes can
        list them (:meth:`list`) but not use them.

        Raises:
            NotFoundException: no sandbox of this process has that id.
        """
        sb = cls._live.get(sandbox_id)
        if sb is None or sb._guard.closing:
            raise NotFoundException(
                f"no sandbox {sandbox_id!r} in this process (sandboxes cannot be shared "
                "between processes)",
                N.SBX_ENOENT,
            )
        return sb

    @staticmethod
    def list() -> List[SandboxListing]:
        """The sandboxes running on this machine, from every process of this user."""
        L = N.lib()
        arr = ctypes.POINTER(N.sbx_listing)()
        n = ctypes.c_size_t()
        rc = L.sbx_list_running(ctypes.byref(arr), ctypes.byref(n))
        if rc < 0:
            raise from_code(rc)
        try:
            out = []
            for i in range(n.value):
                e = arr[i]
                out.append(
                    SandboxListing(
                        sandbox_id=N.dec(e.id),
                        pid=e.pid,
                        template_id=N.dec(e.rootfs),
                        metadata=N.kv_dict(N.read_strv(e.metadata)),
                        started_at=_time(e.created_ns),
                        end_at=_time(e.ends_ns),
                        cpu_count=e.vcpus,
                        memory_mb=e.memory_mib,
                    )
                )
            return out
        finally:
            L.sbx_listing_free(arr, n.value)

    # --- internals ------------------------------------------------------------------------

    @staticmethod
    def _finalize(guard: Guard) -> None:
        try:
            guard.close()
        except Exception:
            pass

    def _register(self, handle: Any) -> None:
        with self._handles.lock:
            self._handles.set.add(handle)

    def _unregister(self, handle: Any) -> None:
        with self._handles.lock:
            self._handles.set.discard(handle)

    def _call(self, fn: Any, *args: Any, blocking: bool = True, ok: tuple = ()) -> Any:
        return self._guard.call(fn, *args, blocking=blocking, ok=ok)

    def _raw_info(self) -> N.sbx_info:
        info = N.sbx_info()
        self._call(lambda: N.lib().sbx_get_info(self._ptr, ctypes.byref(info)), blocking=False)
        return info

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def sandbox_id(self) -> str:
        """The sandbox id: lowercase alphanumeric, unique on this machine."""
        return self._id

    @property
    def template(self) -> str:
        """The template, snapshot or root filesystem it was created from."""
        return self._template

    @property
    def state(self) -> str:
        """"booting", "running", "stopped", "failed", "paused" after :meth:`pause`, or
        "killed" once :meth:`kill` ran."""
        if self._paused:
            return "paused"
        if self._guard.closing:
            return "killed"
        return _STATES.get(
            self._call(lambda: N.lib().sbx_state(self._ptr), blocking=False), "failed"
        )

    @property
    def metadata(self) -> Dict[str, str]:
        """The metadata given at creation."""
        L = N.lib()

        def get() -> Dict[str, str]:
            out: Dict[str, str] = {}
            i = 0
            k, v = ctypes.c_char_p(), ctypes.c_char_p()
            while L.sbx_metadata_at(self._ptr, i, ctypes.byref(k), ctypes.byref(v)) == 0:
                out[N.dec(k.value)] = N.dec(v.value)
                i += 1
            return out

        return self._call(get, blocking=False)

    def get_info(self) -> SandboxInfo:
        """Describes the sandbox (id, template, metadata, times, state, resources, guest)."""
        i = self._raw_info()
        return SandboxInfo(
            sandbox_id=N.dec(i.id),
            template_id=self._template,
            metadata=self.metadata,
            started_at=_time(i.created_ns),
            end_at=_time(i.ends_ns),
            state=_STATES.get(i.state, "failed"),
            cpu_count=i.vcpus,
            memory_mb=i.memory_mib,
            envd_version=N.dec(i.envd_version),
            kernel_release=N.dec(i.kernel_release),
            os_name=N.dec(i.os_name),
            protocol_version=i.protocol_version,
            boot_time=i.boot_ns / 1e9,
            uptime=i.uptime_ns / 1e9,
            guest_cpus=i.guest_cpus,
            guest_memory_kib=i.guest_mem_kib,
        )

    def is_running(self, request_timeout: Optional[float] = 10) -> bool:
        """True if the guest answers a health check (a round trip to its agent).

        False once the sandbox was killed, shut down, died or its lifetime ran out.
        Raises TimeoutException if the agent does not answer within ``request_timeout``.
        """
        if self._guard.closing:
            return False
        try:
            self.ping(request_timeout)
            return True
        except SandboxNotRunningException:  # SBX_EDEAD, SBX_ESTATE, killed
            return False

    def ping(self, timeout: Optional[float] = 10) -> None:
        """A round trip to the guest agent; raises if it does not answer within ``timeout``."""
        ms = max(1, _ms(timeout, "timeout", 10000))
        self._call(lambda: N.lib().sbx_ping(self._ptr, min(ms, N.SBX_NO_TIMEOUT - 1)))

    def set_timeout(self, timeout: Optional[float]) -> None:
        """Sets the lifetime to end ``timeout`` seconds from now (extends or shortens it);
        ``None`` or ``0`` removes the limit."""
        ms = _ms(timeout, "timeout")
        if timeout and ms == 0:
            ms = 1
        self._call(lambda: N.lib().sbx_set_timeout(self._ptr, ms), blocking=False)

    def update_network(
        self,
        allow_internet_access: bool = True,
        allow_out: Optional[Sequence[str]] = None,
        deny_out: Optional[Sequence[str]] = None,
    ) -> None:
        """Replaces the egress policy of the running sandbox (arguments as in :meth:`create`).

        It applies to every packet from now on, connections already open included. A bad
        entry raises :class:`InvalidArgumentException` naming it and leaves the old policy.
        """
        keep: List[Any] = []
        p = _net_policy(allow_internet_access, allow_out, deny_out, keep)
        self._call(lambda: N.lib().sbx_network_update(self._ptr, ctypes.byref(p)))

    def get_host(self, port: int) -> str:
        """Where guest TCP ``port`` is reachable from this machine: ``"127.0.0.1:PORT"``
        (E2B's ``get_host``). The port is exposed first if needed; it also reaches services
        bound only to the guest's 127.0.0.1, and works without guest network."""
        buf = ctypes.create_string_buffer(64)
        self._call(lambda: N.lib().sbx_get_host(self._ptr, _port(port), buf, len(buf)))
        return N.dec(buf.value)

    def expose(self, port: int, host_port: int = 0, host_addr: Optional[str] = None) -> int:
        """Exposes guest TCP ``port`` on ``host_addr`` (default 127.0.0.1) and ``host_port``
        (0: a free one); returns the host port. Raises :class:`SandboxException` subclasses
        when the host port is taken (EBUSY) or privileged."""
        bound = ctypes.c_uint()
        self._call(
            lambda: N.lib().sbx_expose(
                self._ptr, _port(port), N.enc(host_addr), _port(host_port, 0), ctypes.byref(bound)
            )
        )
        return bound.value

    def unexpose(self, port: int) -> None:
        """Stops exposing guest ``port`` (its host listeners and connections are closed)."""
        self._call(lambda: N.lib().sbx_unexpose(self._ptr, _port(port)))

    def network_stats(self) -> NetworkStats:
        """Frames and bytes through the sandbox's network, and how many were blocked."""
        st = N.sbx_net_stats()
        self._call(lambda: N.lib().sbx_network_stats(self._ptr, ctypes.byref(st)))
        return NetworkStats(
            st.tx_frames, st.tx_bytes, st.rx_frames, st.rx_bytes, st.blocked, st.dropped
        )

    def get_metrics(self, request_timeout: Optional[float] = 10) -> SandboxMetrics:
        """Asks the guest for its resource use (CPU, memory, disk, processes)."""
        m = N.sbx_metrics()
        ms = max(1, _ms(request_timeout, "request_timeout", 10000))
        self._call(
            lambda: N.lib().sbx_get_metrics(
                self._ptr, ctypes.byref(m), min(ms, N.SBX_NO_TIMEOUT - 1)
            )
        )
        busy, total = m.cpu_busy_ms, m.cpu_total_ms
        prev = self._last_cpu
        self._last_cpu = (busy, total)
        if prev and total > prev[1]:
            pct = 100.0 * (busy - prev[0]) / (total - prev[1])
        else:
            pct = 100.0 * busy / total if total else 0.0
        return SandboxMetrics(
            timestamp=_dt.datetime.now(tz=_dt.timezone.utc),
            cpu_count=m.cpus,
            cpu_used_pct=max(0.0, min(100.0, pct)),
            mem_total=m.mem_total_kib * 1024,
            mem_used=max(0, m.mem_total_kib - m.mem_available_kib) * 1024,
            disk_total=m.disk_total_bytes,
            disk_used=m.disk_used_bytes,
            processes=m.processes,
            uptime=m.uptime_ms / 1000.0,
            cpu_busy_ms=busy,
            cpu_total_ms=total,
            mem_available=m.mem_available_kib * 1024,
        )

    def console(self, max_bytes: int = 65536) -> str:
        """The most recent guest console output (the last 64 KiB are kept)."""
        buf = ctypes.create_string_buffer(max_bytes + 1)
        n = self._call(
            lambda: N.lib().sbx_console(self._ptr, buf, max_bytes + 1), blocking=False
        )
        return buf.raw[:n].decode("utf-8", "replace")

    def interrupt(self) -> None:
        """Makes every blocking call running on this sandbox (any thread) raise
        :class:`InterruptedException` as soon as possible."""
        self._call(lambda: N.lib().sbx_interrupt(self._ptr), blocking=False)

    def shutdown(self, timeout: Optional[float] = 10) -> None:
        """Shuts the guest down cleanly (syncs its disks) and waits until it stopped.
        Later calls raise SandboxNotRunningException; :meth:`kill` still frees it."""
        ms = max(1, _ms(timeout, "timeout", 10000))
        self._call(lambda: N.lib().sbx_shutdown(self._ptr, min(ms, N.SBX_NO_TIMEOUT - 1)))

    # --- snapshots --------------------------------------------------------------------------

    def snapshot(self, name_or_path: Union[str, "os.PathLike[str]"]) -> str:
        """Saves the running sandbox (memory, devices, disk changes, running processes) as a
        snapshot that :meth:`create` accepts like a template: ``name_or_path`` is a template
        name (stored in the default template store, ``$SBX_TEMPLATE_DIR``, replacing an
        older one of that name) or a directory path (contains ``/``; must not exist). The
        sandbox stands still while its memory is written, then goes on. Returns
        ``name_or_path``.

        Raises:
            AlreadyExistsException: the directory exists.
            NotSupportedException: the sandbox has extra disks or a TAP network.
        """
        target = _fspath(name_or_path)
        self._call(lambda: N.lib().sbx_snapshot(self._ptr, N.enc(target)))
        return target

    def pause(self, path: Union[str, "os.PathLike[str]"]) -> str:
        """Writes the sandbox to the directory ``path`` (must not exist) and stops it: its
        memory and VM are released, :attr:`state` becomes "paused" and nothing else can be
        done with this object. :meth:`Sandbox.resume` brings it back (same id, processes
        and files), in this process or another one. Returns ``path`` (E2B's ``pause()``
        returns an id to resume; here the directory is that id)."""
        target = _fspath(path)
        self._call(lambda: N.lib().sbx_pause(self._ptr, N.enc(target)))
        # Only sbx_destroy() remains: release the handle now, so that this object cannot
        # touch the id once a resumed sandbox carries it.
        self._paused = True
        self.kill()
        return target

    def fork(
        self,
        n: int = 1,
        *,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        console: Union[None, int, IO[Any]] = None,
        allow_internet_access: bool = True,
        network: Optional[Dict[str, Any]] = None,
    ) -> List["Sandbox"]:
        """Makes ``n`` (1..1024) running copies of this sandbox from one checkpoint, each
        independent: its own id, memory (copy-on-write) and disk; processes, files, envs and
        metadata as this one had them. This sandbox goes on. ``timeout``, ``console`` and
        the egress policy (``allow_internet_access``, ``network`` rules; not inherited) are
        the copies', as in :meth:`create`. Either all copies are made or none."""
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1024:
            raise InvalidArgumentException(f"n must be 1..1024: {n!r}", N.SBX_EINVAL)
        keep: List[Any] = []
        o = _options(
            keep,
            timeout=timeout,
            console=console,
            allow_internet_access=allow_internet_access,
            network=_policy_only(network, "fork"),
        )
        arr = (ctypes.c_void_p * n)()
        L = N.lib()
        try:
            self._call(lambda: L.sbx_fork(self._ptr, n, ctypes.byref(o), arr))
        except BaseException:
            # Ctrl-C may arrive after the copies were made: none may leak.
            for p in arr:
                if p:
                    L.sbx_destroy(p)
            raise
        out: List[Sandbox] = []
        try:
            for i in range(n):
                p, arr[i] = arr[i], None
                out.append(Sandbox._wrap(p, self._template))
        except BaseException:
            for sb in out:
                sb.kill()
            for p in arr:
                if p:
                    L.sbx_destroy(p)
            raise
        return out

    def kill(self) -> None:
        """Stops the sandbox and frees everything it holds. Calls running in other threads
        are interrupted first. Idempotent."""
        if Sandbox._live.get(self._id) is self:  # a resumed sandbox may carry the id now
            Sandbox._live.pop(self._id, None)
        self._finalizer.detach()
        self._guard.close()

    close = kill

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    def __repr__(self) -> str:
        return f"<Sandbox {self._id} template={self._template!r}>"
