#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The code interpreter service of the code-interpreter template (docs/code-interpreter.md).

    python3 server.py --port 49999 [--host 127.0.0.1] [--cwd DIR]

Serves notebook-like stateful execution over TCP: one JSON request per connection, JSON
lines back, the connection closed after the final answer. Each context is one interpreter
process (a worker): Python workers are forked from a zygote (py_worker.py) that has imported
numpy, pandas and matplotlib, JavaScript runs in a Node.js process (js_worker.js), bash in a
bash process fed each cell from a file. The default contexts (python, javascript, bash) are
started and warmed before the port listens, so that a template snapshot holds them ready.

A worker has its own process group (it leads a session), stdout and stderr pipes that the
service reads and streams, and a control socket carrying JSON lines both ways. Its output
reaches the client before the execution's end because the worker writes it into the pipes
before it sends "done" on the control socket, and the service reads everything the pipes
hold when "done" arrives (FIONREAD) before it answers "end". Results and errors are ordered
after earlier output the same way; a Python result sent while the cell runs (display(),
plt.show()) also waits for the service's ack, so that later output cannot overtake it.
"""

import argparse
import asyncio
import codecs
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import struct
import sys
import tempfile
import termios
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PY_WORKER = os.path.join(HERE, "py_worker.py")
JS_WORKER = os.path.join(HERE, "js_worker.js")

LANGUAGES = ("python", "javascript", "bash")
MAX_CONTEXTS = 64
MAX_REQUEST = 64 * 1024 * 1024  # bytes of a request line; also of a worker's control line
MAX_TIMEOUT_MS = 2**53
KILL_AFTER = 2.0  # seconds from the SIGINT of an interrupt to the SIGKILL
EXIT_GRACE = 1.0  # control socket closed: how long the exit status may take to arrive
START_TIMEOUT = 300.0  # a worker's start (a new zygote imports numpy, pandas, matplotlib)
COALESCE = 0.01  # seconds output may wait to be sent with what follows
OUTPUT_BATCH = 65536  # characters of output sent at once without waiting
CHUNK = 65536  # bytes read from a pipe at once
HIGH_WATER = 1 << 20  # a client's unsent bytes beyond which the worker's pipes are not read
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
WARM_UP = {"python": "None", "javascript": "undefined", "bash": ":"}

# A bash worker: the control socket moves to fd 63; each request line runs the cell files of
# the worker's directory in the shell itself. The INT trap makes an interrupt end the cell
# (status 130) instead of the shell; between cells it does nothing. `builtin`: a cell may
# define functions named like the commands the loop uses.
BASH_BOOTSTRAP = """\
exec 63<&{ctl} {ctl}<&-
builtin trap : INT
builtin printf '{{"type":"ready"}}\\n' >&63
while IFS= builtin read -r -u 63 __sbx_request; do
  builtin source {dir}/pre
  builtin trap 'return 130' INT
  builtin printf '{{"type":"started"}}\\n' >&63
  builtin source {dir}/cell
  __sbx_status=$?
  builtin trap : INT
  builtin source {dir}/post
  builtin printf '{{"type":"done","exit_code":%d}}\\n' "$__sbx_status" >&63
done
"""


def say(message, stream):
    """One line for whoever started us; their going away must not take the service down."""
    try:
        print(f"sbx-interpreter: {message}", file=stream, flush=True)
    except (OSError, ValueError, AttributeError):  # a closed pipe, a closed or missing stream
        pass


def log(message):
    say(message, sys.stderr)


class Failure(Exception):
    """A request that fails: answered with {"type": "failure", "code", "message"}."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def describe_exit(code):
    if code is None:
        return "exited (status unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-code} ({name})"
    return f"exit status {code}"


def check_event(msg):
    """Raises ValueError unless msg is a well-formed execution event from a worker."""
    kind = msg["type"]
    if not isinstance(msg.get("sync", False), bool):
        raise ValueError("malformed sync flag")
    if kind == "result":
        data = msg.get("data")
        if not isinstance(msg.get("is_main_result"), bool) or not isinstance(data, dict):
            raise ValueError("malformed result")
        for mime, value in data.items():
            if not mime or (mime != "application/json" and not isinstance(value, str)):
                raise ValueError("malformed result data")
    elif kind == "error":
        if not all(isinstance(msg.get(k), str) for k in ("name", "value", "traceback")):
            raise ValueError("malformed error")
    elif kind == "done":
        code = msg.get("exit_code", "missing")
        if code is not None and type(code) is not int:
            raise ValueError("malformed done")


# ----------------------------------------------------------------------------------------
# Clients
# ----------------------------------------------------------------------------------------


