# SPDX-License-Identifier: Apache-2.0
"""sandbox.commands: run commands in the guest, foreground or background (E2B-style API)."""
from __future__ import annotations

import codecs
import ctypes
import signal as _signal
import time
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _native as N
from ._handle import SubHandle
from .exceptions import (
    CommandExitException,
    CommandTimeoutException,
    InvalidArgumentException,
    TimeoutException,
)

if TYPE_CHECKING:
    from .sandbox import Sandbox

#: Default timeout of a foreground command in seconds (as in E2B). Background commands and
#: terminals have none by default.
DEFAULT_COMMAND_TIMEOUT = 60.0

#: Output kept per stream by a handle for its result (beyond it `truncated` is set).
DEFAULT_OUTPUT_LIMIT = 16 << 20

# Reads wait at most this long at a time, so that another thread can use the handle
# (send_stdin while this one iterates) between reads.
_SLICE_MS = 200

Data = Union[str, bytes, bytearray, memoryview]
OutputCallback = Callable[[str], Any]

_UNSET: Any = object()


def _bytes(data: Data) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise InvalidArgumentException(
        f"expected str or bytes, got {type(data).__name__}", N.SBX_EINVAL
    )


def _timeout_ms(seconds: Optional[float]) -> int:
    """A process timeout in seconds -> timeout_ms (None or 0: SBX_NO_TIMEOUT)."""
    if not seconds:
        if seconds is not None and seconds < 0:
            raise InvalidArgumentException("timeout must not be negative", N.SBX_EINVAL)
        return N.SBX_NO_TIMEOUT
    if seconds < 0:
        raise InvalidArgumentException("timeout must not be negative", N.SBX_EINVAL)
    return max(1, min(int(round(seconds * 1000)), N.SBX_NO_TIMEOUT - 1))


class _ExecOptions:
    """An sbx_exec_options struct and everything it points to."""

    def __init__(
        self,
        cmd: Union[None, str, Sequence[str]],
        envs: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        stdin: Optional[bytes] = None,
        keep_stdin: bool = False,
        timeout: Optional[float] = None,
        tag: Optional[str] = None,
        output_limit: Optional[int] = None,
    ) -> None:
        o = N.sbx_exec_options()
        o.version = N.SBX_EXEC_OPTIONS_VERSION
        self._keep: List[Any] = []
        if isinstance(cmd, str):
            o.cmd = N.enc(cmd)
        elif cmd is not None:
            argv = list(cmd)
            if not argv or not all(isinstance(a, str) for a in argv):
                raise InvalidArgumentException(
                    "cmd must be a string or a non-empty list of strings", N.SBX_EINVAL
                )
            arr = N.StrArray(argv)
            self._keep.append(arr)
            o.argv = arr.ptr
        env = N.strv(N.kv_list(envs, "envs"))
        if env:
            self._keep.append(env)
            o.envs = env.ptr
        o.cwd = N.enc(cwd)
        o.user = N.enc(user)
        o.tag = N.enc(tag)
        if stdin:
            cp = ctypes.c_char_p(stdin)  # points into the bytes object: no copy
            self._keep += [stdin, cp]
            o.stdin_data = ctypes.cast(cp, ctypes.c_void_p)
            o.stdin_len = len(stdin)
        o.keep_stdin = int(keep_stdin)
        o.timeout_ms = _timeout_ms(timeout)
        if output_limit is not None:
            if output_limit <= 0:
                raise InvalidArgumentException("output_limit must be positive", N.SBX_EINVAL)
            o.output_cap = output_limit
        self.o = o

    def ref(self) -> Any:
        return ctypes.byref(self.o)


@dataclass
class CommandResult:
    """The outcome of a finished command.

    Attributes:
        exit_code: exit status; -1 when a signal killed the process.
        stdout, stderr: output decoded as UTF-8 (invalid bytes replaced); the exact bytes
            are in ``stdout_bytes`` / ``stderr_bytes``.
        error: None on success, else a short description ("exit status 1", "killed by
            signal SIGKILL", "timed out after 5 s").
    """

    exit_code: int
    stdout: str
    stderr: str
    error: Optional[str] = None
    signal: int = 0  #: the signal that killed the process, or 0
    timed_out: bool = False  #: killed because its timeout ran out
    truncated: bool = False  #: output beyond the limit was dropped
    pid: int = 0
    duration: float = 0.0  #: seconds the process ran (0 when unknown)
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)


