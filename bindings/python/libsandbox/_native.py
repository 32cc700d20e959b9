# SPDX-License-Identifier: Apache-2.0
"""ctypes declarations of libsandbox's public C API (include/sandbox.h) and how the library is found."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from ctypes import (
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_void_p,
)

# --- constants from sandbox.h --------------------------------------------------------------

SBX_OK = 0
SBX_EINVAL = -1
SBX_ENOMEM = -2
SBX_ENOKVM = -3
SBX_EKVM = -4
SBX_EIMAGE = -5
SBX_ETIMEDOUT = -6
SBX_EGUEST = -7
SBX_EPROTO = -8
SBX_EINTR = -9
SBX_ESTATE = -10
SBX_EIO = -11
SBX_ENOTSUP = -12
SBX_ENOENT = -13
SBX_EACCES = -14
SBX_ENOTDIR = -15
SBX_EISDIR = -16
SBX_ENOSPC = -17
SBX_EEXIST = -18
SBX_ENOTEMPTY = -19
SBX_EBUSY = -20
SBX_EDEAD = -21
SBX_EAGAIN = -22

#: Names of the error codes, as in the header.
ERROR_NAMES = {
    v: k for k, v in globals().items() if k.startswith("SBX_E") and isinstance(v, int)
}

SBX_STATE_BOOTING = 0
SBX_STATE_RUNNING = 1
SBX_STATE_STOPPED = 2
SBX_STATE_FAILED = 3
SBX_STATE_PAUSED = 4

SBX_NO_TIMEOUT = 0xFFFFFFFF
SBX_STDOUT = 1
SBX_STDERR = 2

SBX_OPTIONS_VERSION = 5
SBX_EXEC_OPTIONS_VERSION = 1
SBX_FILE_OPTIONS_VERSION = 1
SBX_TEMPLATE_OPTIONS_VERSION = 1
SBX_RUN_CODE_OPTIONS_VERSION = 1
SBX_CODE_PORT = 49999

SBX_NET_NAT = 0
SBX_NET_NONE = 1
SBX_NET_TAP = 2

SBX_TYPE_FILE = 1
SBX_TYPE_DIR = 2
SBX_TYPE_SYMLINK = 3
SBX_TYPE_OTHER = 4

SBX_WATCH_CREATE = 1
SBX_WATCH_WRITE = 2
SBX_WATCH_REMOVE = 3
SBX_WATCH_RENAME = 4
SBX_WATCH_CHMOD = 5
SBX_WATCH_OVERFLOW = 6

# --- structures (field order and types exactly as in sandbox.h) ----------------------------


class sbx_disk(Structure):
    _fields_ = [
        ("path", c_char_p),
        ("read_only", c_int),
        ("ephemeral", c_int),
        ("serial", c_char_p),
    ]


class sbx_net_policy(Structure):
    _fields_ = [
        ("block_internet", c_int),
        ("allow_out", POINTER(c_char_p)),
        ("deny_out", POINTER(c_char_p)),
    ]


class sbx_net_stats(Structure):
    _fields_ = [
        ("tx_frames", c_uint64),
        ("tx_bytes", c_uint64),
        ("rx_frames", c_uint64),
        ("rx_bytes", c_uint64),
        ("blocked", c_uint64),
        ("dropped", c_uint64),
    ]


class sbx_options(Structure):
    _fields_ = [
        ("version", c_uint),
        ("kernel", c_char_p),
        ("rootfs", c_char_p),
        ("vcpus", c_uint),
        ("memory_mib", c_uint),
        ("boot_timeout_ms", c_uint),
        ("console_fd", c_int),
        ("cmdline_extra", c_char_p),
        ("disks", POINTER(sbx_disk)),
        ("ndisks", c_uint),
        ("image_dir", c_char_p),
        ("envs", POINTER(c_char_p)),
        ("default_user", c_char_p),
        ("metadata", POINTER(c_char_p)),
        ("lifetime_ms", c_uint64),
        ("network", c_int),
        ("net_policy", sbx_net_policy),
        ("hosts", POINTER(c_char_p)),
        ("host_loopback", c_int),
        ("tap_name", c_char_p),
        ("tap_address", c_char_p),
        ("tap_gateway", c_char_p),
        ("tap_dns", c_char_p),
        # version 3
        ("template_name", c_char_p),
        ("template_dir", c_char_p),
        # version 4
        ("no_seccomp", c_int),
        ("isolated", c_int),
        ("cgroup", c_char_p),
        ("max_processes", c_uint),
        # version 5
        ("max_buffer_mib", c_uint),
    ]


class sbx_info(Structure):
    _fields_ = [
        ("id", c_char * 32),
        ("kernel_release", c_char * 65),
        ("envd_version", c_char * 32),
        ("protocol_version", c_uint32),
        ("vcpus", c_uint),
        ("memory_mib", c_uint),
        ("boot_ns", c_uint64),
        ("guest_cpus", c_uint),
        ("guest_mem_kib", c_uint64),
        ("os_name", c_char * 128),
        ("state", c_int),
        ("created_ns", c_uint64),
        ("ends_ns", c_uint64),
        ("uptime_ns", c_uint64),
    ]


class sbx_listing(Structure):
    _fields_ = [
        ("id", c_char * 32),
        ("pid", c_int),
        ("created_ns", c_uint64),
        ("ends_ns", c_uint64),
        ("vcpus", c_uint),
        ("memory_mib", c_uint),
        ("rootfs", c_char * 256),
        ("metadata", POINTER(c_char_p)),
    ]


class sbx_metrics(Structure):
    _fields_ = [
        ("uptime_ms", c_uint64),
        ("cpus", c_uint),
        ("cpu_busy_ms", c_uint64),
        ("cpu_total_ms", c_uint64),
        ("mem_total_kib", c_uint64),
        ("mem_available_kib", c_uint64),
        ("disk_total_bytes", c_uint64),
        ("disk_used_bytes", c_uint64),
        ("processes", c_uint),
    ]


# int (*sbx_output_fn)(void *ctx, int stream, const void *data, size_t len)
sbx_output_fn = ctypes.CFUNCTYPE(c_int, c_void_p, c_int, c_void_p, c_size_t)
# int (*sbx_progress_fn)(void *ctx, uint64_t bytes, uint64_t files)
sbx_progress_fn = ctypes.CFUNCTYPE(c_int, c_void_p, c_uint64, c_uint64)


class sbx_exec_options(Structure):
    _fields_ = [
        ("version", c_uint),
        ("argv", POINTER(c_char_p)),
        ("cmd", c_char_p),
        ("envs", POINTER(c_char_p)),
        ("cwd", c_char_p),
        ("user", c_char_p),
        ("stdin_data", c_void_p),
        ("stdin_len", c_size_t),
        ("keep_stdin", c_int),
        ("timeout_ms", c_uint),
        ("on_output", sbx_output_fn),
        ("ctx", c_void_p),
        ("output_cap", c_size_t),
        ("tag", c_char_p),
        ("pty_rows", c_uint),
        ("pty_cols", c_uint),
    ]


class sbx_exec_result(Structure):
    _fields_ = [
        ("exit_code", c_int),
        ("signal", c_int),
        ("timed_out", c_int),
        ("truncated", c_int),
        ("pid", c_uint32),
        ("duration_ms", c_uint64),
        ("out", c_void_p),
        ("err", c_void_p),
        ("out_len", c_size_t),
        ("err_len", c_size_t),
    ]


class sbx_proc_info(Structure):
    _fields_ = [
        ("pid", c_uint32),
        ("argv", POINTER(c_char_p)),
        ("cwd", c_char_p),
        ("tag", c_char_p),
        ("running", c_int),
        ("exit_code", c_int),
        ("signal", c_int),
        ("pty", c_int),
        ("attached", c_int),
    ]


class sbx_file_options(Structure):
    _fields_ = [
        ("version", c_uint),
        ("mode", c_uint),
        ("user", c_char_p),
        ("append", c_int),
    ]


class sbx_entry(Structure):
    _fields_ = [
        ("name", c_char_p),
        ("path", c_char_p),
        ("type", c_int),
        ("size", c_uint64),
        ("mode", c_uint),
        ("uid", c_uint32),
        ("gid", c_uint32),
        ("owner", c_char_p),
        ("group", c_char_p),
        ("mtime_ns", c_int64),
        ("symlink_target", c_char_p),
    ]


class sbx_watch_event(Structure):
    _fields_ = [("op", c_int), ("name", c_char * 4096)]


class sbx_template_progress(Structure):
    _fields_ = [
        ("step", c_uint),
        ("nsteps", c_uint),
        ("text", c_char_p),
        ("cached", c_int),
        ("done", c_int),
        ("elapsed_ms", c_uint64),
    ]


# void (*on_progress)(void *ctx, const sbx_template_progress *p)
sbx_template_progress_fn = ctypes.CFUNCTYPE(None, c_void_p, POINTER(sbx_template_progress))


class sbx_template_build_options(Structure):
    _fields_ = [
        ("version", c_uint),
        ("name", c_char_p),
        ("dockerfile", c_char_p),
        ("dockerfile_text", c_char_p),
        ("context", c_char_p),
        ("build_args", POINTER(c_char_p)),
        ("tags", POINTER(c_char_p)),
        ("vcpus", c_uint),
        ("memory_mib", c_uint),
        ("disk_mib", c_uint64),
        ("start_cmd", c_char_p),
        ("ready", c_char_p),
        ("ready_timeout_ms", c_uint),
        ("step_timeout_ms", c_uint),
        ("no_cache", c_int),
        ("template_dir", c_char_p),
        ("kernel", c_char_p),
        ("image_dir", c_char_p),
        ("host_loopback", c_int),
        ("on_output", sbx_output_fn),
        ("on_progress", sbx_template_progress_fn),
        ("ctx", c_void_p),
    ]


class sbx_template_info(Structure):
    _fields_ = [
        ("name", c_char * 64),
        ("is_snapshot", c_int),
        ("parent", c_char * 256),
        ("vcpus", c_uint),
        ("memory_mib", c_uint),
        ("disk_mib", c_uint64),
        ("nsteps", c_uint),
        ("ncached", c_uint),
        ("created_ns", c_uint64),
        ("memory_bytes", c_uint64),
        ("disk_bytes", c_uint64),
        ("build_ms", c_uint64),
        ("tags", c_char * 256),
        ("error", c_char * 256),
    ]


class sbx_code_result(Structure):
    _fields_ = [
        ("is_main_result", c_int),
        ("nformats", c_uint),
        ("mime", POINTER(c_char_p)),
        ("data", POINTER(c_char_p)),
    ]


class sbx_code_error(Structure):
    _fields_ = [("name", c_char_p), ("value", c_char_p), ("traceback", c_char_p)]


class sbx_execution(Structure):
    _fields_ = [
        ("results", POINTER(sbx_code_result)),
        ("nresults", c_size_t),
        ("out", c_void_p),
        ("err", c_void_p),
        ("out_len", c_size_t),
        ("err_len", c_size_t),
        ("error", POINTER(sbx_code_error)),
        ("execution_count", c_uint),
        ("interrupted", c_int),
        ("timed_out", c_int),
        ("restarted", c_int),
        ("exit_code", c_int),
        ("context", c_char * 64),
    ]


# int (*on_result)(void *ctx, const sbx_code_result *r)
sbx_code_result_fn = ctypes.CFUNCTYPE(c_int, c_void_p, POINTER(sbx_code_result))


class sbx_run_code_options(Structure):
    _fields_ = [
        ("version", c_uint),
        ("code", c_char_p),
        ("context", c_char_p),
        ("language", c_char_p),
        ("envs", POINTER(c_char_p)),
        ("timeout_ms", c_uint),
        ("on_output", sbx_output_fn),
        ("on_result", sbx_code_result_fn),
        ("ctx", c_void_p),
    ]


class sbx_code_context(Structure):
    _fields_ = [("id", c_char * 64), ("language", c_char * 16), ("cwd", c_char * 256)]


#: Every struct of the header, by C name (the layout test compares them with a C compiler).
STRUCTS = {
    "sbx_disk": sbx_disk,
    "sbx_options": sbx_options,
    "sbx_info": sbx_info,
    "sbx_listing": sbx_listing,
    "sbx_metrics": sbx_metrics,
    "sbx_exec_options": sbx_exec_options,
    "sbx_net_policy": sbx_net_policy,
    "sbx_net_stats": sbx_net_stats,
    "sbx_exec_result": sbx_exec_result,
    "sbx_proc_info": sbx_proc_info,
    "sbx_file_options": sbx_file_options,
    "sbx_entry": sbx_entry,
    "sbx_watch_event": sbx_watch_event,
    "sbx_template_progress": sbx_template_progress,
    "sbx_template_build_options": sbx_template_build_options,
    "sbx_template_info": sbx_template_info,
    "sbx_code_result": sbx_code_result,
    "sbx_code_error": sbx_code_error,
    "sbx_execution": sbx_execution,
    "sbx_run_code_options": sbx_run_code_options,
    "sbx_code_context": sbx_code_context,
}

_P = c_void_p  # opaque handles: sbx*, sbx_proc*, sbx_file*, sbx_watch*

# name: (restype, argtypes)
_PROTOTYPES = {
    "sbx_strerror": (c_char_p, [c_int]),
    "sbx_version": (c_char_p, []),
    "sbx_create": (c_int, [POINTER(_P), POINTER(sbx_options)]),
    "sbx_destroy": (None, [_P]),
    "sbx_errmsg": (c_char_p, [_P]),
    "sbx_state": (c_int, [_P]),
    "sbx_get_info": (c_int, [_P, POINTER(sbx_info)]),
    "sbx_ping": (c_int, [_P, c_uint]),
    "sbx_shutdown": (c_int, [_P, c_uint]),
    "sbx_console": (c_size_t, [_P, c_void_p, c_size_t]),
    "sbx_interrupt": (None, [_P]),
    "sbx_metadata": (c_char_p, [_P, c_char_p]),
    "sbx_metadata_at": (c_int, [_P, c_size_t, POINTER(c_char_p), POINTER(c_char_p)]),
    "sbx_list_running": (c_int, [POINTER(POINTER(sbx_listing)), POINTER(c_size_t)]),
    "sbx_listing_free": (None, [POINTER(sbx_listing), c_size_t]),
    "sbx_set_timeout": (c_int, [_P, c_uint64]),
    "sbx_get_metrics": (c_int, [_P, POINTER(sbx_metrics), c_uint]),
    "sbx_network_update": (c_int, [_P, POINTER(sbx_net_policy)]),
    "sbx_network_stats": (c_int, [_P, POINTER(sbx_net_stats)]),
    "sbx_expose": (c_int, [_P, c_uint, c_char_p, c_uint, POINTER(c_uint)]),
    "sbx_get_host": (c_int, [_P, c_uint, c_char_p, c_size_t]),
    "sbx_unexpose": (c_int, [_P, c_uint]),
    "sbx_exec_result_free": (None, [POINTER(sbx_exec_result)]),
    "sbx_exec": (c_int, [_P, POINTER(sbx_exec_options), POINTER(sbx_exec_result)]),
    "sbx_proc_start": (c_int, [_P, POINTER(sbx_exec_options), POINTER(_P)]),
    "sbx_proc_attach": (c_int, [_P, c_uint32, POINTER(_P), POINTER(c_uint64)]),
    "sbx_proc_pid": (c_uint32, [_P]),
    "sbx_proc_fd": (c_int, [_P]),
    "sbx_proc_read": (c_int, [_P, c_void_p, c_size_t, POINTER(c_int), c_uint]),
    "sbx_proc_write": (c_int, [_P, c_void_p, c_size_t]),
    "sbx_proc_close_stdin": (c_int, [_P]),
    "sbx_proc_signal": (c_int, [_P, c_int, c_int]),
    "sbx_proc_resize": (c_int, [_P, c_uint, c_uint]),
    "sbx_proc_wait": (c_int, [_P, c_uint, POINTER(sbx_exec_result)]),
    "sbx_proc_close": (None, [_P]),
    "sbx_kill": (c_int, [_P, c_uint32, c_int, c_int]),
    "sbx_proc_list": (c_int, [_P, POINTER(POINTER(sbx_proc_info)), POINTER(c_size_t)]),
    "sbx_proc_list_free": (None, [POINTER(sbx_proc_info), c_size_t]),
    "sbx_pty_open": (c_int, [_P, c_uint, c_uint, POINTER(sbx_exec_options), POINTER(_P)]),
    "sbx_write_file": (c_int, [_P, c_char_p, c_void_p, c_size_t, c_uint]),
    "sbx_read_file": (c_int, [_P, c_char_p, POINTER(c_void_p), POINTER(c_size_t), c_size_t]),
    "sbx_file_create": (c_int, [_P, c_char_p, POINTER(sbx_file_options), POINTER(_P)]),
    "sbx_file_write": (c_int, [_P, c_void_p, c_size_t]),
    "sbx_file_commit": (c_int, [_P]),
    "sbx_file_open": (c_int, [_P, c_char_p, c_uint64, c_uint64, POINTER(_P), POINTER(c_uint64)]),
    "sbx_file_read": (c_int, [_P, c_void_p, c_size_t]),
    "sbx_file_close": (None, [_P]),
    "sbx_stat": (c_int, [_P, c_char_p, POINTER(sbx_entry)]),
    "sbx_entry_clear": (None, [POINTER(sbx_entry)]),
    "sbx_exists": (c_int, [_P, c_char_p]),
    "sbx_list": (c_int, [_P, c_char_p, c_uint, POINTER(POINTER(sbx_entry)), POINTER(c_size_t)]),
    "sbx_entries_free": (None, [POINTER(sbx_entry), c_size_t]),
    "sbx_mkdir": (c_int, [_P, c_char_p, c_uint]),
    "sbx_remove": (c_int, [_P, c_char_p, c_int]),
    "sbx_rename": (c_int, [_P, c_char_p, c_char_p]),
    "sbx_copy_in": (c_int, [_P, c_char_p, c_char_p, sbx_progress_fn, c_void_p]),
    "sbx_copy_out": (c_int, [_P, c_char_p, c_char_p, sbx_progress_fn, c_void_p]),
    "sbx_watch_open": (c_int, [_P, c_char_p, c_int, POINTER(_P)]),
    "sbx_watch_fd": (c_int, [_P]),
    "sbx_watch_next": (c_int, [_P, POINTER(sbx_watch_event), c_uint]),
    "sbx_watch_close": (None, [_P]),
    "sbx_snapshot": (c_int, [_P, c_char_p]),
    "sbx_pause": (c_int, [_P, c_char_p]),
    "sbx_resume": (c_int, [POINTER(_P), c_char_p, POINTER(sbx_options)]),
    "sbx_fork": (c_int, [_P, c_uint, POINTER(sbx_options), POINTER(_P)]),
    "sbx_template_build": (
        c_int,
        [POINTER(sbx_template_build_options), POINTER(sbx_template_info), c_char_p, c_size_t],
    ),
    "sbx_template_list": (
        c_int,
        [c_char_p, POINTER(POINTER(sbx_template_info)), POINTER(c_size_t), c_char_p, c_size_t],
    ),
    "sbx_template_list_free": (None, [POINTER(sbx_template_info), c_size_t]),
    "sbx_template_remove": (c_int, [c_char_p, c_char_p, c_char_p, c_size_t]),
    "sbx_code_result_get": (c_char_p, [POINTER(sbx_code_result), c_char_p]),
    "sbx_execution_free": (None, [POINTER(sbx_execution)]),
    "sbx_run_code": (c_int, [_P, POINTER(sbx_run_code_options), POINTER(sbx_execution)]),
    "sbx_code_interrupt": (c_int, [_P, c_char_p]),
    "sbx_code_context_create": (c_int, [_P, c_char_p, c_char_p, POINTER(sbx_code_context)]),
    "sbx_code_context_list": (
        c_int,
        [_P, POINTER(POINTER(sbx_code_context)), POINTER(c_size_t)],
    ),
    "sbx_code_context_restart": (c_int, [_P, c_char_p]),
    "sbx_code_context_remove": (c_int, [_P, c_char_p]),
    # libc free() for sbx_read_file's buffer
}

# --- finding and loading the library -------------------------------------------------------

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_lib_path: Optional[str] = None
_libc: Optional[ctypes.CDLL] = None

_STANDARD_DIRS = (
    "/usr/local/lib",
    "/usr/local/lib64",
    "/usr/local/lib/x86_64-linux-gnu",
    "/usr/local/lib/aarch64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
)


def _pkg_config_libdir() -> Optional[str]:
    exe = shutil.which("pkg-config")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--variable=libdir", "libsandbox"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    d = out.stdout.strip()
    return d if out.returncode == 0 and d else None


def candidate_paths() -> List[Tuple[str, str]]:
    """Where the library is looked for, in order, as (description, path-or-name) pairs.

    1. ``$SBX_LIBRARY`` (the .so itself, or a directory holding libsandbox.so);
    2. the installed library: the dynamic loader's search (``ctypes.util.find_library``,
       ``LD_LIBRARY_PATH``), pkg-config's libdir for ``libsandbox``, standard directories;
    3. the repository's build tree (``build/`` next to ``bindings/``) when the package is
       used from a source checkout.
    """
    out: List[Tuple[str, str]] = []
    env = os.environ.get("SBX_LIBRARY")
    if env:
        p = Path(env)
        out.append(("$SBX_LIBRARY", str(p / "libsandbox.so") if p.is_dir() else str(p)))
        return out  # an explicit choice is not second-guessed
    found = ctypes.util.find_library("sandbox")
    if found:
        out.append(("find_library", found))
    out.append(("dynamic loader", "libsandbox.so.0"))
    d = _pkg_config_libdir()
    if d:
        out.append(("pkg-config libdir", os.path.join(d, "libsandbox.so.0")))
    for d in _STANDARD_DIRS:
        out.append(("standard path", os.path.join(d, "libsandbox.so.0")))
    here = Path(__file__).resolve()
    if len(here.parents) > 3:
        out.append(("build tree", str(here.parents[3] / "build" / "libsandbox.so")))
    return out


def _declare(lib: ctypes.CDLL) -> None:
    for name, (res, args) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


def load(path: Optional[str] = None) -> ctypes.CDLL:
    """Loads libsandbox (once per process) and returns it; see :func:`candidate_paths`."""
    global _lib, _lib_path, _libc
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        cands = [("argument", path)] if path else candidate_paths()
        for how, cand in cands:
            if os.sep in cand and not os.path.exists(cand):
                tried.append(f"{how}: {cand} (missing)")
                continue
            try:
                lib = ctypes.CDLL(cand)
            except OSError as e:
                tried.append(f"{how}: {cand} ({e})")
                continue
            try:
                _declare(lib)
            except AttributeError as e:
                tried.append(f"{how}: {cand} (not libsandbox or too old: {e})")
                continue
            _lib, _lib_path = lib, cand
            _libc = ctypes.CDLL(None)
            _libc.free.argtypes = [c_void_p]
            _libc.free.restype = None
            return lib
        from .exceptions import LibraryNotFoundException

        raise LibraryNotFoundException(
            "libsandbox.so not found; set SBX_LIBRARY to its path, install the library "
            "(cmake --install build) or build it in the repository's build/ directory. Tried: "
            + "; ".join(tried)
        )


def lib() -> ctypes.CDLL:
    """The loaded library (loading it on first use)."""
    return _lib if _lib is not None else load()


def library_path() -> str:
    """The path or name the library was loaded from."""
    lib()
    assert _lib_path is not None
    return _lib_path


def libc_free(p: int) -> None:
    lib()
    assert _libc is not None
    _libc.free(p)


# --- conversions ---------------------------------------------------------------------------


def enc(s: Optional[str]) -> Optional[bytes]:
    """A str for the C side: UTF-8, with undecodable bytes kept (like os.fsencode)."""
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    return s.encode("utf-8", "surrogateescape")


def dec(b: Optional[bytes]) -> str:
    return "" if b is None else b.decode("utf-8", "surrogateescape")


class StrArray:
    """A NULL-terminated ``char *[]`` that keeps its strings alive."""

    def __init__(self, items: Iterable[str]):
        self._bytes = [enc(s) for s in items]
        self.array = (c_char_p * (len(self._bytes) + 1))(*self._bytes, None)

    @property
    def ptr(self):
        return ctypes.cast(self.array, POINTER(c_char_p))


def strv(items: Optional[Iterable[str]]) -> Optional[StrArray]:
    return None if items is None else StrArray(items)


def read_strv(p) -> List[str]:
    out: List[str] = []
    if not p:
        return out
    i = 0
    while p[i] is not None:
        out.append(dec(p[i]))
        i += 1
    return out


def kv_list(d: Optional[dict], what: str) -> Optional[List[str]]:
    """{"K": "V"} -> ["K=V"], checking keys (the C library checks the rest)."""
    if d is None:
        return None
    from .exceptions import InvalidArgumentException

    out = []
    for k, v in d.items():
        if not isinstance(k, str) or not k or "=" in k:
            raise InvalidArgumentException(f"{what}: invalid key {k!r}", code=SBX_EINVAL)
        out.append(f"{k}={v}")
    return out


def kv_dict(items: Sequence[str]) -> dict:
    out = {}
    for s in items:
        k, _, v = s.partition("=")
        out[k] = v
    return out