class Client:
    """One connection: answers go out as JSON lines; its end of stream means it is gone."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.gone_event = asyncio.Event()
        self.on_gone_callbacks = []
        self.watcher = None

    @property
    def gone(self):
        return self.gone_event.is_set()

    def watch(self):
        """Watches for the client's end of stream (after its request line)."""
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self):
        try:
            while await self.reader.read(CHUNK):
                pass  # nothing more is expected: ignored
        except (ConnectionError, OSError):
            pass
        self._set_gone()

    def _set_gone(self):
        if not self.gone:
            self.gone_event.set()
            callbacks, self.on_gone_callbacks = self.on_gone_callbacks, []
            for callback in callbacks:
                callback()

    def on_gone(self, callback):
        if self.gone:
            callback()
        else:
            self.on_gone_callbacks.append(callback)

    def send(self, obj):
        if self.gone:
            return
        if self.writer.transport.is_closing():
            self._set_gone()
            return
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
        self.writer.write(line.encode("utf-8", "replace"))  # lone surrogates become "?"

    def fail(self, code, message):
        self.send({"type": "failure", "code": code, "message": message})

    def backlog(self):
        return 0 if self.gone else self.writer.transport.get_write_buffer_size()

    async def drain(self):
        if self.gone:
            return
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            self._set_gone()

    def close(self):
        """After the final answer: the connection closes once what is buffered is sent."""
        if self.watcher is not None:
            self.watcher.cancel()
        self.on_gone_callbacks = []
        self.writer.close()

    async def finish(self):
        """Closes the connection and waits until it is closed."""
        self.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def linger(self, seconds):
        """Ends our side and reads (discarding) until the client closes, so that unread
        request bytes do not turn the close into a reset that loses our answer."""
        await self.drain()
        try:
            self.writer.write_eof()
            async with asyncio.timeout(seconds):
                while await self.reader.read(CHUNK):
                    pass
        except (ConnectionError, OSError, TimeoutError):
            pass


# ----------------------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------------------


class Run:
    """One execution in a worker: from the "exec" request to "done" or the worker's end."""

    def __init__(self, worker, client):
        self.loop = asyncio.get_running_loop()
        self.worker = worker
        self.client = client  # None for a warm-up: nothing is sent
        self.finished = self.loop.create_future()  # ("done", exit_code) / ("died", exit code)
        self.started = False  # the worker said the cell runs: a SIGINT now reaches it
        self.interrupted = False
        self.timed_out = False
        self.sigint_sent = False
        self.killed = False  # the service killed the worker (not a death of its own)
        self.pending = {"stdout": [], "stderr": []}
        self.pending_size = 0
        self.handles = {}  # "flush", "kill", "timeout": asyncio.TimerHandle

    def _cancel(self, name):
        handle = self.handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def close(self):
        for name in list(self.handles):
            self._cancel(name)

    def set_deadline(self, deadline):
        self.handles["timeout"] = self.loop.call_at(deadline, self.interrupt, True)

    def output(self, stream, text):
        if self.client is None:
            return
        self.pending[stream].append(text)
        self.pending_size += len(text)
        if self.pending_size >= OUTPUT_BATCH:
            self.flush()
        elif "flush" not in self.handles:
            self.handles["flush"] = self.loop.call_later(COALESCE, self.flush)

    def flush(self):
        self._cancel("flush")
        for stream, parts in self.pending.items():
            if parts:
                self.client.send({"type": stream, "text": "".join(parts)})
                parts.clear()
        self.pending_size = 0

    def backlog(self):
        return 0 if self.client is None else self.client.backlog()

    def event(self, msg):
        kind = msg["type"]
        if kind == "started":
            self.started = True
            if (self.interrupted or self.timed_out) and not self.sigint_sent:
                self._sigint()
        elif kind == "done":
            self.end("done", msg["exit_code"])
        elif self.client is not None:  # a result or an error, after the output before it
            self.worker.drain()
            self.flush()
            if kind == "result":
                self.client.send({"type": "result", "is_main_result": msg["is_main_result"],
                                  "data": msg["data"]})
            else:
                self.client.send({"type": "error", "name": msg["name"], "value": msg["value"],
                                  "traceback": msg["traceback"]})

    def end(self, kind, value):
        if not self.finished.done():
            self.finished.set_result((kind, value))

    def interrupt(self, timeout=False):
        """SIGINT to the worker (once it runs the cell); SIGKILL if it is not done 2 s later."""
        if self.finished.done():
            return
        if timeout:
            self.timed_out = True
        else:
            self.interrupted = True
        if "kill" not in self.handles:
            self.handles["kill"] = self.loop.call_later(KILL_AFTER, self.kill)
        if self.started and not self.sigint_sent:
            self._sigint()

    def _sigint(self):
        self.sigint_sent = True
        self.worker.interrupt()

    def kill(self):
        if not self.finished.done():
            self.killed = True
            self.worker.signal(signal.SIGKILL)


