# SPDX-License-Identifier: Apache-2.0
"""Exceptions of the libsandbox binding: one class per family of SBX_E* codes (E2B-style names)."""
from __future__ import annotations

from typing import Dict, Optional, Type

from . import _native as N


class SandboxException(Exception):
    """Base class of every error the binding raises.

    Attributes:
        code: the negative ``SBX_E*`` code of the C call that failed, or ``None`` when the
            error did not come from the C library (for example a non-zero exit status).
        code_name: the code's name (``"SBX_ENOENT"``), or ``None``.
        message: the library's message (``sbx_errmsg``), with context such as the path.
    """

    def __init__(self, message: str = "", code: Optional[int] = None):
        self.code = code
        self.code_name = N.ERROR_NAMES.get(code) if code is not None else None
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        if self.code_name:
            return f"{self.message} ({self.code_name})" if self.message else self.code_name
        return self.message


class LibraryNotFoundException(SandboxException, ImportError):
    """libsandbox.so could not be found or loaded (see ``SBX_LIBRARY``)."""


class InvalidArgumentException(SandboxException, ValueError):
    """A bad argument or option (SBX_EINVAL)."""


class TimeoutException(SandboxException):
    """An operation did not finish within its timeout (SBX_ETIMEDOUT)."""


class NotFoundException(SandboxException):
    """No such file, directory, user or process in the guest (SBX_ENOENT)."""


class PermissionDeniedException(SandboxException):
    """Permission denied in the guest (SBX_EACCES)."""


class FilesystemException(SandboxException):
    """A guest filesystem error other than not-found / permission / space."""


class NotADirectoryException(FilesystemException):
    """A path component is not a directory (SBX_ENOTDIR)."""


class IsADirectoryException(FilesystemException):
    """The path is a directory (SBX_EISDIR)."""


class AlreadyExistsException(FilesystemException):
    """The path already exists (SBX_EEXIST)."""


class DirectoryNotEmptyException(FilesystemException):
    """The directory is not empty (SBX_ENOTEMPTY)."""


class NotEnoughSpaceException(SandboxException):
    """No space left on the guest's disk, or the guest is out of memory (SBX_ENOSPC)."""


class OutOfMemoryException(SandboxException):
    """Out of host memory, or a file too large to read whole (SBX_ENOMEM)."""


class ResourceLimitException(SandboxException):
    """A limit was reached: processes, connections, watches, buffered output (SBX_EBUSY)."""


class InterruptedException(SandboxException):
    """A blocking call was interrupted (SBX_EINTR) by ``sandbox.interrupt()`` or a callback
    that asked to stop. Ctrl-C raises ``KeyboardInterrupt`` instead."""


class WouldBlockException(SandboxException):
    """Nothing available yet for a non-blocking call (SBX_EAGAIN)."""


class SandboxNotRunningException(SandboxException):
    """The sandbox is not running: shut down or killed (SBX_ESTATE)."""


class SandboxDeadException(SandboxNotRunningException):
    """The guest died or the sandbox's lifetime ran out (SBX_EDEAD): nothing more can be done
    with it."""


class GuestException(SandboxException):
    """The guest stopped, crashed or violated the device contract (SBX_EGUEST)."""


class ProtocolException(GuestException):
    """The guest agent sent something malformed (SBX_EPROTO)."""


class HostException(SandboxException):
    """A problem on the host side (KVM, I/O)."""


class KvmUnavailableException(HostException):
    """No usable /dev/kvm (SBX_ENOKVM): missing, inaccessible or unable to boot a standard
    guest (for example a PVM /dev/kvm)."""


class KvmException(HostException):
    """A KVM ioctl failed (SBX_EKVM)."""


class HostIOException(HostException):
    """A host I/O error (SBX_EIO)."""


class NotSupportedException(SandboxException):
    """Not supported by this host or guest (SBX_ENOTSUP)."""


class TemplateException(SandboxException):
    """The template's kernel or root filesystem is missing, unreadable or malformed
    (SBX_EIMAGE)."""


class CommandExitException(SandboxException):
    """A command exited with a non-zero status (or was killed).

    Attributes:
        exit_code: the exit status (-1 when a signal killed the process).
        stdout, stderr: the output the command wrote (decoded as UTF-8).
        error: a short description ("exit status 2", "killed by signal 9", ...).
        result: the full :class:`~libsandbox.CommandResult`.
    """

    def __init__(self, result) -> None:  # result: CommandResult
        self.result = result
        self.exit_code: int = result.exit_code
        self.stdout: str = result.stdout
        self.stderr: str = result.stderr
        self.error: Optional[str] = result.error
        super().__init__(f"command failed: {result.error}")


class CommandTimeoutException(TimeoutException, CommandExitException):
    """A command was killed because its ``timeout`` ran out; carries the output it wrote
    (caught by both ``except TimeoutException`` and ``except CommandExitException``)."""

    def __init__(self, result) -> None:
        CommandExitException.__init__(self, result)


_BY_CODE: Dict[int, Type[SandboxException]] = {
    N.SBX_EINVAL: InvalidArgumentException,
    N.SBX_ENOMEM: OutOfMemoryException,
    N.SBX_ENOKVM: KvmUnavailableException,
    N.SBX_EKVM: KvmException,
    N.SBX_EIMAGE: TemplateException,
    N.SBX_ETIMEDOUT: TimeoutException,
    N.SBX_EGUEST: GuestException,
    N.SBX_EPROTO: ProtocolException,
    N.SBX_EINTR: InterruptedException,
    N.SBX_ESTATE: SandboxNotRunningException,
    N.SBX_EIO: HostIOException,
    N.SBX_ENOTSUP: NotSupportedException,
    N.SBX_ENOENT: NotFoundException,
    N.SBX_EACCES: PermissionDeniedException,
    N.SBX_ENOTDIR: NotADirectoryException,
    N.SBX_EISDIR: IsADirectoryException,
    N.SBX_ENOSPC: NotEnoughSpaceException,
    N.SBX_EEXIST: AlreadyExistsException,
    N.SBX_ENOTEMPTY: DirectoryNotEmptyException,
    N.SBX_EBUSY: ResourceLimitException,
    N.SBX_EDEAD: SandboxDeadException,
    N.SBX_EAGAIN: WouldBlockException,
}


def exception_class(code: int) -> Type[SandboxException]:
    """The exception class for an SBX_E* code (SandboxException for unknown codes)."""
    return _BY_CODE.get(code, SandboxException)


def from_code(code: int, message: str = "") -> SandboxException:
    """An exception instance for a failed call's code and message."""
    if not message:
        try:
            message = N.dec(N.lib().sbx_strerror(code))
        except Exception:
            message = f"error {code}"
    return exception_class(code)(message, code=code)
