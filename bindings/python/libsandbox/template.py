# SPDX-License-Identifier: Apache-2.0
"""Templates: build one from a Dockerfile subset, list and remove them (docs/templates.md)."""
from __future__ import annotations

import codecs
import ctypes
import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from . import _native as N
from .exceptions import InvalidArgumentException, from_code

_ERRLEN = 4096  # a failed RUN step's message carries its last output lines


def _when(ns: int) -> Optional[_dt.datetime]:
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc) if ns else None


def _path(p: Any) -> Optional[bytes]:
    return None if p is None else N.enc(os.fspath(p))


@dataclass
class TemplateInfo:
    """A template of the store (:meth:`Template.list`, :meth:`Template.build`)."""

    name: str
    is_snapshot: bool  #: saved by :meth:`Sandbox.snapshot` rather than built from a file
    parent: str  #: FROM (or the root image of a snapshot)
    cpu_count: int
    memory_mb: int
    disk_mb: int  #: 0: the image's size
    steps: int  #: instructions of the definition
    cached_steps: int  #: of them, taken from the layer cache in the last build
    created_at: Optional[_dt.datetime]
    memory_bytes: int  #: allocated on this machine by the template's snapshot
    disk_bytes: int
    build_time: float  #: seconds (Template.build() only)
    tags: List[str] = field(default_factory=list)
    error: str = ""  #: Template.list(): why this entry cannot be used, else ""

    @classmethod
    def _from_c(cls, i: "N.sbx_template_info") -> "TemplateInfo":
        tags = N.dec(i.tags)
        return cls(
            name=N.dec(i.name),
            is_snapshot=bool(i.is_snapshot),
            parent=N.dec(i.parent),
            cpu_count=i.vcpus,
            memory_mb=i.memory_mib,
            disk_mb=i.disk_mib,
            steps=i.nsteps,
            cached_steps=i.ncached,
            created_at=_when(i.created_ns),
            memory_bytes=i.memory_bytes,
            disk_bytes=i.disk_bytes,
            build_time=i.build_ms / 1000.0,
            tags=[t for t in tags.split(",") if t],
            error=N.dec(i.error),
        )


@dataclass
class TemplateBuildProgress:
    """What ``on_progress`` of :meth:`Template.build` receives."""

    step: int  #: 1-based index of the current instruction; 0 before the first
    steps: int  #: instructions after FROM (the final boot and snapshot come after)
    text: str  #: the instruction, or a phase: "boot", "start", "ready", "snapshot"
    cached: bool  #: the step's result came from the layer cache
    done: bool  #: False when the step starts, True when it ended
    elapsed: float  #: seconds since the build started


def _strs(v: Union[None, Dict[str, Any], Sequence[str]], what: str) -> Optional[List[str]]:
    if v is None:
        return None
    if isinstance(v, dict):
        return N.kv_list(v, what)
    if isinstance(v, (str, bytes)):
        raise InvalidArgumentException(f"{what} must be a list of strings", N.SBX_EINVAL)
    return [str(x) for x in v]


def _uint(v: Optional[Union[int, float]], what: str, scale: int = 1) -> int:
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise InvalidArgumentException(f"{what} must be a non-negative number: {v!r}", N.SBX_EINVAL)
    return int(round(v * scale))