class Worker:
    """An interpreter process: its control socket, its output pipes and its exit."""

    def __init__(self, language, pid, out_fd, err_fd, ctl, directory=None):
        self.loop = asyncio.get_running_loop()
        self.language = language
        self.pid = pid  # also its process group: it leads a session of its own
        self.ctl = ctl
        self.ctl_writer = None
        self.directory = directory  # a directory of its own, removed with it
        self.exit = self.loop.create_future()  # its exit code (-N: signal N), None: unknown
        self.ready = self.loop.create_future()
        self.run = None  # the Run in progress
        self.reseed = True  # the first real execution reseeds the interpreter's random state
        self.fds = {"stdout": out_fd, "stderr": err_fd}
        self.eof = set()
        utf8 = codecs.getincrementaldecoder("utf-8")
        self.decoders = {name: utf8("replace") for name in self.fds}
        self.paused = False
        self.closed = False
        self.tasks = set()
        for name, fd in self.fds.items():
            os.set_blocking(fd, False)
            self.loop.add_reader(fd, self._readable, name)
        self.exit.add_done_callback(self._exited)

    def _task(self, coro):
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def attach(self):
        """Starts reading the control socket and waits for the worker's "ready"."""
        reader, self.ctl_writer = await asyncio.open_unix_connection(sock=self.ctl,
                                                                     limit=MAX_REQUEST)
        self._task(self._control(reader))
        try:
            await asyncio.wait_for(asyncio.shield(self.ready), START_TIMEOUT)
        except asyncio.TimeoutError:
            raise Failure("internal", f"the {self.language} interpreter did not start") from None

    def set_exit(self, code):
        if not self.exit.done():
            self.exit.set_result(code)

    def _exited(self, future):
        self.signal(signal.SIGKILL)  # what it left running in its process group
        code = future.result()
        if not self.ready.done():
            self.ready.set_exception(Failure(
                "internal", f"the {self.language} interpreter {describe_exit(code)} at start"))
        if self.run is not None:
            self.run.end("died", code)

    def signal(self, sig):
        """Signals the worker's whole process group (it and what it started)."""
        try:
            os.killpg(self.pid, sig)
        except OSError:
            pass

    def interrupt(self):
        """SIGINT to the interpreter alone, as Jupyter does: it stops its children when it
        raises KeyboardInterrupt in their wait (subprocess.run), and what the user started to
        run in the background (subprocess.Popen) survives."""
        try:
            os.kill(self.pid, signal.SIGINT)
        except OSError:
            pass

    async def _control(self, reader):
        try:
            while line := await reader.readline():
                msg = json.loads(line)
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "ready":
                    if not self.ready.done():
                        self.ready.set_result(None)
                elif kind in ("started", "result", "error", "done"):
                    check_event(msg)
                    if self.run is not None:
                        self.run.event(msg)
                    if msg.get("sync"):  # the worker waits until its output before is passed on
                        self.ctl_writer.write(b'{"op":"ack"}\n')
                else:
                    raise ValueError(f"unknown message type {kind!r}")
        except (ValueError, RecursionError) as e:  # bad JSON, a line too long, a bad shape
            log(f"{self.language} worker {self.pid}: broken control message ({e}): killing it")
            self.signal(signal.SIGKILL)
        except (ConnectionError, OSError):
            pass
        if not self.closed:  # normally the exit status comes first; if not, stop waiting soon
            self.loop.call_later(EXIT_GRACE, self.set_exit, None)

    def _readable(self, name):
        fd = self.fds[name]
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # no writer left: the worker and everything it started are gone
            self.eof.add(name)
            self.loop.remove_reader(fd)
            return
        self._output(name, data)
        if self.run is not None and self.run.backlog() > HIGH_WATER:
            self._pause()

    def _output(self, name, data, final=False):
        text = self.decoders[name].decode(data, final)
        if text and self.run is not None:
            self.run.output(name, text)

    def drain(self, final=False):
        """Reads what the pipes hold now: everything written before the control message
        being handled. `final`: the execution ends, an incomplete character is replaced."""
        for name, fd in self.fds.items():
            if name not in self.eof:
                try:
                    size = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
                except OSError:
                    size = 0
                while size > 0:
                    try:
                        data = os.read(fd, min(size, CHUNK))
                    except OSError:
                        break
                    if not data:
                        break
                    size -= len(data)
                    self._output(name, data)
            if final:
                self._output(name, b"", True)

    def _pause(self):
        """The client reads slower than the worker writes: stop reading (the worker blocks)."""
        if self.paused or self.closed:
            return
        self.paused = True
        for fd in self.fds.values():
            self.loop.remove_reader(fd)
        self._task(self._resume(self.run.client))

    async def _resume(self, client):
        await client.drain()
        self.paused = False
        if not self.closed:
            for name, fd in self.fds.items():
                if name not in self.eof:
                    self.loop.add_reader(fd, self._readable, name)

    async def execute(self, run, code, envs, reseed, count):
        """Starts a cell (execution number `count`); run.finished tells its end."""
        self.run = run
        for decoder in self.decoders.values():
            decoder.reset()
        if self.exit.done():
            run.end("died", self.exit.result())
            return
        await self.send_cell(code, envs, reseed, count)

    async def send_cell(self, code, envs, reseed, count):
        msg = {"op": "exec", "code": code, "envs": envs, "reseed": reseed, "count": count}
        await self.send(json.dumps(msg).encode() + b"\n")

    async def send(self, data):
        try:
            self.ctl_writer.write(data)
            await self.ctl_writer.drain()
        except (ConnectionError, OSError):
            pass  # it is dying: its exit ends the execution

    async def stop(self):
        """Kills the worker's process group and releases everything."""
        self.signal(signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(self.exit), 5)
        except asyncio.TimeoutError:
            log(f"{self.language} worker {self.pid}: no exit status after SIGKILL")
        self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        for fd in self.fds.values():
            self.loop.remove_reader(fd)
            os.close(fd)
        if self.ctl_writer is not None:
            self.ctl_writer.close()
        else:
            self.ctl.close()
        for task in list(self.tasks):
            task.cancel()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


