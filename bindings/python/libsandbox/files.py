# SPDX-License-Identifier: Apache-2.0
"""sandbox.files: the guest filesystem (read, write, stream, list, watch, copy trees)."""
from __future__ import annotations

import ctypes
import datetime as _dt
import enum
import os
import stat as _stat
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Union,
    overload,
)

from . import _native as N
from ._handle import SubHandle
from .commands import _bytes
from .exceptions import InvalidArgumentException, SandboxException

if TYPE_CHECKING:
    from typing import Literal

    from .sandbox import Sandbox

_CHUNK = 1 << 20  # streaming block size


class FileType(str, enum.Enum):
    """Type of a filesystem entry (not following symlinks)."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"


_TYPES = {
    N.SBX_TYPE_FILE: FileType.FILE,
    N.SBX_TYPE_DIR: FileType.DIR,
    N.SBX_TYPE_SYMLINK: FileType.SYMLINK,
    N.SBX_TYPE_OTHER: FileType.OTHER,
}


@dataclass
class EntryInfo:
    """A file, directory or symlink in the guest (E2B's EntryInfo)."""

    name: str
    type: FileType
    path: str  #: absolute
    size: int
    mode: int  #: permission bits (0o7777)
    permissions: str  #: like ls: "rwxr-xr-x"
    owner: str
    group: str
    modified_time: _dt.datetime
    symlink_target: Optional[str] = None
    uid: int = 0
    gid: int = 0


@dataclass
class WriteInfo:
    """What :meth:`Files.write` wrote."""

    name: str
    path: str
    type: FileType = FileType.FILE


@dataclass
class WriteEntry:
    """One file for :meth:`Files.write` with a list (dicts ``{"path", "data"}`` work too)."""

    path: str
    data: Any


class FilesystemEventType(str, enum.Enum):
    """What happened to a watched entry."""

    CREATE = "create"
    WRITE = "write"
    REMOVE = "remove"
    RENAME = "rename"  #: renamed away; a CREATE follows for the new name
    CHMOD = "chmod"
    OVERFLOW = "overflow"  #: the guest dropped events


_EVENTS = {
    N.SBX_WATCH_CREATE: FilesystemEventType.CREATE,
    N.SBX_WATCH_WRITE: FilesystemEventType.WRITE,
    N.SBX_WATCH_REMOVE: FilesystemEventType.REMOVE,
    N.SBX_WATCH_RENAME: FilesystemEventType.RENAME,
    N.SBX_WATCH_CHMOD: FilesystemEventType.CHMOD,
    N.SBX_WATCH_OVERFLOW: FilesystemEventType.OVERFLOW,
}


@dataclass
class FilesystemEvent:
    """A change in a watched directory; ``name`` is relative to it."""

    name: str
    type: FilesystemEventType


def _entry(e: N.sbx_entry) -> EntryInfo:
    return EntryInfo(
        name=N.dec(e.name),
        type=_TYPES.get(e.type, FileType.OTHER),
        path=N.dec(e.path),
        size=e.size,
        mode=e.mode,
        permissions=_stat.filemode(e.mode)[1:],
        owner=N.dec(e.owner),
        group=N.dec(e.group),
        modified_time=_dt.datetime.fromtimestamp(e.mtime_ns / 1e9, tz=_dt.timezone.utc),
        symlink_target=N.dec(e.symlink_target) if e.symlink_target else None,
        uid=e.uid,
        gid=e.gid,
    )


class FileReader(SubHandle):
    """A guest file streamed in bounded memory: iterate for chunks of bytes, or read(n).
    Use as a context manager (or call close())."""

    _close_fn = "sbx_file_close"

    def __init__(self, sandbox: "Sandbox", ptr: int, size: int, chunk_size: int) -> None:
        super().__init__(sandbox, ptr)
        self.size: int = size  #: the file's size when opened
        self._chunk = chunk_size
        self._buf = ctypes.create_string_buffer(chunk_size)
        self._pending = b""
        self._eof = False

    def _next(self) -> bytes:
        if self._eof:
            return b""
        L = N.lib()
        with self._lock:
            n = self._sandbox._call(
                lambda: L.sbx_file_read(self._p(), self._buf, self._chunk)
            )
        if n == 0:
            self._eof = True
            self.close()
            return b""
        return ctypes.string_at(self._buf, n)

    def read(self, n: int = -1) -> bytes:
        """Reads up to n bytes (all that is left when n < 0); b"" at the end."""
        if n is None or n < 0:
            parts = [self._pending]
            self._pending = b""
            while True:
                c = self._next()
                if not c:
                    return b"".join(parts)
                parts.append(c)
        while len(self._pending) < n and not self._eof:
            c = self._next()
            if not c:
                break
            self._pending += c
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def __iter__(self) -> Iterator[bytes]:
        if self._pending:
            p, self._pending = self._pending, b""
            yield p
        while True:
            c = self._next()
            if not c:
                return
            yield c

    def close(self) -> None:
        """Releases the handle (also done at the end of the file)."""
        self._close()

    def __enter__(self) -> "FileReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FileWriter(SubHandle):
    """A guest file written in bounded memory; the data becomes visible at :meth:`commit`
    (atomically unless appending). Used as a context manager it commits on success and
    abandons the write (target untouched) on an exception."""

    _close_fn = "sbx_file_close"

    def write(self, data: Union[str, bytes, bytearray, memoryview]) -> int:
        """Sends data; returns its length in bytes."""
        b = _bytes(data)
        L = N.lib()
        with self._lock:
            for off in range(0, len(b), _CHUNK):
                part = b[off : off + _CHUNK]
                self._sandbox._call(lambda: L.sbx_file_write(self._p(), part, len(part)))
        return len(b)

    def commit(self) -> None:
        """Finishes the write and releases the handle."""
        L = N.lib()
        with self._lock:

            def op() -> int:
                p = self._p()
                self._box[0] = None  # sbx_file_commit releases the handle, even on error
                return L.sbx_file_commit(p)

            try:
                self._sandbox._call(op)
            finally:
                self._close()

    def close(self) -> None:
        """Abandons an unfinished write (the target stays untouched)."""
        self._close()

    def __enter__(self) -> "FileWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None and not self.closed:
            self.commit()
        else:
            self.close()


class WatchHandle(SubHandle):
    """Events of a watched directory (:meth:`Files.watch_dir`). Iterate over it to wait for
    events, or poll with :meth:`get_new_events`; :meth:`stop` ends the watch."""

    _close_fn = "sbx_watch_close"

    def __init__(self, sandbox: "Sandbox", ptr: int) -> None:
        super().__init__(sandbox, ptr)
        self._ev = N.sbx_watch_event()

    def next(self, timeout: Optional[float] = None) -> Optional[FilesystemEvent]:
        """The next event, waiting at most ``timeout`` seconds (None: as long as it takes;
        0: do not wait). Returns None when none came in time."""
        L = N.lib()
        if timeout is None:
            ms = N.SBX_NO_TIMEOUT
        else:
            ms = max(0, min(int(timeout * 1000), N.SBX_NO_TIMEOUT - 1))
        with self._lock:
            rc = self._sandbox._call(
                lambda: L.sbx_watch_next(self._p(), ctypes.byref(self._ev), ms),
                ok=(N.SBX_ETIMEDOUT, N.SBX_EAGAIN),
            )
            if rc < 0:
                return None
            return FilesystemEvent(
                name=N.dec(self._ev.name), type=_EVENTS.get(self._ev.op, FilesystemEventType.OVERFLOW)
            )

    def get_new_events(self) -> List[FilesystemEvent]:
        """The events that arrived since the last call, without waiting."""
        out = []
        while True:
            e = self.next(0)
            if e is None:
                return out
            out.append(e)

    def __iter__(self) -> Iterator[FilesystemEvent]:
        while not self.closed:
            e = self.next(0.2)
            if e is not None:
                yield e

    @property
    def fd(self) -> int:
        """Polls readable when an event may be waiting (for event loops)."""
        return self._sandbox._call(lambda: N.lib().sbx_watch_fd(self._p()), blocking=False)

    def stop(self) -> None:
        """Ends the watch."""
        self._close()

    close = stop

    def __enter__(self) -> "WatchHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


ProgressCallback = Callable[[int, int], Any]


class Files:
    """``sandbox.files``: the guest filesystem. Relative paths are relative to the default
    user's home directory. Errors: NotFoundException, PermissionDeniedException,
    NotEnoughSpaceException, IsADirectoryException, ... (see libsandbox.exceptions)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    # --- whole files ----------------------------------------------------------------------

    @overload
    def read(self, path: str, format: "Literal['text']" = ..., **kw: Any) -> str: ...
    @overload
    def read(self, path: str, format: "Literal['bytes']", **kw: Any) -> bytes: ...
    @overload
    def read(self, path: str, format: "Literal['stream']", **kw: Any) -> FileReader: ...

    def read(
        self,
        path: str,
        format: str = "text",
        *,
        offset: int = 0,
        length: Optional[int] = None,
        max_size: Optional[int] = None,
        encoding: str = "utf-8",
    ) -> Any:
        """Reads a file.

        Args:
            format: "text" (str), "bytes" (bytes) or "stream" (a :class:`FileReader`:
                iterate for chunks of bytes, bounded memory).
            offset, length: read only this range (length None: to the end).
            max_size: fail with OutOfMemoryException beyond this many bytes (text and bytes;
                default 1 GiB).
            encoding: of the text format (invalid bytes are replaced).
        """
        if format not in ("text", "bytes", "stream"):
            raise InvalidArgumentException(
                f"format must be 'text', 'bytes' or 'stream', not {format!r}", N.SBX_EINVAL
            )
        if format == "stream" or offset or length is not None:
            r = self.open_read(path, offset=offset, length=length)
            if format == "stream":
                return r
            with r:
                data = r.read()
        else:
            L = N.lib()
            sb = self._sandbox
            p = ctypes.c_void_p()
            n = ctypes.c_size_t()
            try:
                sb._call(
                    lambda: L.sbx_read_file(
                        sb._ptr, N.enc(path), ctypes.byref(p), ctypes.byref(n), max_size or 0
                    )
                )
                data = ctypes.string_at(p, n.value) if n.value else b""
            finally:
                if p.value:
                    N.libc_free(p.value)
        return data.decode(encoding, "replace") if format == "text" else data

    def open_read(
        self, path: str, offset: int = 0, length: Optional[int] = None, chunk_size: int = 1 << 20
    ) -> FileReader:
        """Opens a guest file for streaming reads (``offset``, at most ``length`` bytes)."""
        L = N.lib()
        sb = self._sandbox
        out = ctypes.c_void_p()
        size = ctypes.c_uint64()
        sb._call(
            lambda: L.sbx_file_open(
                sb._ptr, N.enc(path), offset, length or 0, ctypes.byref(out), ctypes.byref(size)
            )
        )
        return FileReader(sb, out.value, size.value, chunk_size)

    def open_write(
        self,
        path: str,
        mode: Optional[int] = None,
        user: Optional[str] = None,
        append: bool = False,
    ) -> FileWriter:
        """Opens a guest file for a streaming write (see :class:`FileWriter`).

        Args:
            mode: permission bits of a new file (default 0o644).
            user: owner (default: the sandbox's default user).
            append: append instead of replacing.
        """
        L = N.lib()
        sb = self._sandbox
        o = N.sbx_file_options()
        o.version = N.SBX_FILE_OPTIONS_VERSION
        o.mode = mode or 0
        o.user = N.enc(user)
        o.append = int(append)
        out = ctypes.c_void_p()
        sb._call(lambda: L.sbx_file_create(sb._ptr, N.enc(path), ctypes.byref(o), ctypes.byref(out)))
        return FileWriter(sb, out.value)

    def write(
        self,
        path_or_files: Union[str, List[Union[WriteEntry, Dict[str, Any]]]],
        data: Any = None,
        *,
        mode: Optional[int] = None,
        user: Optional[str] = None,
    ) -> Any:
        """Writes a whole file, creating parent directories and replacing an existing file
        atomically; or, given a list of ``{"path": ..., "data": ...}``, several files.

        ``data`` is str, bytes, a binary file object (streamed) or an iterable of bytes
        chunks (streamed). Returns :class:`WriteInfo` (a list of them for a list).
        """
        if isinstance(path_or_files, list):
            out = []
            for f in path_or_files:
                p, d = (f["path"], f["data"]) if isinstance(f, dict) else (f.path, f.data)
                out.append(self.write(p, d, mode=mode, user=user))
            return out
        path = path_or_files
        if data is None:
            raise InvalidArgumentException("write: data is missing", N.SBX_EINVAL)
        if isinstance(data, (str, bytes, bytearray, memoryview)) and user is None:
            b = _bytes(data)
            sb = self._sandbox
            sb._call(
                lambda: N.lib().sbx_write_file(sb._ptr, N.enc(path), b, len(b), mode or 0)
            )
        else:
            with self.open_write(path, mode=mode, user=user) as w:
                if isinstance(data, (str, bytes, bytearray, memoryview)):
                    w.write(data)
                elif hasattr(data, "read"):
                    while True:
                        c = data.read(_CHUNK)
                        if not c:
                            break
                        w.write(c)
                else:
                    for c in data:
                        w.write(c)
        return WriteInfo(name=os.path.basename(path.rstrip("/")), path=path)

    # --- metadata and names ---------------------------------------------------------------

    def list(self, path: str, depth: int = 1) -> List[EntryInfo]:
        """Lists a directory ``depth`` levels deep (parents before their children)."""
        L = N.lib()
        sb = self._sandbox
        arr = ctypes.POINTER(N.sbx_entry)()
        n = ctypes.c_size_t()
        if depth < 0:
            raise InvalidArgumentException("depth must not be negative", N.SBX_EINVAL)
        sb._call(
            lambda: L.sbx_list(sb._ptr, N.enc(path), depth, ctypes.byref(arr), ctypes.byref(n))
        )
        try:
            return [_entry(arr[i]) for i in range(n.value)]
        finally:
            L.sbx_entries_free(arr, n.value)

    def get_info(self, path: str) -> EntryInfo:
        """Describes one path (a final symlink is not followed)."""
        L = N.lib()
        sb = self._sandbox
        e = N.sbx_entry()
        try:
            sb._call(lambda: L.sbx_stat(sb._ptr, N.enc(path), ctypes.byref(e)))
            return _entry(e)
        finally:
            L.sbx_entry_clear(ctypes.byref(e))

    def exists(self, path: str) -> bool:
        """True if the path exists."""
        sb = self._sandbox
        return sb._call(lambda: N.lib().sbx_exists(sb._ptr, N.enc(path))) == 1

    def make_dir(self, path: str, mode: Optional[int] = None) -> bool:
        """mkdir -p. True when created, False when the directory already existed
        (AlreadyExistsException if something else is there)."""
        sb = self._sandbox
        return sb._call(lambda: N.lib().sbx_mkdir(sb._ptr, N.enc(path), mode or 0)) == 0

    def remove(self, path: str, recursive: bool = True) -> None:
        """Removes a file, symlink or directory (with ``recursive``, a whole tree; without,
        only an empty directory)."""
        sb = self._sandbox
        sb._call(lambda: N.lib().sbx_remove(sb._ptr, N.enc(path), int(recursive)))

    def rename(self, old_path: str, new_path: str) -> EntryInfo:
        """Renames (moves) within the guest, replacing an existing target file; returns the
        new entry."""
        sb = self._sandbox
        sb._call(lambda: N.lib().sbx_rename(sb._ptr, N.enc(old_path), N.enc(new_path)))
        return self.get_info(new_path)

    # --- watching -------------------------------------------------------------------------

    def watch_dir(self, path: str, recursive: bool = False) -> WatchHandle:
        """Starts watching a directory (``recursive``: and every directory below it)."""
        sb = self._sandbox
        out = ctypes.c_void_p()
        sb._call(
            lambda: N.lib().sbx_watch_open(sb._ptr, N.enc(path), int(recursive), ctypes.byref(out))
        )
        return WatchHandle(sb, out.value)

    # --- trees between host and guest -----------------------------------------------------

    def _copy(
        self, fn: str, src: bytes, dst: bytes, on_progress: Optional[ProgressCallback]
    ) -> None:
        sb = self._sandbox
        failure: List[BaseException] = []

        def progress(ctx: Any, nbytes: int, files: int) -> int:
            # Runs inside the C call on this thread: an exception cannot cross the C frames,
            # so it cancels the copy and is raised again afterwards.
            try:
                if on_progress is not None and on_progress(nbytes, files) is False:
                    return 1
                return 0
            except BaseException as e:  # KeyboardInterrupt included
                failure.append(e)
                return 1

        cb = N.sbx_progress_fn(progress)
        try:
            sb._call(lambda: getattr(N.lib(), fn)(sb._ptr, src, dst, cb, None))
        except SandboxException:
            if failure:
                raise failure[0] from None
            raise
        if failure:
            raise failure[0]

    def copy_in(
        self, host_path: Union[str, os.PathLike], sandbox_path: str,
        on_progress: Optional[ProgressCallback] = None,
    ) -> None:
        """Copies a host file or directory tree into the guest (``sandbox_path`` is the new
        path; an existing directory is merged into). Regular files, directories and
        symlinks, with their modes. ``on_progress(bytes, files)`` is called after every file
        and MiB; returning False cancels (InterruptedException)."""
        self._copy("sbx_copy_in", os.fsencode(host_path), N.enc(sandbox_path), on_progress)  # type: ignore[arg-type]

    def copy_out(
        self, sandbox_path: str, host_path: Union[str, os.PathLike],
        on_progress: Optional[ProgressCallback] = None,
    ) -> None:
        """Copies a guest file or directory tree out to the host (set-user/group-ID bits
        dropped); see :meth:`copy_in`."""
        self._copy("sbx_copy_out", N.enc(sandbox_path), os.fsencode(host_path), on_progress)  # type: ignore[arg-type]

    #: Alias of :meth:`copy_in` (uploads a directory tree or a file).
    upload_dir = copy_in
    #: Alias of :meth:`copy_out` (downloads a directory tree or a file).
    download_dir = copy_out
