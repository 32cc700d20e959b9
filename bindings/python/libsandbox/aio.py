# SPDX-License-Identifier: Apache-2.0
"""AsyncSandbox: the asyncio flavour. Output and watch events are read on the event loop from
the library's pollable fds (loop.add_reader + non-blocking reads); calls that block in the
library (boot, file transfers, stdin writes, run_code) run in worker threads."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import _native as N
from .code import Context, ContextLike, Execution, _context_id
from .commands import (
    _UNSET,
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_OUTPUT_LIMIT,
    CommandHandle,
    CommandResult,
    Data,
    ProcessInfo,
    _bytes,
    _ExecOptions,
)
from .exceptions import CommandExitException, SandboxException
from .files import EntryInfo, FilesystemEvent, WatchHandle
from .pty import PtySize, SizeLike, _size
from .sandbox import NetworkStats, Sandbox, SandboxInfo, SandboxMetrics
from .template import Template, TemplateInfo


async def _thread(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kw))


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Optional[Callable[[Any], Any]]) -> Any:
    """fn (a function or a coroutine function) made callable from a worker thread: it runs on
    the loop while the thread waits, and its exception is raised in the thread."""
    if fn is None:
        return None

    async def run(arg: Any) -> None:
        r = fn(arg)
        if inspect.isawaitable(r):
            await r

    return lambda arg: asyncio.run_coroutine_threadsafe(run(arg), loop).result()


async def _readable(fd: int) -> None:
    """Waits until fd polls readable (level-triggered: returns at once if it already does)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


class AsyncCommandHandle:
    """A running command or terminal, read on the event loop. ``async for stdout, stderr in
    handle`` (terminals: ``async for data in handle``); ``await handle.wait()``."""

    def __init__(self, handle: CommandHandle, pty: bool = False) -> None:
        self._h = handle
        self._pty = pty
        self.pid: int = handle.pid

    async def read(self) -> Optional[Tuple[str, bytes]]:
        """The next chunk ``("stdout"|"stderr", bytes)``, or None at the end."""
        while True:
            r = self._h._read_raw(0)
            if r is not None:
                stream, data = r
                if stream == 0:
                    return None
                return ("stdout" if stream == N.SBX_STDOUT else "stderr", data)
            await _readable(self._h.fd)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Any]:
        h = self._h
        while True:
            r = await self.read()
            if r is None:
                for s, t in h._flush_texts():
                    if not self._pty:
                        yield (t, None) if s == N.SBX_STDOUT else (None, t)
                return
            name, data = r
            if self._pty:
                yield data
                continue
            stream = N.SBX_STDOUT if name == "stdout" else N.SBX_STDERR
            t = h._texts(stream, data)
            if t:
                yield (t, None) if stream == N.SBX_STDOUT else (None, t)

    async def wait(
        self,
        on_stdout: Optional[Callable[[str], Any]] = None,
        on_stderr: Optional[Callable[[str], Any]] = None,
        on_pty: Optional[Callable[[bytes], Any]] = None,
    ) -> CommandResult:
        """Waits for the exit (callbacks run on the event loop); raises CommandExitException
        on a non-zero status. Use asyncio.wait_for() for a deadline."""
        if self._h._result is None:
            while True:
                r = await self.read()
                if r is None:
                    break
                name, data = r
                if on_pty is not None:
                    on_pty(data)
                    continue
                stream = N.SBX_STDOUT if name == "stdout" else N.SBX_STDERR
                cb = on_stdout if stream == N.SBX_STDOUT else on_stderr
                if cb is not None:
                    t = self._h._texts(stream, data)
                    if t:
                        cb(t)
        # All output read: the synchronous wait only collects the exit status.
        return self._h.wait(timeout=None)

    async def kill(self) -> bool:
        """Kills the process group (SIGKILL); False if it had exited."""
        return await _thread(self._h.kill)

    async def send_stdin(self, data: Data) -> None:
        b = _bytes(data)
        await _thread(self._h.send_stdin, b)

    async def close_stdin(self) -> None:
        await _thread(self._h.close_stdin)

    async def resize(self, size: SizeLike) -> None:
        """Resizes a terminal."""
        await _thread(self._h._resize, *_size(size))

    def disconnect(self) -> None:
        """Releases the handle; the process goes on."""
        self._h.disconnect()


