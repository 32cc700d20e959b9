# SPDX-License-Identifier: Apache-2.0
"""Python side of the code interpreter service (docs/code-interpreter.md).

Run by server.py as `python3 py_worker.py --zygote-fd N`: the process becomes a zygote that
imports numpy, pandas and matplotlib once and then forks one worker per python context on
request, so a new context starts in milliseconds with everything already imported.

Zygote channel (fd N, an AF_UNIX SOCK_SEQPACKET socket; one JSON object per message):
  server -> zygote  {"op": "fork", "cwd": S} with three fds attached (SCM_RIGHTS): the write
                    ends of the worker's stdout and stderr pipes and its control socket
  zygote -> server  {"type": "ready"} once the imports are done;
                    {"type": "forked", "pid": N} or {"type": "fork_failed", "message": S};
                    {"type": "exited", "pid": N, "code": N} when a worker is reaped (code as
                    in subprocess: the exit status, or -signal)

Worker control socket (stream, one JSON object per line):
  server -> worker  {"op": "exec", "code": S, "envs": {K: V}, "reseed": B, "count": N}
  worker -> server  {"type": "ready"} once; per execution {"type": "started"}, then any
                    number of "result" and "error" answers (the shapes of the protocol), then
                    {"type": "done", "exit_code": null}. Everything the cell wrote to its
                    stdout/stderr is in the pipes before "done" is sent.
                    A message with "sync": true waits for {"op": "ack"}: the server has passed
                    on the output written before it, so output after it cannot overtake it.
"""

import ast
import base64
import builtins
import gc
import importlib
import inspect
import io
import json
import linecache
import os
import random
import select
import signal
import socket
import sys
import threading
import traceback
import types

# Rich formats an object may offer, as IPython defines them: (method, MIME type).
RICH_FORMATS = (
    ("_repr_html_", "text/html"),
    ("_repr_markdown_", "text/markdown"),
    ("_repr_svg_", "image/svg+xml"),
    ("_repr_png_", "image/png"),
    ("_repr_jpeg_", "image/jpeg"),
    ("_repr_json_", "application/json"),
    ("_repr_latex_", "text/latex"),
    ("_repr_javascript_", "application/javascript"),
    ("_repr_pdf_", "application/pdf"),
)
BINARY_FORMATS = {"image/png", "image/jpeg", "application/pdf"}  # base64 on the wire
# The service refuses longer lines (the protocol's limit); a bigger result becomes an error.
MAX_MESSAGE = 64 * 1024 * 1024 - 4096
CELL_PREFIX = "<cell "  # file name of cell code in tracebacks: "<cell 3>"

WORKER = None  # the Worker of this process, once it is one (plt.show() and display() use it)


# ----------------------------------------------------------------------------------------
# Zygote
# ----------------------------------------------------------------------------------------


