# SPDX-License-Identifier: Apache-2.0
"""The code interpreter through the binding (Sandbox.run_code, contexts, AsyncSandbox) in
sandboxes made from the code-interpreter template, built from the repository's
guest/interpreter/Dockerfile into the test store ($SBX_CODE_STORE, shared with
tests/integration/test_code.c: later builds are cache hits)."""
import asyncio
import base64
import os
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

from libsandbox import (
    CODE_INTERPRETER_TEMPLATE,
    InvalidArgumentException,
    NotFoundException,
    OutputMessage,
    Sandbox,
    Template,
)
from libsandbox.aio import AsyncSandbox

REPO = Path(__file__).resolve().parents[3]


def _image_dir() -> Path:
    d, x = os.environ.get("SBX_CACHE_DIR"), os.environ.get("XDG_CACHE_HOME")
    if d:
        return Path(d)
    return Path(x) / "libsandbox" if x else Path.home() / ".cache" / "libsandbox"


@pytest.fixture
def sb():
    """A sandbox of the code-interpreter template (built first if it is not up to date)."""
    image = _image_dir() / "code.ext4"
    if not image.exists():
        pytest.skip(f"{image} is missing (make images builds it)")
    store = os.environ.get("SBX_CODE_STORE") or str(REPO / "build" / "code-store")
    t0 = time.monotonic()
    Template.build(
        CODE_INTERPRETER_TEMPLATE,
        dockerfile=REPO / "guest" / "interpreter" / "Dockerfile",
        template_dir=store,
        kernel=os.environ.get("SBX_KERNEL"),
        ready_timeout=600,  # the emulated host is slow to import numpy and pandas
    )
    print(f"template ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    s = Sandbox.create(template=CODE_INTERPRETER_TEMPLATE, template_dir=store, boot_timeout=120)
    try:
        yield s
    finally:
        s.kill()


def test_state_and_main_result(sb):
    """State persists between calls; the last expression is the main result; output is
    logged line by line; envs apply to one execution."""
    e = sb.run_code("x = 40\nprint('set')\nprint('twice')")
    assert e.results == [] and e.error is None and e.text is None
    assert e.logs.stdout == ["set\n", "twice\n"] and e.logs.stderr == []
    e = sb.run_code("x + 2")
    assert e.text == "42"
    assert len(e.results) == 1 and e.results[0].is_main_result
    assert e.results[0].formats() == ["text"]
    assert (e.execution_count, e.context, e.exit_code) == (2, "python", None)
    assert not (e.interrupted or e.timed_out or e.restarted)

    e = sb.run_code(
        "import os, sys\nprint('h\u00e9llo \u2603', os.environ.get('ONLY_NOW'))\n"
        "sys.stderr.write('warn\\n')",
        envs={"ONLY_NOW": "yes"},
    )
    assert e.logs.stdout == ["h\u00e9llo \u2603 yes\n"] and e.logs.stderr == ["warn\n"]
    assert sb.run_code("repr(os.environ.get('ONLY_NOW'))").text == "'None'"
    assert '"text/plain": "42"' in sb.run_code("x + 2").to_json()
    with pytest.raises(InvalidArgumentException):
        sb.run_code(b"1")


def test_dataframe_html(sb):
    """A pandas DataFrame comes back as text and HTML."""
    e = sb.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    assert len(e.results) == 1
    r = e.results[0]
    assert r.is_main_result and "a  b" in r.text and "<table" in r.html
    assert r.formats()[:2] == ["text", "html"] and r.png is None


def test_matplotlib_png(sb):
    """A figure comes back as a base64 PNG of matplotlib's default size."""
    e = sb.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nNone")
    assert len(e.results) == 1 and e.text is None
    r = e.results[0]
    assert not r.is_main_result and "png" in r.formats()
    png = base64.b64decode(r.png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (640, 480)


def test_error_with_traceback(sb):
    """An exception is the execution's error (and on_error's argument), not a failure."""
    errors = []
    e = sb.run_code("def f():\n    return 1 / 0\nf()", on_error=errors.append)
    assert e.error is not None and errors == [e.error]
    assert (e.error.name, e.error.value) == ("ZeroDivisionError", "division by zero")
    assert "in f" in e.error.traceback and e.text is None
    assert sb.run_code("f.__name__").text == "'f'"  # the context lives on
    with pytest.raises(NotFoundException):
        sb.run_code("1", context="nosuchcontext")
    with pytest.raises(InvalidArgumentException):
        sb.run_code("1", language="cobol")


def test_timeout_and_interrupt_keep_the_context(sb):
    """A timeout and interrupt_code() stop the code with KeyboardInterrupt; the state stays."""
    sb.run_code("kept = 'yes'")
    t0 = time.monotonic()
    e = sb.run_code("while True:\n    pass", timeout=2)
    assert e.timed_out and not e.restarted and e.error.name == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 60
    assert sb.run_code("kept").text == "'yes'"

    def started(_m):
        threading.Thread(target=sb.interrupt_code, args=("python",)).start()

    e = sb.run_code("import time\nprint('started', flush=True)\ntime.sleep(60)", on_stdout=started)
    assert e.interrupted and not e.timed_out and e.error.name == "KeyboardInterrupt"
    assert sb.run_code("kept").text == "'yes'"


def test_javascript_and_bash(sb):
    """The javascript and bash default contexts keep their state too."""
    e = sb.run_code("const a = 20; console.log('js', a); a * 2 + 2", language="javascript")
    assert e.logs.stdout == ["js 20\n"] and e.text == "42" and e.context == "javascript"
    assert sb.run_code("await Promise.resolve(a + 1)", language="javascript").text == "21"
    e = sb.run_code("function g() { throw new TypeError('bad'); }\ng()", language="javascript")
    assert (e.error.name, e.error.value) == ("TypeError", "bad") and "at g" in e.error.traceback

    e = sb.run_code("cd /tmp && export V=7 && echo out && echo err >&2", language="bash")
    assert e.logs.stdout == ["out\n"] and e.logs.stderr == ["err\n"] and e.exit_code == 0
    e = sb.run_code("echo $V $(pwd); (exit 3)", language="bash")
    assert e.logs.stdout == ["7 /tmp\n"] and e.exit_code == 3 and e.results == []


def test_contexts(sb):
    """Contexts: separate state and working directories; list, restart, remove."""
    a = sb.create_code_context()
    b = sb.create_code_context(cwd="/tmp", language="python")
    assert a.id != b.id and (a.language, a.cwd) == ("python", "/home/user") and b.cwd == "/tmp"
    sb.run_code("z = 'a'", context=a)
    assert sb.run_code("import os\n'z' in dir(), os.getcwd()", context=b.id).text == (
        "(False, '/tmp')"
    )
    js = sb.create_code_context(language="javascript")
    assert js.language == "javascript"
    assert {a.id, b.id, js.id} <= {c.id for c in sb.list_code_contexts()}
    with pytest.raises(InvalidArgumentException):
        sb.run_code("1", language="python", context=js)

    sb.restart_code_context(a)
    e = sb.run_code("'z' in dir()", context=a)
    assert e.text == "False" and e.execution_count == 1
    sb.remove_code_context(a.id)
    assert a.id not in {c.id for c in sb.list_code_contexts()}
    with pytest.raises(NotFoundException):
        sb.run_code("1", context=a)
    with pytest.raises(NotFoundException):
        sb.restart_code_context(a)
    with pytest.raises(InvalidArgumentException):
        sb.remove_code_context(None)


def test_streaming_callbacks_in_order(sb):
    """Output and results reach the callbacks in order, while the code still runs."""
    events = []
    code = (
        "import sys, time\n"
        "print('one', flush=True)\n"
        "time.sleep(1)\n"
        "display('shown')\n"
        "time.sleep(1)\n"
        "print('two', file=sys.stderr, flush=True)\n"
        "time.sleep(1)\n"
        "'last'"
    )
    e = sb.run_code(
        code,
        on_stdout=lambda m: events.append(("stdout", m, time.monotonic())),
        on_stderr=lambda m: events.append(("stderr", m, time.monotonic())),
        on_result=lambda r: events.append(("result", r, time.monotonic())),
    )
    end = time.monotonic()
    seen = []  # consecutive pieces of one stream joined: the service may send a line in parts
    for kind, v, _ in events:
        if kind == "result":
            seen.append((kind, (v.text, v.is_main_result)))
        elif seen and seen[-1][0] == kind:
            seen[-1] = (kind, seen[-1][1] + v)
        else:
            seen.append((kind, str(v)))
    assert seen == [
        ("stdout", "one\n"),
        ("result", ("'shown'", False)),
        ("stderr", "two\n"),
        ("result", ("'last'", True)),
    ]
    assert end - events[0][2] > 2  # the first output came as it happened
    out = events[0][1]
    err = next(v for kind, v, _ in events if kind == "stderr")
    assert isinstance(out, OutputMessage) and out.line == str(out) and not out.error
    assert err.error and out.timestamp <= err.timestamp
    assert [r.text for r in e.results] == ["'shown'", "'last'"] and e.text == "'last'"


def test_callback_exception_propagates(sb):
    """An exception raised in a callback interrupts the code and is raised by run_code."""

    class Stop(Exception):
        pass

    def boom(_arg):
        raise Stop()

    t0 = time.monotonic()
    with pytest.raises(Stop):
        sb.run_code(
            "import time\nprint('first', flush=True)\ntime.sleep(60)\nfinished = True",
            on_stdout=boom,
        )
    with pytest.raises(Stop):
        sb.run_code("import time\ndisplay(1)\ntime.sleep(60)\nfinished = True", on_result=boom)
    assert time.monotonic() - t0 < 60
    assert sb.run_code("'finished' in dir()").text == "False"


def test_async_run_code(sb):
    """AsyncSandbox: callbacks (also coroutines) run on the loop; a raising callback and a
    cancelled task interrupt the code."""

    async def main():
        asb = AsyncSandbox(sb)
        seen = []

        async def on_out(m):
            await asyncio.sleep(0)
            seen.append(str(m))

        e = await asb.run_code(
            "print('async', flush=True)\n6 * 7",
            on_stdout=on_out,
            on_result=lambda r: seen.append(r.text),
        )
        assert e.text == "42" and "".join(seen[:-1]) == "async\n" and seen[-1] == "42"
        ctx = await asb.create_code_context(language="bash")
        assert (await asb.run_code("echo $((1 + 2))", context=ctx)).logs.stdout == ["3\n"]
        assert ctx.id in {c.id for c in await asb.list_code_contexts()}
        await asb.restart_code_context(ctx)
        await asb.remove_code_context(ctx)

        def boom(_m):
            raise KeyError("stop")

        with pytest.raises(KeyError):
            await asb.run_code("print(1, flush=True)\nimport time\ntime.sleep(60)", on_stdout=boom)

        started = asyncio.Event()
        task = asyncio.ensure_future(
            asb.run_code(
                "print('go', flush=True)\nimport time\ntime.sleep(60)\nlate = 1",
                on_stdout=lambda _m: started.set(),
            )
        )
        await asyncio.wait_for(started.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await asb.run_code("'late' in dir()")).text == "False"
        await asb.interrupt_code("python")  # nothing runs: not an error

    t0 = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - t0 < 100