def _describe(exit_code: int, sig: int, timed_out: bool, timeout: Optional[float]) -> Optional[str]:
    if timed_out:
        return f"timed out after {timeout:g} s (killed)" if timeout else "timed out (killed)"
    if sig:
        try:
            name = _signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by signal {name}"
    if exit_code != 0:
        return f"exit status {exit_code}"
    return None


def _make_result(
    res: N.sbx_exec_result, out: bytes, err: bytes, timeout: Optional[float], truncated: bool
) -> CommandResult:
    return CommandResult(
        exit_code=res.exit_code,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        error=_describe(res.exit_code, res.signal, bool(res.timed_out), timeout),
        signal=res.signal,
        timed_out=bool(res.timed_out),
        truncated=truncated or bool(res.truncated),
        pid=res.pid,
        duration=res.duration_ms / 1000.0,
        stdout_bytes=out,
        stderr_bytes=err,
    )


def _check_result(r: CommandResult) -> CommandResult:
    if r.timed_out:
        raise CommandTimeoutException(r)
    if r.exit_code != 0 or r.signal:
        raise CommandExitException(r)
    return r


def _captured(p: Optional[int], n: int) -> bytes:
    return ctypes.string_at(p, n) if p and n else b""


@dataclass
class ProcessInfo:
    """A process started through the library (:meth:`Commands.list`)."""

    pid: int
    tag: Optional[str]
    cmd: str  #: the program (argv[0]); for shell commands the shell
    args: List[str]  #: argv[1:] (for a shell command: ["-l", "-c", "the command"])
    cwd: str
    running: bool
    exit_code: Optional[int]  #: None while running; -1 when killed by a signal
    signal: int
    pty: bool  #: runs on a terminal
    attached: bool  #: a handle is attached to it