def preload():
    """Imports the heavy libraries and exercises them once, so forked workers start warm.
    A library that is missing or broken is left out (said on stderr): Python still works."""
    os.environ["MPLBACKEND"] = "Agg"
    try:
        importlib.import_module("numpy")
    except Exception as e:
        print(f"py_worker: numpy left out: {e!r}", file=sys.stderr, flush=True)
    try:
        import pandas

        pandas.DataFrame({"a": [1, 2]})._repr_html_()
    except Exception as e:
        print(f"py_worker: pandas left out: {e!r}", file=sys.stderr, flush=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # The first figure loads the fonts (building their cache) and the PNG writer.
        fig = plt.figure()
        fig.add_subplot().plot([0, 1], [0, 1])
        fig.savefig(io.BytesIO(), format="png")
        plt.close("all")
        plt.show = show
    except Exception as e:
        print(f"py_worker: matplotlib left out: {e!r}", file=sys.stderr, flush=True)


def zygote(channel_fd):
    chan = socket.socket(fileno=channel_fd)
    preload()
    # Objects imported so far are never freed: keep the collector away from their pages so
    # forked workers share them with the zygote instead of copying them.
    gc.collect()
    gc.freeze()

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server signals workers, never us
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    children = set()

    def send(msg):
        chan.send(json.dumps(msg).encode())

    try:
        send({"type": "ready"})
        while True:
            readable, _, _ = select.select([chan, wake_r], [], [])
            if wake_r in readable:
                os.read(wake_r, 4096)
                while children:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    children.discard(pid)
                    send({"type": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})
            if chan in readable:
                data, fds, _, _ = socket.recv_fds(chan, 65536, 8)
                if not data:
                    break  # the server is gone
                try:
                    req = json.loads(data)
                    if (not isinstance(req, dict) or req.get("op") != "fork" or len(fds) != 3
                            or not isinstance(req.get("cwd"), str)):
                        raise ValueError("malformed fork request")
                    pid = os.fork()
                except (OSError, ValueError) as e:
                    for fd in fds:
                        os.close(fd)
                    send({"type": "fork_failed", "message": str(e)})
                    continue
                if pid == 0:
                    try:
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        chan.close()
                        os.close(wake_r)
                        os.close(wake_w)
                        become_worker(req["cwd"], *fds)  # returns only by failing
                    except BaseException:
                        traceback.print_exc()
                    os._exit(70)
                for fd in fds:
                    os.close(fd)
                children.add(pid)
                send({"type": "forked", "pid": pid})
    except OSError:
        pass  # the channel broke: the server is gone
    # Without the server nobody uses the workers: take them down with us.
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def become_worker(cwd, out_fd, err_fd, ctl_fd):
    """In a freshly forked child: a session of its own, fds 0/1/2, the cwd; then serve."""
    os.setsid()  # a process group of its own: the server signals the whole group
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    for fd in (null, out_fd, err_fd):
        os.close(fd)
    os.set_inheritable(ctl_fd, False)  # not for the user's subprocesses
    os.chdir(cwd)
    Worker(socket.socket(fileno=ctl_fd)).serve()


# ----------------------------------------------------------------------------------------
# Worker
# ----------------------------------------------------------------------------------------


class Worker:
    def __init__(self, ctl):
        global WORKER
        WORKER = self
        self.pid = os.getpid()
        self.ctl = ctl
        self.rfile = ctl.makefile("rb")
        self.send_lock = threading.Lock()  # display() may be called from the user's threads
        self.loop = None  # asyncio loop for cells with top-level await, made on first use
        # SIGINT raises KeyboardInterrupt only while user code runs (`active`); one arriving
        # while we talk to the server is remembered (`pending`) and raised right after.
        self.active = False
        self.pending = False
        signal.signal(signal.SIGINT, self.on_sigint)

        # Unbuffered text streams on the pipes (like `python -u`): output streams as written.
        def stream(fd):
            raw = io.FileIO(fd, "w", closefd=False)
            return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace",
                                    write_through=True)

        sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)
        sys.stdout = sys.__stdout__ = stream(1)
        sys.stderr = sys.__stderr__ = stream(2)
        sys.argv = [""]
        sys.path[0] = ""  # like the interactive interpreter: modules of the cwd, not ours

        # The user namespace is a real `__main__` module (pickle finds what cells define).
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        self.ns = main.__dict__
        self.ns["__builtins__"] = builtins
        builtins.display = display

    def on_sigint(self, signum, frame):
        if self.active:
            raise KeyboardInterrupt
        self.pending = True

    def send(self, msg):
        """Sends a message; an interrupt during the send is raised after it (never mid-line).
        A result sent from the main thread waits for the server's ack (see the top)."""
        on_main = threading.current_thread() is threading.main_thread()
        sync = on_main and msg["type"] == "result"
        line = json.dumps(dict(msg, sync=True) if sync else msg).encode() + b"\n"
        if len(line) > MAX_MESSAGE:
            sync = False
            line = json.dumps({
                "type": "error", "name": "ResultTooLarge",
                "value": f"a result of {len(line)} bytes exceeds the service's line limit",
                "traceback": "",
            }).encode() + b"\n"
        if not on_main:
            with self.send_lock:
                self.ctl.sendall(line)
            return
        was_active, self.active = self.active, False
        try:
            with self.send_lock:
                self.ctl.sendall(line)
            if sync and not self.rfile.readline():
                os._exit(0)  # the server is gone
        finally:
            self.active = was_active
        if was_active and self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def serve(self):
        self.send({"type": "ready"})
        while True:
            line = self.rfile.readline()
            if not line:
                os._exit(0)  # the server is gone
            msg = json.loads(line)
            self.pending = False  # an interrupt that came while idle is not for this cell
            saved = self.apply_envs(msg.get("envs") or {})
            try:
                self.active = True
                self.send({"type": "started"})
                if msg.get("reseed"):
                    self.reseed()
                self.run_cell(msg["code"], msg["count"])
                self.active = False
            except BaseException as exc:  # noqa: B902 - SystemExit and interrupts included
                self.active = False
                if os.getpid() == self.pid:
                    self.send_error(exc)
            if os.getpid() != self.pid:
                os._exit(0)  # a child the cell forked (os.fork()) must not answer for us
            self.finish(saved)

    def apply_envs(self, envs):
        saved = {k: os.environ.get(k) for k in envs}
        os.environ.update(envs)
        return saved

    def reseed(self):
        """A worker forked before a snapshot has the same random state in every clone."""
        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()

    def run_cell(self, code, count):
        """Runs a cell like a notebook: a last expression statement is the main result."""
        filename = f"{CELL_PREFIX}{count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        tree = ast.parse(code, filename)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.evaluate(compile(tree, filename, "exec", flags=flags))
        if last is not None:
            value = self.evaluate(compile(last, filename, "eval", flags=flags))
            if value is not None:
                self.ns["_"] = value
                self.send_result(value, True)

    def evaluate(self, code):
        value = eval(code, self.ns)  # noqa: S307 - running the user's code is the point
        if code.co_flags & inspect.CO_COROUTINE:  # the cell uses top-level await
            if self.loop is None:
                import asyncio

                self.loop = asyncio.new_event_loop()
            value = self.loop.run_until_complete(value)
        return value

    def finish(self, saved_envs):
        """End of a cell: open figures become results, output is flushed, then "done"."""
        try:
            self.emit_figures()
        except Exception:  # a figure that cannot be drawn: say so on stderr
            traceback.print_exc()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # the user replaced or closed it
                pass
        for key, value in saved_envs.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.send({"type": "done", "exit_code": None})

    def send_result(self, obj, main):
        data = formats(obj)
        for stream in (sys.stdout, sys.stderr):  # output printed before it comes first
            try:
                stream.flush()
            except Exception:
                pass
        self.send({"type": "result", "is_main_result": main, "data": data})

    def send_error(self, exc):
        try:
            text = "".join(format_exception(exc))
        except Exception:
            text = ""
        try:
            value = str(exc)
        except Exception:
            value = "<unprintable exception>"
        self.send({"type": "error", "name": type(exc).__name__, "value": value, "traceback": text})

    def emit_figures(self):
        """Sends every open pyplot figure as a result and closes it."""
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is None:
            return
        for num in plt.get_fignums():
            fig = plt.figure(num)
            self.send({"type": "result", "is_main_result": False, "data": figure_data(fig)})
            plt.close(fig)


