# SPDX-License-Identifier: Apache-2.0
"""sandbox.pty: interactive terminals in the guest (E2B-style API)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

from . import _native as N
from .commands import CommandHandle, CommandResult, Data, _ExecOptions, DEFAULT_OUTPUT_LIMIT
from .exceptions import InvalidArgumentException

if TYPE_CHECKING:
    from .sandbox import Sandbox


@dataclass
class PtySize:
    """A terminal size in character cells."""

    rows: int
    cols: int


SizeLike = Union[PtySize, Tuple[int, int]]


def _size(size: SizeLike) -> Tuple[int, int]:
    if isinstance(size, PtySize):
        return size.rows, size.cols
    try:
        rows, cols = size
        return int(rows), int(cols)
    except (TypeError, ValueError):
        raise InvalidArgumentException(
            f"size must be PtySize(rows, cols) or (rows, cols): {size!r}", N.SBX_EINVAL
        ) from None


class PtyHandle(CommandHandle):
    """A process on a pseudo-terminal. Iterating yields the terminal's output as bytes;
    :meth:`send_stdin` types keys (there is no EOF on a terminal: send ``b"\\x04"``)."""

    def __iter__(self) -> Iterator[bytes]:  # type: ignore[override]
        while True:
            r = self.read()
            if r is None:
                return
            yield r[1]

    def wait(  # type: ignore[override]
        self,
        timeout: Optional[float] = None,
        on_pty: Optional[Callable[[bytes], object]] = None,
    ) -> CommandResult:
        """Waits for the terminal's process to exit; ``on_pty`` receives output (bytes) not
        read yet. The result's stdout is the terminal output. Raises CommandExitException on
        a non-zero exit status."""
        if on_pty is None:
            return super().wait(timeout)
        return super().wait(timeout, on_stdout=None, on_stderr=None, _raw=on_pty)

    def resize(self, size: SizeLike) -> None:
        """Resizes the terminal (the process gets SIGWINCH)."""
        self._resize(*_size(size))


class Pty:
    """``sandbox.pty``: create and control terminals."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def create(
        self,
        size: SizeLike = PtySize(24, 80),
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        *,
        cmd: Union[None, str, Sequence[str]] = None,
        tag: Optional[str] = None,
    ) -> PtyHandle:
        """Opens a terminal of ``size`` (rows, cols) with TERM=xterm-256color running the
        user's login shell (or ``cmd``).

        Args:
            size: PtySize(rows, cols) or a (rows, cols) tuple; 1..1000 each.
            cwd, envs, user: as for commands.run.
            timeout: seconds after which the terminal's process is killed; None: never.
            cmd: a command (shell line or argv) instead of the login shell.
            tag: free text shown by commands.list().
        """
        rows, cols = _size(size)
        opts = _ExecOptions(cmd, envs, cwd, user, None, True, timeout, tag)
        return self._sandbox.commands._start(opts, timeout, DEFAULT_OUTPUT_LIMIT, pty=(rows, cols))

    def connect(self, pid: int, timeout: Optional[float] = None) -> PtyHandle:
        """Attaches to a terminal opened earlier (its output not handed out yet first)."""
        return self._sandbox.commands._attach(pid, timeout, PtyHandle)

    def _with(self, pid: int, fn: Callable[[CommandHandle], None]) -> None:
        h, temp = self._sandbox.commands._handle_for(pid)
        try:
            fn(h)
        finally:
            if temp:
                h.disconnect()

    def send_stdin(self, pid: int, data: Data) -> None:
        """Types into a terminal by pid."""
        self._with(pid, lambda h: h.send_stdin(data))

    def resize(self, pid: int, size: SizeLike) -> None:
        """Resizes a terminal by pid."""
        self._with(pid, lambda h: h._resize(*_size(size)))

    def kill(self, pid: int) -> bool:
        """Kills a terminal's process group by pid; False if it had exited."""
        return self._sandbox.commands.kill(pid)
