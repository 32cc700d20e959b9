# SPDX-License-Identifier: Apache-2.0
"""Keeps C calls safe and interruptible: a per-sandbox in-flight guard (kill() never frees a
sandbox under a running call) and the Ctrl-C bridge (SIGINT -> sbx_interrupt)."""
from __future__ import annotations

import ctypes
import os
import select
import signal
import threading
from typing import Any, Callable, Dict, Optional, Tuple

from . import _native as N
from .exceptions import SandboxException, SandboxNotRunningException, from_code


def _flush_signals() -> None:
    """Does nothing, but calling a Python function lets CPython run pending signal handlers
    here (the eval-breaker check on entry), so that a KeyboardInterrupt caused by Ctrl-C is
    raised inside the caller's try block rather than in its cleanup code."""


class _SigintBridge:
    """Turns Ctrl-C into sbx_interrupt() while the main thread is blocked in a C call.

    Python runs signal handlers only between bytecodes of the main thread, so a SIGINT that
    arrives while the main thread waits inside libsandbox would otherwise wait for the call's
    timeout. While such a call runs, the interpreter's wakeup fd (signal.set_wakeup_fd) points
    at a pipe that a watcher thread reads: on SIGINT it calls sbx_interrupt() on the sandboxes
    the main thread is calling into (again every 20 ms, in case the signal came just before
    the call started blocking), the call returns SBX_EINTR, and the interpreter then raises
    KeyboardInterrupt from the Python handler as usual. The previous wakeup fd is restored
    after the call, and bytes arriving meanwhile are forwarded to it (asyncio's self-pipe keeps
    working).
    """

    def __init__(self) -> None:
        # Held while interrupting, and by Sandbox destruction: a pointer seen here is alive.
        self.lock = threading.Lock()
        self._targets: Dict[int, Any] = {}  # id(token) -> sbx pointer (int or c_void_p), main thread
        self._old_fd = -1
        self._forward_fd = -1
        self._pending = False
        self._r = self._w = -1
        self._thread: Optional[threading.Thread] = None
        self._pid = 0

    def _start(self) -> None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._r, self._w, self._pid = r, w, os.getpid()
        t = threading.Thread(target=self._run, name="libsandbox-sigint", daemon=True)
        t.start()
        self._thread = t

    def enter(self, token: list, ptr: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if self._thread is None or self._pid != os.getpid():
            with self.lock:
                if self._thread is None or self._pid != os.getpid():
                    self._start()
        if not self._targets:
            try:
                old = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
            except ValueError:  # not the main interpreter
                return
            if old != self._w:
                self._old_fd = old
                self._forward_fd = old
        self._targets[id(token)] = ptr  # last: the call is covered from here on

    def exit(self, token: list) -> None:
        if self._targets.pop(id(token), None) is None:
            return
        if not self._targets:
            old, self._old_fd = self._old_fd, -1
            self._pending = False
            try:
                signal.set_wakeup_fd(old)
            except (ValueError, OSError):
                pass

    def _run(self) -> None:
        while True:
            try:
                select.select([self._r], [], [], 0.02 if self._pending else None)
                try:
                    data = os.read(self._r, 256)
                except BlockingIOError:
                    data = b""
            except OSError:
                return
            if data:
                fwd = self._forward_fd
                if fwd >= 0:
                    try:
                        os.write(fwd, data)
                    except OSError:
                        pass
                if signal.SIGINT in data and self._targets:
                    self._pending = True
            if self._pending:
                if not self._targets:
                    self._pending = False
                    continue
                with self.lock:
                    for t in list(self._targets.values()):
                        ptr = t.value if isinstance(t, ctypes.c_void_p) else t
                        if ptr:
                            N.lib().sbx_interrupt(ptr)


bridge = _SigintBridge()


class Guard:
    """Counts the C calls in flight on one sandbox so that kill() destroys it only when no
    thread is inside the library with its pointer (sub-handles included)."""

    def __init__(self, ptr: int, destroy: Callable[[], None]):
        self.ptr = ptr
        self._destroy_cb = destroy
        self._cv = threading.Condition()
        self._active = 0
        self._local = threading.local()
        self.closing = False
        self.destroyed = False
        self._deferred = False  # close() ran inside a call of its own thread: exit() destroys
        self._done = threading.Event()  # set once the sandbox has been destroyed

    def enter(self) -> None:
        with self._cv:
            if self.closing:
                raise SandboxNotRunningException("the sandbox has been killed")
            self._active += 1
        self._local.depth = getattr(self._local, "depth", 0) + 1

    def exit(self) -> None:
        self._local.depth -= 1
        with self._cv:
            self._active -= 1
            run = self._deferred and not self.destroyed and self._active == 0
            if run:
                self.destroyed = True
            self._cv.notify_all()
        if run:
            self._run_destroy()

    def _run_destroy(self) -> None:
        try:
            self._destroy_cb()
        finally:
            self._done.set()

    def call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        blocking: bool = True,
        ok: Tuple[int, ...] = (),
    ) -> Any:
        """Calls fn(*args) (a C function, or a small function making C calls on this sandbox)
        inside the guard. A negative int result other than those in `ok` raises the matching
        exception, with the message fetched on this thread while the sandbox surely lives.
        A blocking call is interruptible with Ctrl-C from the main thread."""
        self.enter()
        try:
            if blocking:
                token = [None]
                try:
                    bridge.enter(token, self.ptr)
                    rc = fn(*args)
                    _flush_signals()
                finally:
                    bridge.exit(token)
            else:
                rc = fn(*args)
            if type(rc) is int and rc < 0 and rc not in ok:
                raise self.error(rc)
            return rc
        finally:
            self.exit()

    def error(self, rc: int) -> SandboxException:
        """The exception for a failed call made by this thread (call inside the guard)."""
        msg = N.dec(N.lib().sbx_errmsg(self.ptr))
        if rc == N.SBX_EINTR and self.closing:
            return SandboxNotRunningException("the sandbox was killed during the call: " + msg, rc)
        return from_code(rc, msg)

    def close(self) -> None:
        """Marks the sandbox closing, interrupts calls in flight and destroys it once they
        returned (at once when none runs; when this thread itself is inside a call, from a
        callback, destruction happens when that call returns)."""
        own = getattr(self._local, "depth", 0)
        with self._cv:
            first = not self.closing
            self.closing = True
        if not first:
            if own == 0:
                self._done.wait()  # another thread is destroying it
            return
        with self._cv:
            while self._active > own:
                N.lib().sbx_interrupt(self.ptr)
                self._cv.wait(0.05)
            if self._active > 0:
                self._deferred = True  # our own call is on the stack: exit() destroys
                return
            self.destroyed = True
        self._run_destroy()