class AsyncCommands:
    """``sandbox.commands`` of an :class:`AsyncSandbox`."""

    def __init__(self, sb: Sandbox) -> None:
        self._sb = sb

    async def run(
        self,
        cmd: Union[str, Sequence[str]],
        background: bool = False,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[Callable[[str], Any]] = None,
        on_stderr: Optional[Callable[[str], Any]] = None,
        stdin: Union[None, bool, Data] = None,
        timeout: Optional[float] = _UNSET,
        *,
        tag: Optional[str] = None,
    ) -> Any:
        """Like :meth:`Commands.run`, awaited: output is read on the event loop. Cancelling
        the task of a foreground run kills the command."""
        if timeout is _UNSET:
            timeout = None if background else DEFAULT_COMMAND_TIMEOUT
        keep = stdin is True and background
        data = None if stdin is None or isinstance(stdin, bool) else _bytes(stdin)
        opts = _ExecOptions(cmd, envs, cwd, user, data, keep, timeout, tag)
        h = AsyncCommandHandle(
            await _thread(self._sb.commands._start, opts, timeout, DEFAULT_OUTPUT_LIMIT)
        )
        if background:
            return h
        try:
            return await h.wait(on_stdout, on_stderr)
        except CommandExitException:
            raise
        except BaseException:  # cancelled, or a callback raised
            self._sb.commands.kill(h.pid)
            h.disconnect()
            raise

    async def list(self) -> List[ProcessInfo]:
        return await _thread(self._sb.commands.list)

    async def kill(self, pid: int) -> bool:
        return await _thread(self._sb.commands.kill, pid)

    async def connect(self, pid: int) -> AsyncCommandHandle:
        return AsyncCommandHandle(await _thread(self._sb.commands.connect, pid))

    async def send_stdin(self, pid: int, data: Data) -> None:
        await _thread(self._sb.commands.send_stdin, pid, data)


class AsyncWatchHandle:
    """Events of a watched directory, read on the event loop: ``async for event in w``."""

    def __init__(self, w: WatchHandle) -> None:
        self._w = w

    async def next(self) -> FilesystemEvent:
        while True:
            e = self._w.next(0)
            if e is not None:
                return e
            await _readable(self._w.fd)

    def __aiter__(self) -> AsyncIterator[FilesystemEvent]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[FilesystemEvent]:
        while not self._w.closed:
            yield await self.next()

    def get_new_events(self) -> List[FilesystemEvent]:
        return self._w.get_new_events()

    def stop(self) -> None:
        self._w.stop()


class AsyncFiles:
    """``sandbox.files`` of an :class:`AsyncSandbox` (transfers run in worker threads)."""

    def __init__(self, sb: Sandbox) -> None:
        self._sb = sb

    async def read(self, path: str, format: str = "text", **kw: Any) -> Any:
        if format == "stream":
            raise ValueError("format='stream' is not available in AsyncFiles: use 'bytes'")
        return await _thread(self._sb.files.read, path, format, **kw)

    async def write(self, path_or_files: Any, data: Any = None, **kw: Any) -> Any:
        return await _thread(self._sb.files.write, path_or_files, data, **kw)

    async def list(self, path: str, depth: int = 1) -> List[EntryInfo]:
        return await _thread(self._sb.files.list, path, depth)

    async def exists(self, path: str) -> bool:
        return await _thread(self._sb.files.exists, path)

    async def get_info(self, path: str) -> EntryInfo:
        return await _thread(self._sb.files.get_info, path)

    async def remove(self, path: str, recursive: bool = True) -> None:
        await _thread(self._sb.files.remove, path, recursive)

    async def rename(self, old_path: str, new_path: str) -> EntryInfo:
        return await _thread(self._sb.files.rename, old_path, new_path)

    async def make_dir(self, path: str, mode: Optional[int] = None) -> bool:
        return await _thread(self._sb.files.make_dir, path, mode)

    async def copy_in(self, host_path: Any, sandbox_path: str) -> None:
        await _thread(self._sb.files.copy_in, host_path, sandbox_path)

    async def copy_out(self, sandbox_path: str, host_path: Any) -> None:
        await _thread(self._sb.files.copy_out, sandbox_path, host_path)

    async def watch_dir(self, path: str, recursive: bool = False) -> AsyncWatchHandle:
        return AsyncWatchHandle(await _thread(self._sb.files.watch_dir, path, recursive))


class AsyncPty:
    """``sandbox.pty`` of an :class:`AsyncSandbox`."""

    def __init__(self, sb: Sandbox) -> None:
        self._sb = sb

    async def create(self, size: SizeLike = PtySize(24, 80), **kw: Any) -> AsyncCommandHandle:
        return AsyncCommandHandle(await _thread(self._sb.pty.create, size, **kw), pty=True)


