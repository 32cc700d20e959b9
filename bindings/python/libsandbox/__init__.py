# SPDX-License-Identifier: Apache-2.0
"""libsandbox: hardware-isolated Linux sandboxes (KVM microVMs) in your process, with an API
shaped like E2B's Python SDK.

    from libsandbox import Sandbox

    with Sandbox.create(timeout=600) as sbx:
        print(sbx.commands.run("echo hello from $(uname -r)").stdout)
        sbx.files.write("/tmp/x.txt", "data")
"""
from ._native import candidate_paths, library_path
from .commands import CommandHandle, CommandResult, Commands, ProcessInfo
from .exceptions import (
    AlreadyExistsException,
    CommandExitException,
    CommandTimeoutException,
    DirectoryNotEmptyException,
    FilesystemException,
    GuestException,
    HostException,
    HostIOException,
    InterruptedException,
    InvalidArgumentException,
    IsADirectoryException,
    KvmException,
    KvmUnavailableException,
    LibraryNotFoundException,
    NotADirectoryException,
    NotEnoughSpaceException,
    NotFoundException,
    NotSupportedException,
    OutOfMemoryException,
    PermissionDeniedException,
    ProtocolException,
    ResourceLimitException,
    SandboxDeadException,
    SandboxException,
    SandboxNotRunningException,
    TemplateException,
    TimeoutException,
    WouldBlockException,
    exception_class,
)
from .files import (
    EntryInfo,
    FileReader,
    Files,
    FileType,
    FilesystemEvent,
    FilesystemEventType,
    FileWriter,
    WatchHandle,
    WriteEntry,
    WriteInfo,
)
from .aio import AsyncCommandHandle, AsyncSandbox, AsyncWatchHandle
from .pty import Pty, PtyHandle, PtySize
from .sandbox import (
    Disk,
    Sandbox,
    SandboxInfo,
    SandboxListing,
    SandboxMetrics,
    strerror,
    version,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncCommandHandle",
    "AsyncSandbox",
    "AsyncWatchHandle",
    "CommandHandle",
    "CommandResult",
    "Commands",
    "ProcessInfo",
    "Pty",
    "PtyHandle",
    "PtySize",
    "AlreadyExistsException",
    "CommandExitException",
    "CommandTimeoutException",
    "DirectoryNotEmptyException",
    "Disk",
    "EntryInfo",
    "FileReader",
    "FileType",
    "FileWriter",
    "Files",
    "FilesystemEvent",
    "FilesystemEventType",
    "FilesystemException",
    "GuestException",
    "HostException",
    "HostIOException",
    "InterruptedException",
    "InvalidArgumentException",
    "IsADirectoryException",
    "KvmException",
    "KvmUnavailableException",
    "LibraryNotFoundException",
    "NotADirectoryException",
    "NotEnoughSpaceException",
    "NotFoundException",
    "NotSupportedException",
    "OutOfMemoryException",
    "PermissionDeniedException",
    "ProtocolException",
    "ResourceLimitException",
    "Sandbox",
    "SandboxDeadException",
    "SandboxException",
    "SandboxInfo",
    "SandboxListing",
    "SandboxMetrics",
    "SandboxNotRunningException",
    "TemplateException",
    "TimeoutException",
    "WatchHandle",
    "WouldBlockException",
    "WriteEntry",
    "WriteInfo",
    "candidate_paths",
    "exception_class",
    "library_path",
    "strerror",
    "version",
]