class CommandHandle(SubHandle):
    """A running command (``commands.run(..., background=True)``, ``commands.connect``).

    Iterate over it to receive its output as it comes, as ``(stdout, stderr)`` tuples with
    one of the two set (decoded text). :meth:`wait` returns the :class:`CommandResult`, with
    all output the handle received (what iteration already yielded included).

    One thread at a time reads a handle; :meth:`send_stdin` and :meth:`kill` may be called
    from another thread while one iterates or waits.
    """

    _close_fn = "sbx_proc_close"

    def __init__(
        self,
        sandbox: "Sandbox",
        ptr: int,
        *,
        timeout: Optional[float] = None,
        dropped: int = 0,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> None:
        super().__init__(sandbox, ptr)
        self.pid: int = N.lib().sbx_proc_pid(ptr)  #: the process id in the guest
        #: Output lost before attaching (connect(): beyond what the guest kept), in bytes.
        self.dropped: int = dropped
        self._timeout = timeout
        self._limit = output_limit
        self._truncated = False
        self._buf = ctypes.create_string_buffer(64 << 10)
        self._stream = ctypes.c_int()
        self._acc = {N.SBX_STDOUT: bytearray(), N.SBX_STDERR: bytearray()}
        self._dec = {
            N.SBX_STDOUT: codecs.getincrementaldecoder("utf-8")("replace"),
            N.SBX_STDERR: codecs.getincrementaldecoder("utf-8")("replace"),
        }
        self._eof = False
        self._result: Optional[CommandResult] = None

    # --- reading --------------------------------------------------------------------------

    def _read_raw(self, timeout_ms: int) -> Optional[Tuple[int, bytes]]:
        """One sbx_proc_read: (stream, data), (0, b"") at the end, None if nothing came."""
        L = N.lib()
        with self._lock:
            if self._eof:
                return (0, b"")

            def op() -> int:
                return L.sbx_proc_read(
                    self._p(), self._buf, len(self._buf), ctypes.byref(self._stream), timeout_ms
                )

            rc = self._sandbox._call(op, ok=(N.SBX_ETIMEDOUT, N.SBX_EAGAIN))
            if rc > 0:
                stream = self._stream.value
                data = ctypes.string_at(self._buf, rc)
                acc = self._acc.get(stream)
                if acc is not None:
                    room = self._limit - len(acc)
                    if room < len(data):
                        self._truncated = True
                    acc += data[: max(room, 0)]
                return (stream, data)
            if rc == 0:
                self._eof = True
                return (0, b"")
            return None

    def read(self, timeout: Optional[float] = None) -> Optional[Tuple[str, bytes]]:
        """Reads the next chunk of output as ``("stdout" | "stderr", bytes)``.

        Returns None once the process exited and all output was read. Raises
        :class:`TimeoutException` when nothing came within ``timeout`` seconds (None: wait
        as long as it takes).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ms = _SLICE_MS
            if deadline is not None:
                left = deadline - time.monotonic()
                ms = max(0, min(_SLICE_MS, int(left * 1000)))
            r = self._read_raw(ms)
            if r is not None:
                stream, data = r
                if stream == 0:
                    return None
                return ("stdout" if stream == N.SBX_STDOUT else "stderr", data)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutException(
                    f"no output from process {self.pid} within {timeout:g} s", N.SBX_ETIMEDOUT
                )

    def _texts(self, stream: int, data: bytes) -> str:
        return self._dec[stream].decode(data)

    def _flush_texts(self) -> List[Tuple[int, str]]:
        out = []
        for s, d in self._dec.items():
            t = d.decode(b"", final=True)
            if t:
                out.append((s, t))
        return out

    def __iter__(self) -> Iterator[Tuple[Optional[str], Optional[str]]]:
        while True:
            r = self._read_raw(_SLICE_MS)
            if r is None:
                continue
            stream, data = r
            if stream == 0:
                for s, t in self._flush_texts():
                    yield (t, None) if s == N.SBX_STDOUT else (None, t)
                return
            t = self._texts(stream, data)
            if t:
                yield (t, None) if stream == N.SBX_STDOUT else (None, t)

    def _pump(
        self,
        timeout: Optional[float],
        on_stdout: Optional[OutputCallback],
        on_stderr: Optional[OutputCallback],
        raw: Optional[Callable[[bytes], Any]] = None,
    ) -> None:
        """Reads until the end, passing output to the callbacks (on this thread); `raw`
        receives the bytes of every stream (terminals)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ms = _SLICE_MS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutException(
                        f"process {self.pid} still runs after {timeout:g} s (it goes on)",
                        N.SBX_ETIMEDOUT,
                    )
                ms = max(1, min(_SLICE_MS, int(left * 1000)))
            r = self._read_raw(ms)
            if r is None:
                continue
            stream, data = r
            if stream == 0:
                for s, t in self._flush_texts():
                    cb = on_stdout if s == N.SBX_STDOUT else on_stderr
                    if cb:
                        cb(t)
                return
            if raw:
                raw(data)
                continue
            cb = on_stdout if stream == N.SBX_STDOUT else on_stderr
            if cb:
                t = self._texts(stream, data)
                if t:
                    cb(t)

    # --- the end --------------------------------------------------------------------------

    def wait(
        self,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        *,
        _raw: Optional[Callable[[bytes], Any]] = None,
    ) -> CommandResult:
        """Waits for the process to exit and returns its result.

        Args:
            timeout: seconds to wait (None: as long as it takes). On timeout
                :class:`TimeoutException` is raised and the process goes on.
            on_stdout, on_stderr: called on this thread with output not yet read.

        Raises:
            CommandExitException: the process exited with a non-zero status or was killed
                (carries exit_code, stdout, stderr).
            CommandTimeoutException: the process's own timeout killed it.
        """
        if self._result is None:
            self._pump(timeout, on_stdout, on_stderr, _raw)
            res = N.sbx_exec_result()
            L = N.lib()
            with self._lock:
                try:
                    self._sandbox._call(
                        lambda: L.sbx_proc_wait(self._p(), N.SBX_NO_TIMEOUT, ctypes.byref(res))
                    )
                    out = bytes(self._acc[N.SBX_STDOUT]) + _captured(res.out, res.out_len)
                    err = bytes(self._acc[N.SBX_STDERR]) + _captured(res.err, res.err_len)
                    self._result = _make_result(res, out, err, self._timeout, self._truncated)
                finally:
                    L.sbx_exec_result_free(ctypes.byref(res))
            self._close()
        return _check_result(self._result)

    @property
    def exit_code(self) -> Optional[int]:
        """The exit status once :meth:`wait` returned, else None."""
        return self._result.exit_code if self._result else None

    @property
    def stdout(self) -> str:
        """The stdout received so far."""
        return self._acc[N.SBX_STDOUT].decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        """The stderr received so far."""
        return self._acc[N.SBX_STDERR].decode("utf-8", "replace")

    # --- control --------------------------------------------------------------------------

    def kill(self) -> bool:
        """Kills the process and its process group (SIGKILL). False if it had already exited.
        Callable from any thread, also while another one waits."""
        if self._result is not None:
            return False
        return self._sandbox.commands.kill(self.pid)

    def signal(self, sig: int, group: bool = False) -> bool:
        """Sends a signal (SIGTERM, SIGINT, ... or 0 to check it exists) to the process, or
        with ``group`` to its process group. False if it had already exited. Uses the
        handle (wait for a read in another thread to pause); :meth:`kill` does not."""
        if self._result is not None:
            return False
        with self._lock:
            rc = self._sandbox._call(
                lambda: N.lib().sbx_proc_signal(self._p(), int(sig), int(group)),
                ok=(N.SBX_ENOENT,),
            )
        return rc != N.SBX_ENOENT

    def send_stdin(self, data: Data) -> None:
        """Writes to the process's stdin (run with ``stdin=True``). Returns once the guest
        wrote it into the pipe."""
        b = _bytes(data)
        L = N.lib()
        with self._lock:
            self._sandbox._call(lambda: L.sbx_proc_write(self._p(), b, len(b)))

    def close_stdin(self) -> None:
        """Closes the process's stdin (it reads EOF)."""
        with self._lock:
            self._sandbox._call(lambda: N.lib().sbx_proc_close_stdin(self._p()))

    def _resize(self, rows: int, cols: int) -> None:
        with self._lock:
            self._sandbox._call(
                lambda: N.lib().sbx_proc_resize(self._p(), rows, cols)
            )

    @property
    def fd(self) -> int:
        """A file descriptor that polls readable while output (or the exit) is waiting, for
        event loops. Do not read or close it."""
        return self._sandbox._call(lambda: N.lib().sbx_proc_fd(self._p()), blocking=False)

    def disconnect(self) -> None:
        """Releases the handle; the process goes on (``commands.connect(pid)`` finds it
        again, with the output this handle did not return)."""
        with self._lock:
            self._close()

    close = disconnect

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid}>"