class AsyncSandbox:
    """The asyncio flavour of :class:`Sandbox` (same arguments, awaitable methods)::

        async with await AsyncSandbox.create() as sbx:
            r = await sbx.commands.run("echo hi")
    """

    def __init__(self, sb: Sandbox) -> None:
        self._sb = sb
        self.commands = AsyncCommands(sb)
        self.files = AsyncFiles(sb)
        self.pty = AsyncPty(sb)

    @classmethod
    async def create(cls, template: Optional[str] = None, **kw: Any) -> "AsyncSandbox":
        """Creates a sandbox in a worker thread; see :meth:`Sandbox.create`."""
        return cls(await _thread(Sandbox.create, template, **kw))

    @classmethod
    async def resume(cls, path: Any, **kw: Any) -> "AsyncSandbox":
        """Brings back a paused sandbox in a worker thread; see :meth:`Sandbox.resume`."""
        return cls(await _thread(Sandbox.resume, path, **kw))

    async def snapshot(self, name_or_path: Any) -> str:
        """See :meth:`Sandbox.snapshot`."""
        return await _thread(self._sb.snapshot, name_or_path)

    async def pause(self, path: Any) -> str:
        """See :meth:`Sandbox.pause`."""
        return await _thread(self._sb.pause, path)

    async def fork(self, n: int = 1, **kw: Any) -> List["AsyncSandbox"]:
        """See :meth:`Sandbox.fork`."""
        return [AsyncSandbox(sb) for sb in await _thread(self._sb.fork, n, **kw)]

    @property
    def state(self) -> str:
        return self._sb.state

    @property
    def sandbox_id(self) -> str:
        return self._sb.sandbox_id

    @property
    def sync(self) -> Sandbox:
        """The underlying synchronous :class:`Sandbox`."""
        return self._sb

    async def kill(self) -> None:
        await _thread(self._sb.kill)

    async def set_timeout(self, timeout: Optional[float]) -> None:
        self._sb.set_timeout(timeout)

    async def get_info(self) -> SandboxInfo:
        return self._sb.get_info()

    async def is_running(self) -> bool:
        return await _thread(self._sb.is_running)

    async def get_metrics(self) -> SandboxMetrics:
        return await _thread(self._sb.get_metrics)

    async def update_network(self, **kw: Any) -> None:
        """See :meth:`Sandbox.update_network` (never blocks on the guest)."""
        self._sb.update_network(**kw)

    async def network_stats(self) -> NetworkStats:
        return self._sb.network_stats()

    async def get_host(self, port: int) -> str:
        return self._sb.get_host(port)

    async def run_code(
        self,
        code: str,
        language: Optional[str] = None,
        context: Optional[ContextLike] = None,
        on_stdout: Optional[Callable[[Any], Any]] = None,
        on_stderr: Optional[Callable[[Any], Any]] = None,
        on_result: Optional[Callable[[Any], Any]] = None,
        on_error: Optional[Callable[[Any], Any]] = None,
        envs: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Execution:
        """See :meth:`Sandbox.run_code`. The call runs in a worker thread; the callbacks
        (functions or coroutine functions) run on the event loop, in order, and one that
        raises interrupts the code. Cancelling the task interrupts the code."""
        loop = asyncio.get_running_loop()
        cbs = [_on_loop(loop, cb) for cb in (on_stdout, on_stderr, on_result, on_error)]
        try:
            return await _thread(self._sb.run_code, code, language, context, *cbs, envs, timeout)
        except asyncio.CancelledError:
            with contextlib.suppress(SandboxException):
                self._sb.interrupt_code(_context_id(context) or language or "python")
            raise

    async def create_code_context(
        self, cwd: Optional[str] = None, language: Optional[str] = None
    ) -> Context:
        return await _thread(self._sb.create_code_context, cwd, language)

    async def list_code_contexts(self) -> List[Context]:
        return await _thread(self._sb.list_code_contexts)

    async def restart_code_context(self, context: ContextLike) -> None:
        await _thread(self._sb.restart_code_context, context)

    async def remove_code_context(self, context: ContextLike) -> None:
        await _thread(self._sb.remove_code_context, context)

    async def interrupt_code(self, context: ContextLike) -> None:
        await _thread(self._sb.interrupt_code, context)

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.kill()


class AsyncTemplate:
    """:class:`Template` for asyncio: the calls run in worker threads (``on_output`` and
    ``on_progress`` of :meth:`build` are called on that thread)."""

    @staticmethod
    async def build(name: str, **kw: Any) -> TemplateInfo:
        return await _thread(Template.build, name, **kw)

    @staticmethod
    async def list(template_dir: Any = None) -> List[TemplateInfo]:
        return await _thread(Template.list, template_dir)

    @staticmethod
    async def remove(name: str, template_dir: Any = None) -> None:
        await _thread(Template.remove, name, template_dir)