def format_exception(exc):
    """The traceback of an exception without the worker's frames: those before the cell's
    first frame (the worker calling it) and those of the worker's SIGINT handler."""
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith(CELL_PREFIX):
        tb = tb.tb_next
    te = traceback.TracebackException(type(exc), exc, tb)
    pending, seen = [te], set()
    while pending:  # the exception and those chained to it
        t = pending.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        t.stack = traceback.StackSummary.from_list([f for f in t.stack if f.filename != __file__])
        pending.extend(c for c in (t.__cause__, t.__context__) if c is not None)
    return te.format()


def figure_data(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return {"text/plain": repr(fig), "image/png": base64.b64encode(buf.getvalue()).decode()}


def is_figure(obj):
    mod = sys.modules.get("matplotlib.figure")
    return mod is not None and isinstance(obj, mod.Figure)


def formats(obj):
    """Every format an object offers: text/plain (its repr) and its _repr_*_ methods."""
    if is_figure(obj):
        data = figure_data(obj)
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            plt.close(obj)  # shown now, not again at the end of the cell
        return data
    data = {"text/plain": repr(obj)}
    if isinstance(obj, type):  # a class: its _repr_*_ are unbound functions
        return data
    for method, mime in RICH_FORMATS:
        try:
            fn = getattr(obj, method, None)
            value = fn() if callable(fn) else None
        except Exception as e:
            print(f"{method}() of {type(obj).__name__} failed: {type(e).__name__}: {e}",
                  file=sys.stderr)
            continue
        if isinstance(value, tuple) and len(value) == 2:  # (data, metadata)
            value = value[0]
        if value is None:
            continue
        if mime == "application/json":
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError, RecursionError):
                continue
        elif mime in BINARY_FORMATS:
            if isinstance(value, (bytes, bytearray)):
                value = base64.b64encode(value).decode()
            elif not isinstance(value, str):  # a str is taken as base64 already
                continue
        elif isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", "replace")
        elif not isinstance(value, str):
            continue
        data[mime] = value
    return data


def display(*objs):
    """Shows objects as results of the cell (not its main result), like IPython's."""
    for obj in objs:
        WORKER.send_result(obj, False)


def show(*args, **kwargs):
    """plt.show(): the open figures become results now."""
    if WORKER is not None:
        WORKER.emit_figures()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--zygote-fd":
        sys.exit("usage: py_worker.py --zygote-fd N (started by server.py)")
    zygote(int(sys.argv[2]))