class Commands:
    """``sandbox.commands``: run commands and manage processes in the guest."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def run(
        self,
        cmd: Union[str, Sequence[str]],
        background: bool = False,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        stdin: Union[None, bool, Data] = None,
        timeout: Optional[float] = _UNSET,
        *,
        tag: Optional[str] = None,
        output_limit: Optional[int] = None,
    ) -> Any:
        """Runs a command in the sandbox.

        Args:
            cmd: a shell command line (run with ``/bin/bash -l -c``), or a list of
                arguments run directly (argv[0] searched in PATH).
            background: return a :class:`CommandHandle` at once instead of waiting.
            envs: environment variables on top of the sandbox's.
            user: user name or uid to run as (default: the sandbox's default user).
            cwd: working directory (default: the user's home).
            on_stdout, on_stderr: called on this thread with output as it arrives (decoded
                text). In the background they are used by ``handle.wait()``.
            stdin: data written to stdin before EOF (str or bytes); or True in the
                background to keep stdin open for ``handle.send_stdin()``.
            timeout: seconds after which the guest kills the process and its group; None
                or 0: no limit. Default: 60 s in the foreground, none in the background.
            tag: free text shown by :meth:`list`.
            output_limit: bytes kept per stream for the result (default 16 MiB).

        Returns:
            :class:`CommandResult` (foreground) or :class:`CommandHandle` (background).

        Raises:
            CommandExitException: the command exited non-zero or was killed (foreground).
            CommandTimeoutException: its timeout ran out (foreground).
            NotFoundException: no such user or cwd. PermissionDeniedException: cannot
                switch to the user or enter cwd.
            KeyboardInterrupt: Ctrl-C; the command is killed, the sandbox stays usable.
        """
        if timeout is _UNSET:
            timeout = None if background else DEFAULT_COMMAND_TIMEOUT
        keep = False
        data: Optional[bytes] = None
        if stdin is True:
            keep = background
        elif stdin is not None and stdin is not False:
            data = _bytes(stdin)
        opts = _ExecOptions(
            cmd, envs, cwd, user, data, keep, timeout, tag,
            output_limit if not background else None,
        )
        limit = output_limit or DEFAULT_OUTPUT_LIMIT
        if background:
            return self._start(opts, timeout, limit)
        if on_stdout is None and on_stderr is None:
            return self._exec(opts, timeout)
        # Callbacks run here, between reads, so that exceptions (and Ctrl-C) raised in them
        # propagate; the process is then killed, as sbx_exec would.
        h = self._start(opts, timeout, limit)
        try:
            return h.wait(on_stdout=on_stdout, on_stderr=on_stderr)
        except CommandExitException:
            raise
        except BaseException:
            try:
                self.kill(h.pid)
            except Exception:
                pass
            h.disconnect()
            raise

    def _exec(self, opts: _ExecOptions, timeout: Optional[float]) -> CommandResult:
        L = N.lib()
        sb = self._sandbox
        res = N.sbx_exec_result()
        try:
            sb._call(lambda: L.sbx_exec(sb._ptr, opts.ref(), ctypes.byref(res)))
            r = _make_result(
                res,
                _captured(res.out, res.out_len),
                _captured(res.err, res.err_len),
                timeout,
                False,
            )
        finally:
            L.sbx_exec_result_free(ctypes.byref(res))
        return _check_result(r)

    def _start(
        self, opts: _ExecOptions, timeout: Optional[float], limit: int, pty: Any = None
    ) -> Any:
        from .pty import PtyHandle

        L = N.lib()
        sb = self._sandbox
        out = ctypes.c_void_p()
        if pty is None:
            sb._call(lambda: L.sbx_proc_start(sb._ptr, opts.ref(), ctypes.byref(out)))
            return CommandHandle(sb, out.value, timeout=timeout, output_limit=limit)
        rows, cols = pty
        sb._call(lambda: L.sbx_pty_open(sb._ptr, rows, cols, opts.ref(), ctypes.byref(out)))
        return PtyHandle(sb, out.value, timeout=timeout, output_limit=limit)

    def list(self) -> List[ProcessInfo]:
        """The processes started through the library: running ones and the last 64 that
        finished, in start order."""
        L = N.lib()
        sb = self._sandbox
        arr = ctypes.POINTER(N.sbx_proc_info)()
        n = ctypes.c_size_t()
        sb._call(lambda: L.sbx_proc_list(sb._ptr, ctypes.byref(arr), ctypes.byref(n)))
        try:
            out = []
            for i in range(n.value):
                e = arr[i]
                argv = N.read_strv(e.argv)
                tag = N.dec(e.tag)
                out.append(
                    ProcessInfo(
                        pid=e.pid,
                        tag=tag or None,
                        cmd=argv[0] if argv else "",
                        args=argv[1:],
                        cwd=N.dec(e.cwd),
                        running=bool(e.running),
                        exit_code=None if e.running else e.exit_code,
                        signal=e.signal,
                        pty=bool(e.pty),
                        attached=bool(e.attached),
                    )
                )
            return out
        finally:
            L.sbx_proc_list_free(arr, n.value)

    def kill(self, pid: int, signal: int = _signal.SIGKILL, group: bool = True) -> bool:
        """Sends a signal (default SIGKILL) to a process by pid, with ``group`` to its whole
        process group. Returns False if there is no such process (or it exited)."""
        sb = self._sandbox
        rc = sb._call(
            lambda: N.lib().sbx_kill(sb._ptr, int(pid), int(signal), int(group)),
            ok=(N.SBX_ENOENT,),
        )
        return rc != N.SBX_ENOENT

    def connect(self, pid: int, timeout: Optional[float] = None) -> CommandHandle:
        """Attaches to a process started earlier (background command or terminal, also one
        that finished recently). Output not handed out yet is delivered first; the handle's
        ``dropped`` tells how many bytes were lost beyond what the guest keeps (1 MiB).

        Raises:
            NotFoundException: no such process.
        """
        return self._attach(pid, timeout, CommandHandle)

    def _attach(self, pid: int, timeout: Optional[float], cls: Any) -> Any:
        L = N.lib()
        sb = self._sandbox
        out = ctypes.c_void_p()
        dropped = ctypes.c_uint64()
        sb._call(
            lambda: L.sbx_proc_attach(sb._ptr, int(pid), ctypes.byref(out), ctypes.byref(dropped))
        )
        return cls(sb, out.value, timeout=timeout, dropped=dropped.value)

    def _handle_for(self, pid: int) -> Tuple[CommandHandle, bool]:
        """A live handle of this process in this sandbox object, else a temporary one."""
        with self._sandbox._handles.lock:
            for h in list(self._sandbox._handles.set):
                if isinstance(h, CommandHandle) and h.pid == pid and not h.closed:
                    return h, False
        return self._attach(pid, None, CommandHandle), True

    def send_stdin(self, pid: int, data: Data) -> None:
        """Writes to the stdin of a process by pid (started with ``stdin=True``)."""
        h, temp = self._handle_for(pid)
        try:
            h.send_stdin(data)
        finally:
            if temp:
                h.disconnect()

    def close_stdin(self, pid: int) -> None:
        """Closes the stdin of a process by pid."""
        h, temp = self._handle_for(pid)
        try:
            h.close_stdin()
        finally:
            if temp:
                h.disconnect()
