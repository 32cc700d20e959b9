# SPDX-License-Identifier: Apache-2.0
"""The code interpreter: ``sandbox.run_code()`` and code contexts, shaped like E2B's Code
Interpreter SDK (docs/code-interpreter.md). Sandboxes made from the ``code-interpreter``
template (guest/interpreter/Dockerfile) serve it."""
from __future__ import annotations

import ctypes
import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

from . import _native as N
from .commands import _timeout_ms
from .exceptions import InvalidArgumentException, SandboxException

#: The template whose sandboxes serve :meth:`Sandbox.run_code`.
CODE_INTERPRETER_TEMPLATE = "code-interpreter"

#: Result formats by E2B's names and their MIME types, in the order ``formats()`` lists them.
_FORMATS = (
    ("text", "text/plain"),
    ("html", "text/html"),
    ("markdown", "text/markdown"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpeg", "image/jpeg"),
    ("pdf", "application/pdf"),
    ("latex", "text/latex"),
    ("json", "application/json"),
    ("javascript", "application/javascript"),
)
_KNOWN_MIMES = {mime for _, mime in _FORMATS}


def _format(mime: str) -> Any:
    return property(lambda self: self.data.get(mime), doc=f"The {mime} data, or None.")


@dataclass
class Result:
    """One result of an execution: a value in one or more formats.

    The value of the cell's last expression is the main result (``is_main_result``);
    ``display()`` calls and matplotlib figures give others. ``data`` maps each MIME type to
    its data as the interpreter sent it: text as is, ``image/png``, ``image/jpeg`` and
    ``application/pdf`` in base64 (as E2B), ``application/json`` as JSON text. The
    attributes ``text``, ``html``, ``markdown``, ``svg``, ``png``, ``jpeg``, ``pdf``,
    ``latex``, ``javascript`` are those entries (None when absent); ``json`` is the JSON
    value, parsed.
    """

    is_main_result: bool
    data: Dict[str, str]

    text = _format("text/plain")
    html = _format("text/html")
    markdown = _format("text/markdown")
    svg = _format("image/svg+xml")
    png = _format("image/png")
    jpeg = _format("image/jpeg")
    pdf = _format("application/pdf")
    latex = _format("text/latex")
    javascript = _format("application/javascript")

    @property
    def json(self) -> Any:
        """The application/json value, parsed; None when absent."""
        raw = self.data.get("application/json")
        return None if raw is None else json.loads(raw)

    def formats(self) -> List[str]:
        """The formats present, by E2B's names ("text", "html", "png", ...); MIME types this
        list does not name come last, as they are."""
        known = [name for name, mime in _FORMATS if mime in self.data]
        return known + [m for m in self.data if m not in _KNOWN_MIMES]


class OutputMessage(str):
    """A piece of output as ``on_stdout``/``on_stderr`` receive it: the text itself (a
    ``str``), with the attributes of E2B's OutputMessage: ``line`` (the text), ``timestamp``
    (nanoseconds since the epoch, when it arrived) and ``error`` (True for stderr)."""

    timestamp: int
    error: bool

    def __new__(cls, line: str, timestamp: int, error: bool) -> "OutputMessage":
        m = super().__new__(cls, line)
        m.timestamp = timestamp
        m.error = error
        return m

    @property
    def line(self) -> str:
        return str(self)


@dataclass
class Logs:
    """The output of an execution, line by line (each line keeps its newline)."""

    stdout: List[str] = field(default_factory=list)
    stderr: List[str] = field(default_factory=list)


@dataclass
class ExecutionError:
    """What the code raised: Python's exception (name ``"ZeroDivisionError"``, value
    ``"division by zero"``, the formatted traceback) or JavaScript's thrown error (name,
    message, stack)."""

    name: str
    value: str
    traceback: str


@dataclass
class Execution:
    """The outcome of :meth:`Sandbox.run_code`."""

    results: List[Result] = field(default_factory=list)
    logs: Logs = field(default_factory=Logs)
    error: Optional[ExecutionError] = None  #: None when the code raised nothing
    execution_count: int = 0  #: of this execution in its context: 1, 2, ...
    interrupted: bool = False  #: stopped by :meth:`Sandbox.interrupt_code`
    timed_out: bool = False  #: stopped because ``timeout`` ran out
    #: the code did not stop when asked (or killed its interpreter): the context was
    #: restarted and its state is lost
    restarted: bool = False
    exit_code: Optional[int] = None  #: bash: the status of the cell's last command; else None
    context: str = ""  #: the id of the context it ran in

    @property
    def text(self) -> Optional[str]:
        """The text of the main result, or None when there is none."""
        for r in self.results:
            if r.is_main_result:
                return r.text
        return None

    def to_json(self) -> str:
        """The execution as a JSON object (results with their ``data`` by MIME type)."""
        return json.dumps(asdict(self))


@dataclass
class Context:
    """A code context: one interpreter process with its own state and working directory.
    Each language has a default context whose id is the language's name."""

    id: str
    language: str  #: "python", "javascript" or "bash"
    cwd: str


ContextLike = Union[Context, str]


def _context_id(context: Optional[ContextLike], required: bool = False) -> Optional[str]:
    if isinstance(context, Context):
        return context.id
    if isinstance(context, str) or (context is None and not required):
        return context
    raise InvalidArgumentException(
        f"context must be a Context or a context id, not {context!r}", N.SBX_EINVAL
    )


def _text(b: Optional[bytes]) -> str:
    return "" if b is None else b.decode("utf-8", "replace")


def _lines(p: Optional[int], n: int) -> List[str]:
    text = ctypes.string_at(p, n).decode("utf-8", "replace") if p and n else ""
    return re.findall(r"[^\n]*\n|[^\n]+", text)


def _result(r: "N.sbx_code_result") -> Result:
    get = N.lib().sbx_code_result_get
    mimes = [r.mime[i] for i in range(r.nformats)]
    return Result(
        is_main_result=bool(r.is_main_result),
        data={_text(m): _text(get(ctypes.byref(r), m)) for m in mimes},
    )


def _execution(ex: "N.sbx_execution") -> Execution:
    error = None
    if ex.error:
        e = ex.error.contents
        error = ExecutionError(_text(e.name), _text(e.value), _text(e.traceback))
    return Execution(
        results=[_result(ex.results[i]) for i in range(ex.nresults)],
        logs=Logs(_lines(ex.out, ex.out_len), _lines(ex.err, ex.err_len)),
        error=error,
        execution_count=ex.execution_count,
        interrupted=bool(ex.interrupted),
        timed_out=bool(ex.timed_out),
        restarted=bool(ex.restarted),
        exit_code=None if ex.exit_code < 0 else ex.exit_code,
        context=N.dec(ex.context),
    )


def _context(c: "N.sbx_code_context") -> Context:
    return Context(N.dec(c.id), N.dec(c.language), N.dec(c.cwd))


def _guarded(fn: Callable[..., Any], raised: List[BaseException]) -> Callable[..., int]:
    """A C callback running fn: an exception cannot cross the C frames, so it is kept in
    `raised` and the callback returns non-zero, which interrupts the code and ends the call."""

    def call(*args: Any) -> int:
        if raised:
            return 1
        try:
            fn(*args)
            return 0
        except BaseException as e:  # KeyboardInterrupt included
            raised.append(e)
            return 1

    return call


class CodeInterpreter:
    """The code interpreter methods of :class:`Sandbox` (E2B's Code Interpreter SDK)."""

    _ptr: int
    _call: Callable[..., Any]

    def run_code(
        self,
        code: str,
        language: Optional[str] = None,
        context: Optional[ContextLike] = None,
        on_stdout: Optional[Callable[[OutputMessage], Any]] = None,
        on_stderr: Optional[Callable[[OutputMessage], Any]] = None,
        on_result: Optional[Callable[[Result], Any]] = None,
        on_error: Optional[Callable[[ExecutionError], Any]] = None,
        envs: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Execution:
        """Runs code in a context, like a notebook cell: state persists between calls, the
        value of the last expression is the main result, an exception is ``error``.

        Args:
            code: the code.
            language: "python" (default), "javascript" or "bash": runs in that language's
                default context.
            context: a :class:`Context` (or its id) to run in instead; with ``language``
                too, the context must be of that language.
            on_stdout, on_stderr: called with each piece of output as it comes
                (:class:`OutputMessage`, a str).
            on_result: called with each :class:`Result` as it comes.
            on_error: called with the :class:`ExecutionError` when the code raised.
            envs: environment variables for this execution only.
            timeout: seconds after which the code is interrupted (the execution says
                ``timed_out``; the context keeps its state, unless the code does not stop
                within 2 s: then the context is restarted). None: 300 s; 0: no limit.

        The callbacks run on the calling thread. If one raises, the code is interrupted and
        the exception propagates; Ctrl-C interrupts the code too.

        Raises:
            NotSupportedException: the sandbox has no interpreter service (make it from the
                ``code-interpreter`` template).
            NotFoundException: no such context.
            InvalidArgumentException: an unknown language, or a context of another one.
        """
        if not isinstance(code, str):
            raise InvalidArgumentException("code must be a string", N.SBX_EINVAL)
        o = N.sbx_run_code_options()
        o.version = N.SBX_RUN_CODE_OPTIONS_VERSION
        o.code = N.enc(code)
        o.context = N.enc(_context_id(context))
        o.language = N.enc(language)
        env = N.strv(N.kv_list(envs, "envs"))
        if env:
            o.envs = env.ptr
        o.timeout_ms = 0 if timeout is None else _timeout_ms(timeout)

        raised: List[BaseException] = []

        def output(_ctx: Any, stream: int, data: Any, n: int) -> None:
            cb = on_stdout if stream == N.SBX_STDOUT else on_stderr
            if cb is not None:
                text = ctypes.string_at(data, n).decode("utf-8", "replace")
                cb(OutputMessage(text, time.time_ns(), stream == N.SBX_STDERR))

        def result(_ctx: Any, r: Any) -> None:
            on_result(_result(r.contents))  # type: ignore[misc]

        # The C function pointers must outlive the call: keep the ctypes objects referenced.
        out_fn = N.sbx_output_fn(_guarded(output, raised)) if on_stdout or on_stderr else None
        res_fn = N.sbx_code_result_fn(_guarded(result, raised)) if on_result else None
        if out_fn:
            o.on_output = out_fn
        if res_fn:
            o.on_result = res_fn
        ex = N.sbx_execution()
        L = N.lib()
        try:
            try:
                self._call(lambda: L.sbx_run_code(self._ptr, ctypes.byref(o), ctypes.byref(ex)))
            except SandboxException:
                if raised:
                    raise raised[0] from None
                raise
            execution = _execution(ex)
        finally:
            L.sbx_execution_free(ctypes.byref(ex))
        if execution.error is not None and on_error is not None:
            on_error(execution.error)
        return execution

    def create_code_context(
        self, cwd: Optional[str] = None, language: Optional[str] = None
    ) -> Context:
        """Creates a context: a new interpreter of ``language`` (default python) working in
        ``cwd`` (default /home/user). At most 64 contexts exist at once
        (ResourceLimitException)."""
        c = N.sbx_code_context()
        self._call(
            lambda: N.lib().sbx_code_context_create(
                self._ptr, N.enc(language), N.enc(cwd), ctypes.byref(c)
            )
        )
        return _context(c)

    def list_code_contexts(self) -> List[Context]:
        """The contexts, default ones included."""
        L = N.lib()
        arr = ctypes.POINTER(N.sbx_code_context)()
        n = ctypes.c_size_t()
        self._call(lambda: L.sbx_code_context_list(self._ptr, ctypes.byref(arr), ctypes.byref(n)))
        try:
            return [_context(arr[i]) for i in range(n.value)]
        finally:
            N.libc_free(ctypes.cast(arr, ctypes.c_void_p).value)  # type: ignore[arg-type]

    def restart_code_context(self, context: ContextLike) -> None:
        """Starts the context's interpreter afresh: its state and execution count are reset;
        an execution running in it ends with ``restarted``."""
        cid = N.enc(_context_id(context, True))
        self._call(lambda: N.lib().sbx_code_context_restart(self._ptr, cid))

    def remove_code_context(self, context: ContextLike) -> None:
        """Removes a context (a default one is only cleared: it starts afresh when next
        used)."""
        cid = N.enc(_context_id(context, True))
        self._call(lambda: N.lib().sbx_code_context_remove(self._ptr, cid))

    def interrupt_code(self, context: ContextLike) -> None:
        """Interrupts what runs in a context (KeyboardInterrupt in Python, SIGINT in bash);
        the context keeps its state. Nothing running is not an error."""
        cid = N.enc(_context_id(context, True))
        self._call(lambda: N.lib().sbx_code_interrupt(self._ptr, cid))