class BashWorker(Worker):
    """A bash process: the cell, and what sets and restores its envs, go through files."""

    def interrupt(self):
        """SIGINT to the process group, as a terminal does: the running command gets it (the
        shell waits for it, then its INT trap ends the cell); background jobs ignore it."""
        self.signal(signal.SIGINT)

    def write(self, name, text):
        with open(os.path.join(self.directory, name), "wb") as f:
            f.write(text.encode("utf-8", "replace"))

    async def send_cell(self, code, envs, reseed, count):
        pre, post = [], []
        if reseed:  # $RANDOM of a shell started before a template snapshot is the same in clones
            pre.append(f"RANDOM={secrets.randbelow(1 << 31)}")
        for i, (key, value) in enumerate(envs.items()):
            saved = f"__sbx_env_{i}"
            pre.append(f"{saved}=$(builtin declare -p {key} 2>/dev/null || :); "
                       f"builtin export {key}={shlex.quote(value)}")
            post.append(f"builtin unset {key}; "
                        f'if [ -n "${saved}" ]; then builtin eval "${saved}"; fi; '
                        f"builtin unset {saved}")
        self.write("pre", "\n".join(pre) + "\n")
        self.write("cell", code)
        self.write("post", "\n".join(post) + "\n")
        await self.send(b"run\n")


