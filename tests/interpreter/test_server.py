# SPDX-License-Identifier: Apache-2.0
"""Tests of the code interpreter service (guest/interpreter, docs/code-interpreter.md).

The service runs natively on this host (it needs no guest): one server for the module, on a
free port, with its default contexts in a temporary directory. Run with
    /usr/bin/python3 -m pytest -q tests/interpreter/test_server.py
Tests that need numpy, pandas, matplotlib or Node.js are skipped (with the reason) when this
host lacks them.
"""

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER = os.path.join(ROOT, "guest", "interpreter", "server.py")
FINAL_TYPES = {"end", "context", "contexts", "ok", "failure"}
FAILURE_CODES = {"invalid", "not_found", "busy", "internal"}


def has_module(name):
    """Whether the interpreter the service runs with (this one) can import a module."""
    probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True)
    return probe.returncode == 0


def need(*modules):
    for name in modules:
        if not has_module(name):
            pytest.skip(f"python module {name} is not installed on this host")


def need_node():
    if not (shutil.which("node") or shutil.which("nodejs")):
        pytest.skip("Node.js is not installed on this host")


# ----------------------------------------------------------------------------------------
# The server and a client
# ----------------------------------------------------------------------------------------


class Server:
    """The service on a free port; its stderr goes to server.log in its directory."""

    def __init__(self, tmp, env=None):
        self.cwd = str(tmp)
        self.log_path = os.path.join(self.cwd, "server.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, SERVER, "--port", "0", "--cwd", self.cwd],
                                         stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        line = self.proc.stdout.readline()  # it listens once the defaults are warm
        if not line.startswith("sbx-interpreter: listening on "):
            self.proc.kill()
            pytest.fail(f"the server did not start: {line!r} {self.log()}")
        self.port = int(line.rsplit(":", 1)[1])

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def connect(self, obj=None, raw=None):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        s.sendall(raw if raw is not None else (json.dumps(obj) + "\n").encode())
        return s

    def request(self, obj=None, raw=None):
        """Sends one request; returns every answer, checked against the protocol."""
        with self.connect(obj, raw) as s:
            return read_answers(s)

    def ok(self, obj):
        answers = self.request(obj)
        assert answers[-1]["type"] != "failure", answers
        return answers[-1]

    def execute(self, code, **fields):
        return Execution(self.request({"op": "execute", "code": code, **fields}))

    def failure(self, obj=None, raw=None):
        answers = self.request(obj, raw)
        assert len(answers) == 1 and answers[0]["type"] == "failure", answers
        return answers[0]["code"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def check_message(m):
    """The shape of every answer, as docs/code-interpreter.md gives it."""
    t = m["type"]
    if t in ("stdout", "stderr"):
        assert set(m) == {"type", "text"} and isinstance(m["text"], str)
    elif t == "result":
        assert set(m) == {"type", "is_main_result", "data"}
        assert isinstance(m["is_main_result"], bool) and isinstance(m["data"], dict)
        assert "text/plain" in m["data"] and len(m["data"]) <= 32
        for mime, value in m["data"].items():
            assert mime == "application/json" or isinstance(value, str), (mime, value)
    elif t == "error":
        assert set(m) == {"type", "name", "value", "traceback"}
        assert all(isinstance(m[k], str) for k in ("name", "value", "traceback"))
    elif t == "end":
        assert set(m) == {"type", "context", "execution_count", "interrupted", "timed_out",
                          "restarted", "exit_code"}
        assert isinstance(m["context"], str) and type(m["execution_count"]) is int
        assert all(type(m[k]) is bool for k in ("interrupted", "timed_out", "restarted"))
        assert m["exit_code"] is None or type(m["exit_code"]) is int
    elif t == "context":
        assert set(m) == {"type", "id", "language", "cwd"}
    elif t == "contexts":
        assert set(m) == {"type", "contexts"}
        for c in m["contexts"]:
            assert set(c) == {"id", "language", "cwd"}
    elif t == "ok":
        assert set(m) == {"type"}
    elif t == "failure":
        assert set(m) == {"type", "code", "message"} and m["code"] in FAILURE_CODES
    else:
        raise AssertionError(f"unknown answer type {t!r}")


def read_answers(s, on_message=None):
    """Reads answers until the server closes; the final one must be last."""
    answers = []
    for line in s.makefile("rb"):
        assert line.endswith(b"\n")
        m = json.loads(line.decode("utf-8"))
        check_message(m)
        assert not answers or answers[-1]["type"] not in FINAL_TYPES, "after the final answer"
        answers.append(m)
        if on_message is not None:
            on_message(m)
    assert answers and answers[-1]["type"] in FINAL_TYPES, answers
    return answers


class Execution:
    """The answers of an execute request, gathered like sbx_execution."""

    def __init__(self, answers):
        self.answers = answers
        assert answers[-1]["type"] == "end", answers
        self.end = answers[-1]
        self.stdout = "".join(m["text"] for m in answers if m["type"] == "stdout")
        self.stderr = "".join(m["text"] for m in answers if m["type"] == "stderr")
        self.results = [m for m in answers if m["type"] == "result"]
        errors = [m for m in answers if m["type"] == "error"]
        assert len(errors) <= 1, errors
        self.error = errors[0] if errors else None

    @property
    def main(self):
        mains = [r for r in self.results if r["is_main_result"]]
        assert len(mains) <= 1
        return mains[0]["data"] if mains else None

    @property
    def text(self):
        return self.main["text/plain"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("interpreter"))
    yield srv
    srv.stop()


def png_size(b64):
    png = base64.b64decode(b64)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def new_context(server, language="python", **fields):
    """Creates a context; returns its description (id, language, cwd)."""
    answer = server.ok({"op": "create_context", "language": language, **fields})
    assert answer["type"] == "context"
    return {k: answer[k] for k in ("id", "language", "cwd")}


def remove_context(server, cid):
    server.ok({"op": "remove_context", "context": cid})


# ----------------------------------------------------------------------------------------
# Basics
# ----------------------------------------------------------------------------------------


def test_ping_and_default_contexts(server):
    assert server.request({"op": "ping"}) == [{"type": "ok"}]
    contexts = server.ok({"op": "list_contexts"})["contexts"]
    defaults = {c["id"]: c for c in contexts if c["id"] in ("python", "javascript", "bash")}
    assert {"python", "bash"} <= set(defaults)
    for cid, c in defaults.items():
        assert c["language"] == cid and c["cwd"] == server.cwd


def test_connection_without_request(server):
    socket.create_connection(("127.0.0.1", server.port)).close()  # like a ready check
    assert server.request({"op": "ping"}) == [{"type": "ok"}]


def test_python_state_and_main_result(server):
    ex = server.execute("x = 20\ny = x + 1")
    assert ex.results == [] and ex.error is None
    assert ex.end["context"] == "python" and ex.end["exit_code"] is None
    count = ex.end["execution_count"]
    ex = server.execute("x * 2 + y - 19", context="python", language="python")
    assert ex.text == "42" and ex.end["execution_count"] == count + 1
    assert server.execute("_ + 1").text == "43"  # the last main result is `_`
    assert server.execute("None").results == []
    assert server.execute("def f():\n    return 'v'\nf()").text == "'v'"
    assert server.execute("").results == []
    assert server.execute("# a comment only").results == []


def test_top_level_await(server):
    ex = server.execute("import asyncio\nawait asyncio.sleep(0.01)\nawait asyncio.sleep(0, 'done')")
    assert ex.error is None and ex.text == "'done'"


def test_contexts_are_isolated(server):
    server.execute("secret = 'default'")
    cid = new_context(server)["id"]
    try:
        ex = server.execute("secret", context=cid)
        assert ex.error["name"] == "NameError" and ex.end["context"] == cid
        assert ex.end["execution_count"] == 1
        server.execute("secret = 'mine'\nimport os\nos.chdir('/')", context=cid)
        assert server.execute("secret").text == "'default'"
        assert server.execute("import os\nos.getcwd()").text == repr(server.cwd)
        assert server.execute("os.getcwd()", context=cid).text == "'/'"
    finally:
        remove_context(server, cid)


# ----------------------------------------------------------------------------------------
# Python results
# ----------------------------------------------------------------------------------------


def test_dataframe_text_and_html(server):
    need("pandas")
    ex = server.execute("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    assert set(ex.main) == {"text/plain", "text/html"}
    assert "a  b" in ex.main["text/plain"] and "<table" in ex.main["text/html"]


def test_numpy(server):
    need("numpy")
    assert server.execute("import numpy as np\nnp.arange(10).sum()").text.endswith("45")


def test_rich_formats(server):
    code = r'''
class Rich:
    def __repr__(self): return "Rich()"
    def _repr_html_(self): return "<b>rich</b>"
    def _repr_markdown_(self): return "**rich**"
    def _repr_json_(self): return {"k": [1, 2]}
    def _repr_png_(self): return b"\x89PNG fake"
    def _repr_svg_(self): return None
    def _repr_latex_(self): return ("$x$", {"meta": 1})
    def _repr_javascript_(self): raise RuntimeError("broken formatter")
Rich()
'''
    ex = server.execute(code)
    assert ex.main == {
        "text/plain": "Rich()", "text/html": "<b>rich</b>", "text/markdown": "**rich**",
        "application/json": {"k": [1, 2]}, "image/png": base64.b64encode(b"\x89PNG fake").decode(),
        "text/latex": "$x$",
    }
    assert ex.error is None and "broken formatter" in ex.stderr
    # A class is shown by its repr only (its _repr_*_ are unbound functions).
    assert set(server.execute("Rich").main) == {"text/plain"}


def test_display(server):
    ex = server.execute("print('a')\ndisplay(1, 'two')\nprint('b')\n3")
    assert [(r["is_main_result"], r["data"]["text/plain"]) for r in ex.results] == \
        [(False, "1"), (False, "'two'"), (True, "3")]
    kinds = [m["type"] for m in ex.answers]  # output printed before a result comes before it
    assert kinds.index("stdout") < kinds.index("result")
    assert ex.stdout == "a\nb\n"


def test_matplotlib_figure_at_end_of_cell(server):
    need("matplotlib")
    ex = server.execute("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\n"
                        "plt.title('t')\nNone")
    assert ex.error is None and len(ex.results) == 1
    data = ex.results[0]["data"]
    assert not ex.results[0]["is_main_result"]
    assert data["text/plain"] == "<Figure size 640x480 with 1 Axes>"
    assert png_size(data["image/png"]) == (640, 480)
    assert server.execute("plt.get_fignums()").text == "[]"  # closed after being sent


def test_matplotlib_show_and_figure_value(server):
    need("matplotlib")
    ex = server.execute("import matplotlib.pyplot as plt\nplt.figure(figsize=(2, 1))\n"
                        "plt.plot([1])\nplt.show()\nprint('after show')")
    assert len(ex.results) == 1 and png_size(ex.results[0]["data"]["image/png"]) == (200, 100)
    kinds = [m["type"] for m in ex.answers]
    assert kinds.index("result") < kinds.index("stdout")  # emitted right away, not at the end
    ex = server.execute("fig, ax = plt.subplots()\nfig")  # a figure value is shown once
    assert len(ex.results) == 1 and ex.results[0]["is_main_result"]
    assert png_size(ex.main["image/png"]) == (640, 480)


def test_exception_traceback(server):
    ex = server.execute("def inner():\n    raise ValueError('bad value')\n\n"
                        "print('before')\ninner()")
    assert ex.stdout == "before\n"
    assert ex.error["name"] == "ValueError" and ex.error["value"] == "bad value"
    tb = ex.error["traceback"]
    n = ex.end["execution_count"]
    assert tb.startswith("Traceback (most recent call last):")
    assert f'File "<cell {n}>", line 5' in tb and f'File "<cell {n}>", line 2, in inner' in tb
    assert "raise ValueError('bad value')" in tb and tb.rstrip().endswith("ValueError: bad value")
    assert "py_worker" not in tb
    ex = server.execute("def broken(:\n    pass")
    assert ex.error["name"] == "SyntaxError" and "py_worker" not in ex.error["traceback"]


def test_stdin_is_empty(server):
    ex = server.execute("input()")
    assert ex.error["name"] == "EOFError"
    assert server.execute("read line || echo eof", language="bash").stdout == "eof\n"


def test_random_state_differs_between_contexts(server):
    # Workers are forked from one zygote (and the defaults may come from a snapshot): each
    # reseeds on its first execution.
    need("numpy")
    code = "import random, numpy\n(random.random(), numpy.random.rand())"
    a, b = new_context(server)["id"], new_context(server)["id"]
    try:
        values = [server.execute(code, context=c).text for c in (a, b)]
        assert values[0] != values[1]
        assert server.execute("random.seed(1)\nrandom.random()", context=a).text == \
            server.execute("random.seed(1)\nrandom.random()", context=b).text
    finally:
        remove_context(server, a)
        remove_context(server, b)


def test_system_exit(server):
    server.execute("kept = 7")
    ex = server.execute("import sys\nsys.exit(3)")
    assert ex.error["name"] == "SystemExit" and ex.error["value"] == "3"
    assert not ex.end["restarted"]
    assert server.execute("kept").text == "7"  # the worker survived


def test_worker_death_restarts(server):
    cid = new_context(server)["id"]
    try:
        server.execute("state = 1", context=cid)
        ex = server.execute("print('bye', flush=True)\nimport os\nos._exit(5)", context=cid)
        assert ex.stdout == "bye\n"
        assert ex.error == {"type": "error", "name": "WorkerDied", "value": "exit status 5",
                            "traceback": ""}
        assert ex.end["restarted"] and ex.end["execution_count"] == 2
        ex = server.execute("state", context=cid)
        assert ex.error["name"] == "NameError" and ex.end["execution_count"] == 1
    finally:
        remove_context(server, cid)


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------


def test_unicode_and_invalid_utf8(server):
    ex = server.execute("import sys\nprint('héllo wörld ✓ 🐍')\nsys.stdout.flush()\n"
                        "sys.stdout.buffer.write(b'bad \\xff byte\\n')\n"
                        "print('err ✗', file=sys.stderr)")
    assert ex.stdout == "héllo wörld ✓ 🐍\nbad \ufffd byte\n"
    assert ex.stderr == "err ✗\n"


def test_large_output(server):
    ex = server.execute("import sys\nsys.stdout.write('x' * 5_000_000)\n"
                        "print('!', file=sys.stderr)")
    assert len(ex.stdout) == 5_000_000 and set(ex.stdout) == {"x"} and ex.stderr == "!\n"
    assert ex.error is None


def test_many_small_writes_are_coalesced(server):
    ex = server.execute("for i in range(20000):\n    print(i)")
    assert ex.stdout == "".join(f"{i}\n" for i in range(20000))
    assert sum(m["type"] == "stdout" for m in ex.answers) < 2000


def test_output_streams_while_running(server):
    # Unbuffered: even without a newline or a flush, output goes out as it is written.
    code = "import time\nprint('first', end='')\ntime.sleep(0.6)\nprint('last')"
    s = server.connect({"op": "execute", "code": code})
    start = time.monotonic()
    times = {}

    def arrived(m):
        times.setdefault(m.get("text", m["type"]), time.monotonic() - start)

    with s:
        read_answers(s, arrived)
    assert times["end"] >= 0.6 and times["first"] < times["end"] - 0.4


def test_subprocess_output_is_captured(server):
    ex = server.execute("import os, subprocess\nos.system('echo from-system; echo sys-err >&2')\n"
                        "subprocess.run(['sh', '-c', 'echo from-run'])\nprint('python')")
    assert ex.stdout == "from-system\nfrom-run\npython\n" and ex.stderr == "sys-err\n"


def test_envs_for_one_execution(server):
    ex = server.execute("import os, subprocess\n"
                        "print(os.environ['SBX_T1'], os.environ.get('HOME') == '/x')\n"
                        "subprocess.run(['sh', '-c', 'echo $SBX_T1'])",
                        envs={"SBX_T1": "one two", "HOME": "/x"})
    assert ex.stdout == "one two True\none two\n"
    ex = server.execute("print(os.environ.get('SBX_T1'), os.environ.get('HOME') == '/x')")
    assert ex.stdout == "None False\n"


# ----------------------------------------------------------------------------------------
# Interrupts and timeouts
# ----------------------------------------------------------------------------------------


def test_timeout_interrupts_and_keeps_state(server):
    server.execute("before_timeout = 'kept'")
    start = time.monotonic()
    ex = server.execute("import time\nwhile True:\n    time.sleep(0.01)", timeout_ms=300)
    assert 0.25 < time.monotonic() - start < 5
    assert ex.error["name"] == "KeyboardInterrupt" and "py_worker" not in ex.error["traceback"]
    assert ex.end["timed_out"] and not ex.end["interrupted"] and not ex.end["restarted"]
    assert server.execute("before_timeout").text == "'kept'"


def test_timeout_of_busy_loop(server):
    ex = server.execute("n = 0\nwhile True:\n    n += 1", timeout_ms=200)
    assert ex.error["name"] == "KeyboardInterrupt" and ex.end["timed_out"]
    assert int(server.execute("n").text) > 0


def test_interrupt_stops_a_subprocess_and_spares_background_ones(server):
    ex = server.execute("import subprocess\nbg = subprocess.Popen(['sleep', '30'])\n"
                        "subprocess.run(['sleep', '30'])", timeout_ms=300)
    assert ex.error["name"] == "KeyboardInterrupt" and not ex.end["restarted"]
    assert server.execute("bg.poll() is None").text == "True"  # still running
    server.execute("bg.kill()\nbg.wait()")


def test_forked_child_does_not_answer(server):
    ex = server.execute("import os\npid = os.fork()\nif pid == 0:\n    print('child')\n"
                        "else:\n    os.waitpid(pid, 0)\n    print('parent')")
    assert ex.stdout == "child\nparent\n" and ex.error is None
    assert server.execute("'alive'").text == "'alive'"


def test_ignored_interrupt_restarts_the_context(server):
    cid = new_context(server)["id"]
    try:
        server.execute("lost = 1", context=cid)
        start = time.monotonic()
        ex = server.execute("import time\nwhile True:\n    try:\n        time.sleep(0.01)\n"
                            "    except KeyboardInterrupt:\n        pass",
                            context=cid, timeout_ms=200)
        assert 2.0 < time.monotonic() - start < 10
        assert ex.end["timed_out"] and ex.end["restarted"] and ex.error is None
        ex = server.execute("lost", context=cid)
        assert ex.error["name"] == "NameError" and ex.end["execution_count"] == 1
        assert server.execute("1 + 1", context=cid).text == "2"
    finally:
        remove_context(server, cid)


def start_and_wait_for_output(server, code, **fields):
    """Starts an execution and returns its socket once its first output arrived."""
    s = server.connect({"op": "execute", "code": code, **fields})
    f = s.makefile("rb")
    first = json.loads(f.readline())
    assert first["type"] == "stdout", first
    return s, f


def test_interrupt_from_another_connection(server):
    s, f = start_and_wait_for_output(
        server, "import time\nprint('running', flush=True)\nwhile True:\n    time.sleep(0.01)")
    with s:
        assert server.request({"op": "interrupt", "context": "python"}) == [{"type": "ok"}]
        answers = [json.loads(line) for line in f]
    assert answers[0]["type"] == "error" and answers[0]["name"] == "KeyboardInterrupt"
    end = answers[-1]
    assert end["interrupted"] and not end["timed_out"] and not end["restarted"]
    # Nothing running: interrupting is fine.
    assert server.request({"op": "interrupt", "context": "python"}) == [{"type": "ok"}]


def test_client_disconnect_interrupts(server):
    s, f = start_and_wait_for_output(
        server, "import time\nstopped = False\nprint('running', flush=True)\ntry:\n"
                "    time.sleep(30)\nexcept KeyboardInterrupt:\n    stopped = True")
    f.close()
    s.close()
    start = time.monotonic()
    assert server.execute("stopped").text == "True"  # ran after the interrupted one ended
    assert time.monotonic() - start < 10  # not the 30 s sleep


def test_executions_in_one_context_queue(server):
    results = {}

    def slow():
        results["slow"] = server.execute("import time\ntime.sleep(1.0)\nqueued = 'first'")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    # Runs after the first one, which it waits for.
    assert server.execute("queued").text == "'first'"
    # Its timeout counts from the request: spent waiting, it never runs.
    t2 = threading.Thread(target=slow)
    t2.start()
    time.sleep(0.2)
    ex = server.execute("never_defined = 1", timeout_ms=200)
    assert ex.end["timed_out"] and ex.end["execution_count"] == 0 and ex.answers == [ex.end]
    t.join()
    t2.join()
    assert server.execute("'never_defined' in globals()").text == "False"


def test_contexts_run_concurrently(server):
    cid = new_context(server)["id"]
    try:
        spans = {}

        def run(context):
            ex = server.execute("import time\nt0 = time.time()\ntime.sleep(1.0)\n(t0, time.time())",
                                context=context)
            spans[context] = eval(ex.text)  # noqa: S307 - our own tuple of floats

        threads = [threading.Thread(target=run, args=(c,)) for c in ("python", cid)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        (a0, a1), (b0, b1) = spans.values()
        assert a0 < b1 and b0 < a1  # they overlap
    finally:
        remove_context(server, cid)


# ----------------------------------------------------------------------------------------
# JavaScript
# ----------------------------------------------------------------------------------------


def test_javascript_values_and_state(server):
    need_node()
    ex = server.execute("const base = 40; let counter = 1; var v = 'var'; base + 2",
                        language="javascript")
    assert ex.text == "42" and ex.end["context"] == "javascript" and ex.end["exit_code"] is None
    ex = server.execute("counter += 1; ({base, counter, v, list: [1, 'two']})",
                        language="javascript")
    assert ex.text == "{ base: 40, counter: 2, v: 'var', list: [ 1, 'two' ] }"
    assert server.execute("let nothing = 1", language="javascript").results == []
    assert server.execute("undefined", language="javascript").results == []
    assert server.execute("null", language="javascript").text == "null"


def node_pids(server):
    """The pids of the service's node processes (its children named node)."""
    pids = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except (OSError, ValueError):
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == server.proc.pid and comm.startswith("node"):
            pids.add(int(entry))
    return pids


def test_fresh_javascript_workers_in_a_new_sandbox(server):
    # A sandbox name not seen before (a template or snapshot copy): javascript workers that
    # ran nothing are replaced (OpenSSL's random state must not be shared between copies).
    need_node()
    cid = new_context(server, "javascript")["id"]
    before = node_pids(server)
    assert before
    server.execute("1", envs={"SBX_SANDBOX_ID": "sbx-test-copy-1"})
    pid = int(server.execute("process.pid", context=cid).text)
    assert pid not in before
    # A worker with state keeps it, and its process, in the next copy.
    server.execute("globalThis.kept = 7", context=cid)
    server.execute("1", envs={"SBX_SANDBOX_ID": "sbx-test-copy-2"})
    assert server.execute("[process.pid, kept]", context=cid).text == f"[ {pid}, 7 ]"
    remove_context(server, cid)


def test_javascript_console_and_node_globals(server):
    need_node()
    ex = server.execute("console.log('hello %s', 'world', {a: 1}); console.error('oops');"
                        "require('path').join('a', 'b') + ' ' + typeof process.pid + ' ' + "
                        "Buffer.from('hi').toString('hex')",
                        context="javascript")
    assert ex.stdout == "hello world { a: 1 }\n" and ex.stderr == "oops\n"
    assert ex.text == "'a/b number 6869'"
    ex = server.execute("require('child_process').execSync('echo child', {stdio: 'inherit'});"
                        "process.cwd()", language="javascript")
    assert ex.stdout == "child\n" and ex.text == repr(server.cwd)


def test_javascript_errors(server):
    need_node()
    ex = server.execute("function thrower() { throw new TypeError('bad thing'); }\n"
                        "console.log('before');\nthrower()", language="javascript")
    assert ex.stdout == "before\n"
    assert ex.error["name"] == "TypeError" and ex.error["value"] == "bad thing"
    assert "TypeError: bad thing" in ex.error["traceback"] and "at thrower" in ex.error["traceback"]
    assert "js_worker" not in ex.error["traceback"] and "node:vm" not in ex.error["traceback"]
    ex = server.execute("let = = 1", language="javascript")
    assert ex.error["name"] == "SyntaxError"
    ex = server.execute("throw 42", language="javascript")
    assert ex.error["name"] == "Error" and ex.error["value"] == "42"
    ex = server.execute("Promise.reject(new RangeError('no'))", language="javascript")
    assert ex.error["name"] == "RangeError"


def test_javascript_promise_is_awaited(server):
    need_node()
    ex = server.execute("new Promise((resolve) => setTimeout(() => {\n"
                        "  console.log('tick');\n  resolve(7);\n}, 100))", language="javascript")
    assert ex.stdout == "tick\n" and ex.text == "7"
    ex = server.execute("(async () => { await null; return 'async'; })()", language="javascript")
    assert ex.text == "'async'"


def test_javascript_top_level_await(server):
    need_node()
    ex = server.execute("const tla = await Promise.resolve(20);\nlet other = 1;\n"
                        "await Promise.resolve(tla + 1)", language="javascript")
    assert ex.error is None and ex.text == "21"
    assert server.execute("tla + other", language="javascript").text == "21"  # declarations persist
    ex = server.execute("await new Promise((r) => setTimeout(r, 50)); console.log('waited')",
                        language="javascript")
    assert ex.stdout == "waited\n" and ex.results == []
    ex = server.execute("await Promise.reject(new Error('nope'))", language="javascript")
    assert ex.error["name"] == "Error" and ex.error["value"] == "nope"
    ex = server.execute("await new Promise(() => {})", language="javascript", timeout_ms=300)
    assert "interrupted" in ex.error["value"] and ex.end["timed_out"] and not ex.end["restarted"]
    assert server.execute("await 1 +", language="javascript").error["name"] == "SyntaxError"


def test_javascript_interrupts(server):
    need_node()
    server.execute("const survivor = 'alive'", language="javascript")
    ex = server.execute("while (true) {}", language="javascript", timeout_ms=300)
    assert ex.error is not None and "interrupted" in ex.error["value"]
    assert ex.end["timed_out"] and not ex.end["restarted"]
    ex = server.execute("new Promise(() => {})", language="javascript", timeout_ms=300)
    assert ex.error is not None and "interrupted" in ex.error["value"] and not ex.end["restarted"]
    assert server.execute("survivor", language="javascript").text == "'alive'"


def test_javascript_envs_and_uncaught_callback_error(server):
    need_node()
    ex = server.execute("process.env.SBX_JS", language="javascript", envs={"SBX_JS": "yes"})
    assert ex.text == "'yes'"
    assert server.execute("process.env.SBX_JS", language="javascript").results == []
    server.execute("setTimeout(() => { throw new Error('late') }, 0); 1", language="javascript")
    time.sleep(0.2)  # the worker reports it on its stderr and lives on
    assert server.execute("1 + 1", language="javascript").text == "2"


# ----------------------------------------------------------------------------------------
# Bash
# ----------------------------------------------------------------------------------------


def test_bash_output_and_exit_code(server):
    ex = server.execute("echo out; echo err >&2; false", language="bash")
    assert ex.stdout == "out\n" and ex.stderr == "err\n" and ex.results == [] and ex.error is None
    assert ex.end["exit_code"] == 1 and ex.end["context"] == "bash"
    assert server.execute("(exit 7)", language="bash").end["exit_code"] == 7
    assert server.execute("true", language="bash").end["exit_code"] == 0
    assert server.execute("", language="bash").end["exit_code"] == 0


def test_bash_state_persists(server):
    server.execute("cd /tmp && BASH_VAR=kept && declare -A map=([k]=v) && f() { echo func; }",
                   language="bash")
    ex = server.execute('pwd; echo "$BASH_VAR ${map[k]}"; f', language="bash")
    assert ex.stdout == "/tmp\nkept v\nfunc\n"
    server.execute(f"cd {server.cwd}", language="bash")


def test_bash_cell_shadowing_builtins(server):
    cid = new_context(server, "bash")["id"]
    try:
        server.execute("printf() { echo shadowed; }; source() { :; }; read() { :; }", context=cid)
        assert server.execute("printf x", context=cid).stdout == "shadowed\n"
    finally:
        remove_context(server, cid)


def test_bash_envs_for_one_execution(server):
    server.execute("export SBX_B=old", language="bash")
    ex = server.execute("echo $SBX_B $SBX_NEW; sh -c 'echo $SBX_NEW'", language="bash",
                        envs={"SBX_B": "new $(x) 'q'", "SBX_NEW": "n"})
    assert ex.stdout == "new $(x) 'q' n\nn\n"
    ex = server.execute("echo ${SBX_B}-${SBX_NEW-unset}; sh -c 'echo $SBX_B'", language="bash")
    assert ex.stdout == "old-unset\nold\n"


def test_bash_interrupt(server):
    server.execute("bash_state=here", language="bash")
    ex = server.execute("echo start; sleep 30; echo never", language="bash", timeout_ms=300)
    assert ex.stdout == "start\n" and ex.end["exit_code"] == 130
    assert ex.end["timed_out"] and not ex.end["restarted"]
    ex = server.execute("while :; do :; done", language="bash", timeout_ms=200)
    assert ex.end["exit_code"] == 130 and not ex.end["restarted"]
    assert server.execute("echo $bash_state", language="bash").stdout == "here\n"


def test_bash_exit_restarts(server):
    cid = new_context(server, "bash")["id"]
    try:
        ex = server.execute("exit 3", context=cid)
        assert ex.error["name"] == "WorkerDied" and ex.end["exit_code"] == 3 and ex.end["restarted"]
        assert server.execute("echo ok", context=cid).stdout == "ok\n"
    finally:
        remove_context(server, cid)


# ----------------------------------------------------------------------------------------
# Context management
# ----------------------------------------------------------------------------------------


def test_create_list_restart_remove(server, tmp_path):
    c = new_context(server, "bash", cwd=str(tmp_path))
    assert c["language"] == "bash" and c["cwd"] == str(tmp_path)
    assert c["id"] not in ("python", "javascript", "bash")
    assert c in server.ok({"op": "list_contexts"})["contexts"]
    assert server.execute("pwd; X=1", context=c["id"]).stdout == f"{tmp_path}\n"
    assert server.execute("echo ${X-gone}", context=c["id"]).end["execution_count"] == 2

    assert server.request({"op": "restart_context", "context": c["id"]}) == [{"type": "ok"}]
    ex = server.execute("echo ${X-gone}", context=c["id"])
    assert ex.stdout == "gone\n" and ex.end["execution_count"] == 1

    assert server.request({"op": "remove_context", "context": c["id"]}) == [{"type": "ok"}]
    assert c not in server.ok({"op": "list_contexts"})["contexts"]
    assert server.failure({"op": "execute", "code": "true", "context": c["id"]}) == "not_found"
    assert server.failure({"op": "remove_context", "context": c["id"]}) == "not_found"
    assert server.failure({"op": "restart_context", "context": c["id"]}) == "not_found"
    assert server.failure({"op": "interrupt", "context": c["id"]}) == "not_found"


def test_create_context_defaults_and_errors(server):
    c = new_context(server)
    assert c["language"] == "python" and c["cwd"] == server.cwd
    remove_context(server, c["id"])
    c = server.ok({"op": "create_context"})
    assert c["type"] == "context" and c["language"] == "python"
    remove_context(server, c["id"])
    assert server.failure({"op": "create_context", "cwd": "/no/such/dir"}) == "not_found"
    assert server.failure({"op": "create_context", "language": "cobol"}) == "invalid"
    assert server.failure({"op": "create_context", "cwd": 5}) == "invalid"


def test_restart_during_execution(server):
    cid = new_context(server)["id"]
    try:
        s, f = start_and_wait_for_output(
            server, "import time\nprint('go', flush=True)\ntime.sleep(30)", context=cid)
        with s:
            assert server.request({"op": "restart_context", "context": cid}) == [{"type": "ok"}]
            answers = [json.loads(line) for line in f]
        assert answers[-1]["type"] == "end" and answers[-1]["restarted"]
        assert all(a["type"] != "error" for a in answers)  # a requested restart is no death
        assert server.execute("1", context=cid).end["execution_count"] == 1
    finally:
        remove_context(server, cid)


def test_remove_default_context_clears_it(server):
    server.execute("gone_soon = 1", language="bash")
    assert server.request({"op": "remove_context", "context": "bash"}) == [{"type": "ok"}]
    assert "bash" not in [c["id"] for c in server.ok({"op": "list_contexts"})["contexts"]]
    assert server.request({"op": "remove_context", "context": "bash"}) == [{"type": "ok"}]
    ex = server.execute("echo ${gone_soon-fresh}", language="bash")  # started afresh on use
    assert ex.stdout == "fresh\n" and ex.end["execution_count"] == 1
    assert "bash" in [c["id"] for c in server.ok({"op": "list_contexts"})["contexts"]]


def test_context_limit(server):
    existing = len(server.ok({"op": "list_contexts"})["contexts"])
    made = []
    try:
        for _ in range(64 - existing):
            made.append(new_context(server, "bash")["id"])
        assert server.failure({"op": "create_context", "language": "bash"}) == "busy"
        assert len(server.ok({"op": "list_contexts"})["contexts"]) == 64
        assert server.execute("echo still", context=made[-1]).stdout == "still\n"
    finally:
        for cid in made:
            remove_context(server, cid)
    remove_context(server, new_context(server, "bash")["id"])  # room again


# ----------------------------------------------------------------------------------------
# Malformed requests
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"not json\n", b"[1, 2]\n", b"\"op\"\n", b"{\"op\": \"ping\"\n", b"\xff\xfe{}\n",
    b"[" * 100000 + b"\n", b"{}\n", b" \n",
])
def test_not_a_request(server, raw):
    assert server.failure(raw=raw) == "invalid"
    assert server.request({"op": "ping"}) == [{"type": "ok"}]


@pytest.mark.parametrize("req", [
    {"op": "no_such_op"},
    {"op": 5},
    {"op": "execute"},
    {"op": "execute", "code": 5},
    {"op": "execute", "code": "1", "context": 5},
    {"op": "execute", "code": "1", "language": "cobol"},
    {"op": "execute", "code": "1", "language": 1},
    {"op": "execute", "code": "1", "context": "bash", "language": "python"},
    {"op": "execute", "code": "1", "envs": ["A=1"]},
    {"op": "execute", "code": "1", "envs": {"A": 1}},
    {"op": "execute", "code": "1", "envs": {"BAD-NAME": "1"}},
    {"op": "execute", "code": "1", "envs": {"": "1"}},
    {"op": "execute", "code": "1", "envs": {"A": "nul\u0000"}},
    {"op": "execute", "code": "1", "envs": {"A": "\udc80"}},
    {"op": "execute", "code": "1", "timeout_ms": -1},
    {"op": "execute", "code": "1", "timeout_ms": 1.5},
    {"op": "execute", "code": "1", "timeout_ms": True},
    {"op": "execute", "code": "1", "timeout_ms": "10"},
    {"op": "restart_context"},
    {"op": "remove_context", "context": None},
    {"op": "interrupt", "context": ["python"]},
])
def test_invalid_requests(server, req):
    assert server.failure(req) == "invalid"


def test_unknown_context(server):
    for op in ("restart_context", "remove_context", "interrupt"):
        assert server.failure({"op": op, "context": "nope"}) == "not_found"
    assert server.failure({"op": "execute", "code": "1", "context": "nope"}) == "not_found"
    assert server.failure({"op": "execute", "code": "1", "context": ""}) == "not_found"
    assert server.execute("'still serving'").text == "'still serving'"


def test_request_line_limit(server):
    with server.connect(raw=b'{"op": "execute", "code": "' + b"x" * (64 * 1024 * 1024 + 16)) as s:
        s.shutdown(socket.SHUT_WR)
        answers = read_answers(s)
    assert len(answers) == 1 and answers[0]["code"] == "invalid"
    assert server.request({"op": "ping"}) == [{"type": "ok"}]


def test_null_fields_mean_absent(server):
    ex = server.execute("'py'", context=None, language=None, envs=None, timeout_ms=None)
    assert ex.text == "'py'" and ex.end["context"] == "python"


def test_server_log_has_no_internal_errors(server):
    # Run last: nothing above made the service log an internal error or a broken worker.
    log = server.log()
    assert "Traceback" not in log and "broken" not in log, log


def test_javascript_without_node(tmp_path):
    """Without Node.js the service starts all the same; javascript fails when used."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    srv = Server(tmp_path, env=dict(os.environ, PATH=str(bin_dir)))
    try:
        contexts = srv.ok({"op": "list_contexts"})["contexts"]
        assert [c["id"] for c in contexts] == ["python", "bash"]
        for req in ({"op": "execute", "code": "1", "language": "javascript"},
                    {"op": "create_context", "language": "javascript"}):
            answers = srv.request(req)
            assert answers[-1]["code"] == "internal" and "Node.js" in answers[-1]["message"]
        assert srv.execute("1 + 1").text == "2"
        assert srv.execute("echo $((2 + 3))", language="bash").stdout == "5\n"
    finally:
        srv.stop()