class Template:
    """Templates of a local store: a template is a snapshot of a booted, ready guest that
    :meth:`Sandbox.create` (``template=NAME``) maps in milliseconds instead of booting.

    The store is ``template_dir``, else ``$SBX_TEMPLATE_DIR``, else
    ``~/.local/share/libsandbox/templates``.
    """

    @staticmethod
    def build(
        name: str,
        dockerfile: Optional[Union[str, "os.PathLike[str]"]] = None,
        dockerfile_text: Optional[str] = None,
        context: Optional[Union[str, "os.PathLike[str]"]] = None,
        build_args: Union[None, Dict[str, Any], Sequence[str]] = None,
        tags: Optional[Sequence[str]] = None,
        cpu: Optional[int] = None,
        memory_mb: Optional[int] = None,
        disk_mb: Optional[int] = None,
        start_cmd: Optional[str] = None,
        ready: Optional[str] = None,
        no_cache: bool = False,
        template_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
        on_output: Optional[Callable[[str, str], Any]] = None,
        on_progress: Optional[Callable[[TemplateBuildProgress], Any]] = None,
        host_loopback: bool = False,
        *,
        ready_timeout: Optional[float] = None,
        step_timeout: Optional[float] = None,
        kernel: Optional[Union[str, "os.PathLike[str]"]] = None,
        image_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    ) -> TemplateInfo:
        """Builds a template and returns its description. Blocks until done.

        Every ``RUN`` executes in a builder sandbox started from the previous steps' disk
        layers, which are cached (an unchanged prefix is not run again); then a sandbox of
        the template's size boots, runs ``start_cmd``, waits for ``ready`` and is
        snapshotted with its processes running.

        Args:
            name: the template's name (``[a-z0-9][a-z0-9._-]*``, at most 63 characters); a
                finished build replaces an older one of that name.
            dockerfile: path of the definition, a Dockerfile subset (FROM, RUN, COPY, ADD,
                ENV, WORKDIR, USER, ARG, LABEL, CMD); or
            dockerfile_text: the definition itself (exactly one of the two). FROM names
                ``base`` (or another image), a template of the store, or an ext4 image path.
            context: directory COPY and ADD read from (default: the Dockerfile's directory,
                or the current directory with ``dockerfile_text``).
            build_args: values of ARG: ``{"NAME": "value"}`` or ``["NAME=value"]``.
            tags: labels of this build.
            cpu, memory_mb, disk_mb: the template's vCPUs (default 1), memory (default 512)
                and root disk size (default: the image's; the filesystem grows to it).
            start_cmd: started after the last step and left running in the snapshot.
            ready: when to snapshot: ``"cmd:COMMAND"`` (exits 0), ``"port:N"`` (listens),
                ``"file:PATH"`` (exists), ``"delay:MS"``; default: at once.
            no_cache: run every step even if its layer is cached.
            template_dir: the template store.
            on_output: ``on_output(stream, text)`` with stream "stdout" or "stderr": live
                output of RUN steps and of the start command.
            on_progress: ``on_progress(TemplateBuildProgress)`` when a step starts and ends.
            host_loopback: RUN steps reach this machine's 127.0.0.1 at 10.0.2.2.
            ready_timeout: seconds the ready check may take (default 120).
            step_timeout: seconds each RUN step may take (default 1800).
            kernel, image_dir: as in :meth:`Sandbox.create`.

        The callbacks run on the calling thread while the build runs. If one raises, the
        build stops at the next output (on_output) and the exception is raised from
        ``build()``; Ctrl-C while output flows stops it the same way.

        Raises:
            InvalidArgumentException: a bad name, option or instruction.
            TemplateException: the base image or kernel is missing or malformed.
            SandboxException: a RUN step failed (the message names it, with its exit code
                and last output lines), or the ready check timed out (TimeoutException).
        """
        if not name or not isinstance(name, str):
            raise InvalidArgumentException("name must be a non-empty string", N.SBX_EINVAL)
        if (dockerfile is None) == (dockerfile_text is None):
            raise InvalidArgumentException(
                "give exactly one of dockerfile (a path) or dockerfile_text", N.SBX_EINVAL
            )
        o = N.sbx_template_build_options()
        o.version = N.SBX_TEMPLATE_OPTIONS_VERSION
        keep: List[Any] = []
        o.name = N.enc(name)
        o.dockerfile = _path(dockerfile)
        o.dockerfile_text = N.enc(dockerfile_text)
        o.context = _path(context)
        args_arr = N.strv(_strs(build_args, "build_args"))
        tags_arr = N.strv(_strs(tags, "tags"))
        keep += [args_arr, tags_arr]
        if args_arr:
            o.build_args = args_arr.ptr
        if tags_arr:
            o.tags = tags_arr.ptr
        o.vcpus = _uint(cpu, "cpu")
        o.memory_mib = _uint(memory_mb, "memory_mb")
        o.disk_mib = _uint(disk_mb, "disk_mb")
        o.start_cmd = N.enc(start_cmd)
        o.ready = N.enc(ready)
        o.ready_timeout_ms = min(_uint(ready_timeout, "ready_timeout", 1000), 0xFFFFFFFF)
        o.step_timeout_ms = min(_uint(step_timeout, "step_timeout", 1000), 0xFFFFFFFF)
        o.no_cache = int(bool(no_cache))
        o.template_dir = _path(template_dir)
        o.kernel = _path(kernel)
        o.image_dir = _path(image_dir)
        o.host_loopback = int(bool(host_loopback))

        raised: List[BaseException] = []
        decoders = {
            N.SBX_STDOUT: codecs.getincrementaldecoder("utf-8")("replace"),
            N.SBX_STDERR: codecs.getincrementaldecoder("utf-8")("replace"),
        }

        def out_cb(_ctx: Any, stream: int, data: Any, n: int) -> int:
            if raised:
                return 1
            try:
                dec = decoders.get(stream)
                if dec is not None and on_output is not None:
                    text = dec.decode(ctypes.string_at(data, n))
                    if text:
                        on_output("stdout" if stream == N.SBX_STDOUT else "stderr", text)
                return 0
            except BaseException as e:  # KeyboardInterrupt included: stop the build
                raised.append(e)
                return 1

        def progress_cb(_ctx: Any, p: Any) -> None:
            if raised or on_progress is None:
                return
            try:
                q = p.contents
                on_progress(
                    TemplateBuildProgress(
                        step=q.step,
                        steps=q.nsteps,
                        text=N.dec(q.text),
                        cached=bool(q.cached),
                        done=bool(q.done),
                        elapsed=q.elapsed_ms / 1000.0,
                    )
                )
            except BaseException as e:
                raised.append(e)

        # The C function pointers must outlive the call: keep the ctypes objects referenced.
        # on_output is always installed: returning non-zero there is how a build stops.
        out_fn = N.sbx_output_fn(out_cb)
        prog_fn = (
            N.sbx_template_progress_fn(progress_cb)
            if on_progress is not None
            else N.sbx_template_progress_fn()
        )
        o.on_output = out_fn
        o.on_progress = prog_fn
        info = N.sbx_template_info()
        err = ctypes.create_string_buffer(_ERRLEN)
        rc = N.lib().sbx_template_build(ctypes.byref(o), ctypes.byref(info), err, _ERRLEN)
        del keep
        if raised:
            raise raised[0]
        if rc < 0:
            raise from_code(rc, N.dec(err.value))
        return TemplateInfo._from_c(info)

    @staticmethod
    def list(template_dir: Optional[Union[str, "os.PathLike[str]"]] = None) -> List[TemplateInfo]:
        """The templates of the store, sorted by name (a missing store lists as empty).
        Entries that cannot be used say why in ``error``."""
        L = N.lib()
        arr = ctypes.POINTER(N.sbx_template_info)()
        n = ctypes.c_size_t()
        err = ctypes.create_string_buffer(_ERRLEN)
        rc = L.sbx_template_list(_path(template_dir), ctypes.byref(arr), ctypes.byref(n), err, _ERRLEN)
        if rc < 0:
            raise from_code(rc, N.dec(err.value))
        try:
            return [TemplateInfo._from_c(arr[i]) for i in range(n.value)]
        finally:
            L.sbx_template_list_free(arr, n.value)

    @staticmethod
    def remove(name: str, template_dir: Optional[Union[str, "os.PathLike[str]"]] = None) -> None:
        """Removes a template and the cached layers nothing else uses. Sandboxes made from
        it keep working.

        Raises:
            NotFoundException: no such template.
        """
        if not name or not isinstance(name, str):
            raise InvalidArgumentException("name must be a non-empty string", N.SBX_EINVAL)
        err = ctypes.create_string_buffer(_ERRLEN)
        rc = N.lib().sbx_template_remove(_path(template_dir), N.enc(name), err, _ERRLEN)
        if rc < 0:
            raise from_code(rc, N.dec(err.value))