class Zygote:
    """The Python zygote (py_worker.py): forks Python workers and reports their exits."""

    def __init__(self, sock):
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.sock.setblocking(False)
        self.ready = self.loop.create_future()
        self.reply = None  # the future of the fork request in progress
        self.lock = asyncio.Lock()  # one fork request at a time
        self.workers = {}  # pid -> Worker
        self.early_exits = {}  # pid -> exit code reported before the worker was adopted
        self.dead = False
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self):
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            log("the Python zygote exited")
            self.close()
            return
        try:
            msg = json.loads(data)
            kind = msg["type"]
            if kind == "ready":
                self.ready.set_result(None)
            elif kind in ("forked", "fork_failed"):
                if self.reply is not None and not self.reply.done():
                    self.reply.set_result(msg)
            elif kind == "exited":
                worker = self.workers.pop(msg["pid"], None)
                if worker is not None:
                    worker.set_exit(msg["code"])
                else:
                    self.early_exits[msg["pid"]] = msg["code"]
        except (ValueError, KeyError, TypeError, asyncio.InvalidStateError) as e:
            log(f"the Python zygote sent a broken message: {e}")

    def adopt(self, pid, worker):
        self.workers[pid] = worker
        if pid in self.early_exits:
            worker.set_exit(self.early_exits.pop(pid))

    async def fork(self, cwd, fds):
        async with self.lock:
            if self.dead:
                raise Failure("internal", "the Python zygote is gone")
            self.reply = self.loop.create_future()
            request = json.dumps({"op": "fork", "cwd": cwd}).encode()
            try:
                socket.send_fds(self.sock, [request], fds)
                msg = await asyncio.wait_for(self.reply, START_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as e:
                raise Failure("internal", f"the Python zygote did not fork: {e}") from None
        if msg["type"] != "forked" or type(msg.get("pid")) is not int:
            raise Failure("internal", f"the Python zygote did not fork: {msg.get('message')}")
        return msg["pid"]

    def close(self):
        """Closing the channel makes the zygote kill its workers and exit."""
        if self.dead:
            return
        self.dead = True
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for future in (self.ready, self.reply):
            if future is not None and not future.done():
                future.set_exception(Failure("internal", "the Python zygote exited"))
        # The exits of its workers are not reported now: their control sockets tell instead.


# ----------------------------------------------------------------------------------------
# Contexts and requests
# ----------------------------------------------------------------------------------------


class Context:
    def __init__(self, cid, language, cwd):
        self.id = cid
        self.language = language
        self.cwd = cwd
        self.lock = asyncio.Lock()  # held by the execution in progress (others queue)
        self.worker = None
        self.run = None  # the execution in progress
        self.count = 0  # executions since the worker started
        self.generation = 0  # workers started so far
        self.removed = False
        self.stale = False  # a javascript worker copied from another sandbox, unused: replace

    def info(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}


def opt_str(req, key):
    value = req.get(key)
    if value is not None and not isinstance(value, str):
        raise Failure("invalid", f"{key} must be a string")
    return value


def check_language(language):
    if language not in LANGUAGES:
        raise Failure("invalid", f"unknown language {language!r} (known: {', '.join(LANGUAGES)})")
    return language


def check_envs(envs):
    if envs is None:
        return {}
    if not isinstance(envs, dict):
        raise Failure("invalid", "envs must be an object of strings")
    for key, value in envs.items():
        if not ENV_NAME.match(key):
            raise Failure("invalid", f"envs: {key!r} is not a valid variable name")
        if not isinstance(value, str):
            raise Failure("invalid", f"envs: the value of {key} must be a string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Failure("invalid", f"envs: the value of {key} is not valid Unicode") from None
        if "\0" in value:
            raise Failure("invalid", f"envs: the value of {key} contains a NUL character")
    return envs


class Service:
    def __init__(self, cwd):
        self.loop = asyncio.get_running_loop()
        self.cwd = cwd  # of the default contexts, and of new ones unless told
        self.contexts = {}
        self.zygote = None
        self.zygote_lock = asyncio.Lock()
        self.tmp = tempfile.mkdtemp(prefix="sbx-interpreter-")
        self.env = dict(os.environ, MPLBACKEND="Agg")
        self.reapers = set()
        self.sandbox_id = None  # as the last execute request named it (SBX_SANDBOX_ID)

    # --- workers ---

    async def spawn(self, ctx):
        """Starts a worker for a context and warms it up (one trivial cell)."""
        if ctx.language == "python":
            worker = await self._spawn_python(ctx.cwd)
        elif ctx.language == "javascript":
            node = shutil.which("node") or shutil.which("nodejs")
            if node is None:
                raise Failure("internal",
                              "javascript is not available: Node.js (node) is not installed")

            def argv(fd):
                return [node, "--expose-internals", JS_WORKER, "--control-fd", str(fd)]

            worker = await self._spawn_process(Worker, "javascript", argv, ctx.cwd)
        else:
            bash = shutil.which("bash")
            if bash is None:
                raise Failure("internal", "bash is not available: it is not installed")
            directory = tempfile.mkdtemp(prefix="bash-", dir=self.tmp)

            def argv(fd):
                script = BASH_BOOTSTRAP.format(ctl=fd, dir=shlex.quote(directory))
                return [bash, "--noprofile", "--norc", "-c", script, "bash"]

            worker = await self._spawn_process(BashWorker, "bash", argv, ctx.cwd, directory)
        try:
            await worker.attach()
            run = Run(worker, None)
            warm_up = self.run_cell(worker, run, WARM_UP[ctx.language], {}, None, False, 0)
            kind, _ = await asyncio.wait_for(warm_up, START_TIMEOUT)
            if kind != "done":
                raise Failure("internal", f"the {ctx.language} interpreter exited at start")
        except BaseException as e:
            await worker.stop()
            if isinstance(e, asyncio.TimeoutError):
                raise Failure("internal", f"the {ctx.language} interpreter did not start") from None
            raise
        return worker

    async def _spawn_process(self, cls, language, argv, cwd, directory=None):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mine, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv(theirs.fileno()), stdin=asyncio.subprocess.DEVNULL, stdout=out_w,
                stderr=err_w, pass_fds=(theirs.fileno(),), cwd=cwd, env=self.env,
                start_new_session=True)
        except OSError as e:
            for fd in (out_r, err_r):
                os.close(fd)
            mine.close()
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
            raise Failure("internal", f"cannot start the {language} interpreter: {e}") from None
        finally:
            os.close(out_w)
            os.close(err_w)
            theirs.close()
        worker = cls(language, proc.pid, out_r, err_r, mine, directory)
        reaper = self.loop.create_task(self._reap(proc, worker))
        self.reapers.add(reaper)
        reaper.add_done_callback(self.reapers.discard)
        return worker

    @staticmethod
    async def _reap(proc, worker):
        worker.set_exit(await proc.wait())

    async def _spawn_python(self, cwd):
        zygote = await self._get_zygote()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mine, theirs = socket.socketpair()
        try:
            pid = await zygote.fork(cwd, [out_w, err_w, theirs.fileno()])
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            mine.close()
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
            theirs.close()
        worker = Worker("python", pid, out_r, err_r, mine)
        zygote.adopt(pid, worker)
        return worker

    async def _get_zygote(self):
        async with self.zygote_lock:
            if self.zygote is not None and not self.zygote.dead:
                return self.zygote
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, PY_WORKER, "--zygote-fd", str(theirs.fileno()),
                    stdin=asyncio.subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                    pass_fds=(theirs.fileno(),), cwd="/", env=self.env, start_new_session=True)
            except OSError as e:
                mine.close()
                raise Failure("internal", f"cannot start the Python zygote: {e}") from None
            finally:
                theirs.close()
            zygote = Zygote(mine)
            try:
                await asyncio.wait_for(asyncio.shield(zygote.ready), START_TIMEOUT)
            except (Failure, asyncio.TimeoutError):
                zygote.close()
                proc.kill()
                raise Failure("internal", "the Python zygote did not start") from None
            self.zygote = zygote
            return zygote

    async def run_cell(self, worker, run, code, envs, deadline, reseed, count):
        """Runs one cell in a worker: (kind, value) as Run.finished gives it, once the output
        written before the end has been passed on. `count` names the cell in tracebacks."""
        if deadline is not None:
            run.set_deadline(deadline)
        if run.client is not None:
            run.client.on_gone(run.interrupt)
        try:
            await worker.execute(run, code, envs, reseed, count)
            result = await run.finished
            worker.drain(final=True)
            if run.client is not None:
                run.flush()
            return result
        finally:
            worker.run = None
            run.close()

    # --- contexts ---

    def new_context(self, cid, language, cwd):
        if len(self.contexts) >= MAX_CONTEXTS:
            raise Failure("busy", f"{MAX_CONTEXTS} contexts exist: remove one first")
        ctx = Context(cid, language, cwd)
        self.contexts[cid] = ctx
        return ctx

    def forget(self, ctx):
        ctx.removed = True
        if self.contexts.get(ctx.id) is ctx:
            del self.contexts[ctx.id]

    def lookup(self, cid, create_default=False):
        """The context of an id; a default context that does not exist is made when asked
        (it was removed, or failed to start)."""
        ctx = self.contexts.get(cid)
        if ctx is None and create_default and cid in LANGUAGES:
            ctx = self.new_context(cid, cid, self.cwd)
        if ctx is None:
            raise Failure("not_found", f"no context {cid!r}")
        return ctx

    async def start(self, ctx):
        """(Re)starts a context's worker; the caller holds its lock. A context that never had
        a worker is forgotten if this fails."""
        fresh = ctx.generation == 0
        await self.stop(ctx)
        ctx.stale = False
        ctx.count = 0
        ctx.generation += 1
        try:
            ctx.worker = await self.spawn(ctx)
        except Failure:
            if fresh:
                self.forget(ctx)
            raise

    async def stop(self, ctx):
        worker, ctx.worker = ctx.worker, None
        if worker is not None:
            await worker.stop()

    async def start_defaults(self):
        async def start(language):
            ctx = self.new_context(language, language, self.cwd)
            async with ctx.lock:
                try:
                    await self.start(ctx)
                except Failure as f:
                    log(f"the default {language} context is not ready: {f.message}")

        await asyncio.gather(*(start(language) for language in LANGUAGES))

    async def shutdown(self):
        for ctx in list(self.contexts.values()):
            if ctx.worker is not None:
                ctx.worker.signal(signal.SIGKILL)
                ctx.worker.close()
        if self.zygote is not None:
            self.zygote.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def new_sandbox(self, sid):
        """Executions name their sandbox (SBX_SANDBOX_ID). A name not seen before means this
        service was copied into a new sandbox with a template or a snapshot, and Node.js with
        it: OpenSSL's random state (crypto.randomBytes, randomUUID, TLS) would be the same as in
        every other copy, and JavaScript cannot reseed it. So javascript workers that have run
        nothing yet are replaced by fresh processes, now in the background, or before their
        first execution if that comes first. Workers with state keep it (a fork of a sandbox
        that used them): restarting their context gives them fresh randomness."""
        self.sandbox_id = sid
        for ctx in self.contexts.values():
            if ctx.language == "javascript" and ctx.worker is not None and ctx.count == 0:
                ctx.stale = True
                task = self.loop.create_task(self.refresh(ctx))
                self.reapers.add(task)
                task.add_done_callback(self.reapers.discard)

    async def refresh(self, ctx):
        async with ctx.lock:
            if ctx.stale and not ctx.removed:
                await self.fresh_worker(ctx)

    async def fresh_worker(self, ctx):
        """Replaces a stale worker (the caller holds the context's lock)."""
        try:
            await self.start(ctx)
        except Failure as f:
            log(f"context {ctx.id}: a fresh worker did not start: {f.message}")

    # --- requests ---

    async def handle(self, reader, writer):
        client = Client(reader, writer)
        try:
            try:
                line = await reader.readline()
            except ValueError:
                client.fail("invalid", f"the request line is longer than {MAX_REQUEST} bytes")
                await client.linger(10)
                return
            except (ConnectionError, OSError):
                return
            if not line:
                return  # a connection without a request (a port check)
            try:
                try:
                    req = json.loads(line.decode("utf-8"))
                except (ValueError, RecursionError):
                    raise Failure("invalid", "the request is not a JSON object") from None
                if not isinstance(req, dict):
                    raise Failure("invalid", "the request is not a JSON object")
                await self.dispatch(req, client)
            except Failure as f:
                client.fail(f.code, f.message)
            except Exception:  # a bug of ours: answer, log, serve on
                log(f"request failed:\n{traceback.format_exc()}")
                client.fail("internal", "internal error in the interpreter service")
        finally:
            await client.finish()

    async def dispatch(self, req, client):
        op = req.get("op")
        if not isinstance(op, str):
            raise Failure("invalid", "op must be a string")
        if op == "execute":
            await self.execute(req, client)
        elif op == "create_context":
            ctx = await self.create_context(req)
            client.send({"type": "context", **ctx.info()})
        elif op == "list_contexts":
            contexts = [c.info() for c in self.contexts.values()]
            client.send({"type": "contexts", "contexts": contexts})
        elif op in ("restart_context", "remove_context", "interrupt"):
            cid = req.get("context")
            if not isinstance(cid, str):
                raise Failure("invalid", "context must be a string")
            await {"restart_context": self.restart_context, "remove_context": self.remove_context,
                   "interrupt": self.interrupt}[op](cid)
            client.send({"type": "ok"})
        elif op == "ping":
            client.send({"type": "ok"})
        else:
            raise Failure("invalid", f"unknown op {op!r}")

    async def create_context(self, req):
        language = check_language(opt_str(req, "language") or "python")
        cwd = opt_str(req, "cwd")
        if cwd is None:
            cwd = self.cwd
        else:
            if not cwd or "\0" in cwd:
                raise Failure("invalid", "cwd must be a non-empty path")
            cwd = os.path.normpath(os.path.join(self.cwd, cwd))
            if not os.path.isdir(cwd):
                raise Failure("not_found", f"no directory {cwd}")
        ctx = self.new_context(str(uuid.uuid4()), language, cwd)
        async with ctx.lock:
            await self.start(ctx)
        return ctx

    async def restart_context(self, cid):
        ctx = self.lookup(cid, create_default=True)
        generation = ctx.generation
        if ctx.run is not None:
            ctx.run.kill()  # its execution ends "restarted" and starts the new worker
        async with ctx.lock:
            if ctx.removed:
                raise Failure("not_found", f"context {cid!r} was removed")
            if ctx.generation == generation or ctx.worker is None:
                await self.start(ctx)

    async def remove_context(self, cid):
        ctx = self.contexts.get(cid)
        if ctx is None:
            if cid in LANGUAGES:
                return  # a default context that is not there: cleared already
            raise Failure("not_found", f"no context {cid!r}")
        self.forget(ctx)
        if ctx.run is not None:
            ctx.run.kill()
        async with ctx.lock:
            await self.stop(ctx)

    async def interrupt(self, cid):
        ctx = self.contexts.get(cid)
        if ctx is None and cid not in LANGUAGES:
            raise Failure("not_found", f"no context {cid!r}")
        if ctx is not None and ctx.run is not None:
            ctx.run.interrupt()

    async def execute(self, req, client):
        code = req.get("code")
        if not isinstance(code, str):
            raise Failure("invalid", "code must be a string")
        envs = check_envs(req.get("envs"))
        sid = envs.get("SBX_SANDBOX_ID")
        if sid and sid != self.sandbox_id:
            self.new_sandbox(sid)
        timeout_ms = req.get("timeout_ms")
        if timeout_ms is not None and (type(timeout_ms) is not int
                                       or not 0 <= timeout_ms <= MAX_TIMEOUT_MS):
            raise Failure("invalid", "timeout_ms must be a non-negative integer")
        cid = opt_str(req, "context")
        language = opt_str(req, "language")
        if language is not None:
            check_language(language)
        ctx = self.lookup(cid if cid is not None else language or "python", create_default=True)
        if language is not None and ctx.language != language:
            raise Failure("invalid",
                          f"context {ctx.id!r} is a {ctx.language} context, not {language}")

        # The timeout counts from the request: time spent waiting for the context counts.
        deadline = self.loop.time() + timeout_ms / 1000 if timeout_ms else None
        client.watch()
        if not await self.acquire(ctx, client, deadline):
            client.send(self.end(ctx, 0, timed_out=True))  # never ran (unless the client left)
            return
        try:
            await self.execute_locked(ctx, code, envs, deadline, client)
        finally:
            ctx.lock.release()

    async def acquire(self, ctx, client, deadline):
        """Waits for the context's turn; False if the client left or the deadline came first."""
        locking = asyncio.ensure_future(ctx.lock.acquire())
        leaving = asyncio.ensure_future(client.gone_event.wait())
        timeout = None if deadline is None else max(0.0, deadline - self.loop.time())
        try:
            await asyncio.wait({locking, leaving}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            leaving.cancel()
        if locking.done() and not client.gone:
            return True
        locking.cancel()
        try:
            await locking
        except asyncio.CancelledError:
            return False
        ctx.lock.release()  # it was acquired after all
        return False

    def end(self, ctx, count, interrupted=False, timed_out=False, restarted=False, exit_code=None):
        return {"type": "end", "context": ctx.id, "execution_count": count,
                "interrupted": interrupted, "timed_out": timed_out, "restarted": restarted,
                "exit_code": exit_code}

    async def execute_locked(self, ctx, code, envs, deadline, client):
        if ctx.removed:
            raise Failure("not_found", f"context {ctx.id!r} was removed")
        if ctx.stale:
            await self.fresh_worker(ctx)
        restarted = False
        if ctx.worker is None or ctx.worker.exit.done():
            restarted = ctx.worker is not None  # it died since the last execution: state lost
            await self.start(ctx)
        if client.gone:
            return
        ctx.count += 1
        count = ctx.count
        worker = ctx.worker
        reseed, worker.reseed = worker.reseed, False
        run = Run(worker, client)
        ctx.run = run
        try:
            kind, value = await self.run_cell(worker, run, code, envs, deadline, reseed, count)
        finally:
            ctx.run = None
        if kind == "died":
            restarted = True
            if not run.killed:
                client.send({"type": "error", "name": "WorkerDied", "value": describe_exit(value),
                             "traceback": ""})
        exit_code = None
        if ctx.language == "bash" and value is not None and (kind == "done" or value >= 0):
            exit_code = value  # the cell's status, or the status bash exited with
        client.send(self.end(ctx, count, run.interrupted, run.timed_out, restarted, exit_code))
        client.close()  # not waiting for a slow reader here: we hold the context
        if kind == "died" and not ctx.removed:  # a fresh worker before the next in line runs
            try:
                await self.start(ctx)
            except Failure as f:
                log(f"context {ctx.id}: restart failed: {f.message}")


async def serve(args):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Our own handlers (also for SIGINT, which may have been ignored when we were started):
    # the workers we start get these signals with their default action.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    service = Service(args.cwd)
    try:
        await service.start_defaults()
        server = await asyncio.start_server(service.handle, args.host, args.port, limit=MAX_REQUEST,
                                            reuse_address=True)
        port = server.sockets[0].getsockname()[1]
        say(f"listening on {args.host}:{port}", sys.stdout)
        await stop.wait()
        server.close()
    finally:
        await service.shutdown()


def main():
    parser = argparse.ArgumentParser(description="libsandbox code interpreter service")
    parser.add_argument("--port", type=int, default=49999, help="TCP port (0: any free one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--cwd", help="working directory of the default contexts (default: $HOME)")
    args = parser.parse_args()
    if args.cwd is None:
        home = os.environ.get("HOME")
        args.cwd = home if home and os.path.isdir(home) else os.getcwd()
    args.cwd = os.path.abspath(args.cwd)
    if not os.path.isdir(args.cwd):
        parser.error(f"--cwd {args.cwd}: not a directory")
    try:
        asyncio.run(serve(args))
    except OSError as e:  # the port is taken, ...
        log(f"error: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
