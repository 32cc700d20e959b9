# SPDX-License-Identifier: Apache-2.0
"""sandbox.commands in a real guest: run, env/cwd/user, exit errors, streaming, background."""
import signal
import threading
import time

import pytest

from libsandbox import (
    CommandExitException,
    CommandHandle,
    CommandTimeoutException,
    NotFoundException,
    TimeoutException,
)
from conftest import new_sandbox


def test_run_env_cwd_user_stdin_and_errors():
    with new_sandbox(envs={"SANDBOX_WIDE": "everywhere"}) as sb:
        r = sb.commands.run("echo hello; echo oops >&2")
        assert (r.exit_code, r.stdout, r.stderr, r.error) == (0, "hello\n", "oops\n", None)
        assert r.pid > 0

        r = sb.commands.run(
            'echo "$SANDBOX_WIDE $PER_CALL $(pwd) $(id -un) $(id -u)"',
            envs={"PER_CALL": "just-here"},
            cwd="/tmp",
        )
        assert r.stdout == "everywhere just-here /tmp user 1000\n"
        assert sb.commands.run("id -u", user="root").stdout == "0\n"
        assert sb.commands.run("pwd").stdout == "/home/user\n"  # home by default

        # argv form: no shell in between.
        r = sb.commands.run(["python3", "-c", "import sys; print(sys.argv[1:])", "a b", "$X"])
        assert r.stdout == "['a b', '$X']\n"

        # stdin data, binary-safe, then EOF.
        data = bytes(range(256)) * 64
        r = sb.commands.run("sha256sum", stdin=data)
        import hashlib

        assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest()

        # A non-zero exit raises, carrying the status and the output.
        with pytest.raises(CommandExitException) as e:
            sb.commands.run("echo partial; echo bad >&2; exit 3")
        assert (e.value.exit_code, e.value.stdout, e.value.stderr) == (3, "partial\n", "bad\n")
        assert e.value.error == "exit status 3"

        with pytest.raises(NotFoundException):
            sb.commands.run("true", cwd="/no/such/dir")
        with pytest.raises(NotFoundException):
            sb.commands.run("true", user="nosuchuser")

        # The guest kills the process group when the timeout runs out.
        t0 = time.monotonic()
        with pytest.raises(CommandTimeoutException) as e:
            sb.commands.run("echo started; sleep 30", timeout=1.5)
        assert time.monotonic() - t0 < 15
        assert e.value.result.timed_out and e.value.stdout == "started\n"
        assert isinstance(e.value, TimeoutException)
        assert sb.commands.run("echo still fine").stdout == "still fine\n"


def test_streaming_callbacks_on_calling_thread():
    with new_sandbox() as sb:
        seen = []
        me = threading.get_ident()

        def out(text):
            assert threading.get_ident() == me
            seen.append(("out", text))

        def err(text):
            assert threading.get_ident() == me
            seen.append(("err", text))

        script = "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.3; done"
        r = sb.commands.run(script, on_stdout=out, on_stderr=err)
        assert r.stdout == "out1\nout2\nout3\n" and r.stderr == "err1\nerr2\nerr3\n"
        assert "".join(t for k, t in seen if k == "out") == r.stdout
        assert "".join(t for k, t in seen if k == "err") == r.stderr
        # Streamed as it came: several callbacks, not one at the end.
        assert len([k for k, _ in seen if k == "out"]) >= 2

        # An exception in a callback stops the command (it is killed) and propagates.
        class Stop(Exception):
            pass

        def stop_at_2(text):
            if "tick2" in text:
                raise Stop()

        with pytest.raises(Stop):
            sb.commands.run(
                "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done",
                on_stdout=stop_at_2,
                tag="ticker",
                timeout=60,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ticker = [p for p in sb.commands.list() if p.tag == "ticker"]
            if ticker and not ticker[0].running:
                break
            time.sleep(0.2)
        assert ticker and not ticker[0].running, ticker

        # Lots of output through callbacks arrives complete and in order.
        chunks = []
        r = sb.commands.run("seq 1 200000", on_stdout=chunks.append)
        assert "".join(chunks) == r.stdout
        assert r.stdout.splitlines()[-1] == "200000" and len(r.stdout.splitlines()) == 200000


def test_background_wait_kill_stdin_list_connect():
    with new_sandbox() as sb:
        # Background: iterate over output as it comes, then wait.
        h = sb.commands.run("for i in 1 2 3; do echo line$i; sleep 0.2; done; exit 4",
                            background=True)
        assert isinstance(h, CommandHandle) and h.pid > 0
        got = "".join(out for out, err in h if out)
        assert got == "line1\nline2\nline3\n"
        with pytest.raises(CommandExitException) as e:
            h.wait()
        assert e.value.exit_code == 4 and e.value.stdout == got

        # Kill a running background command; its wait reports the signal.
        h = sb.commands.run("sleep 60", background=True, tag="sleeper")
        procs = {p.pid: p for p in sb.commands.list()}
        assert procs[h.pid].running and procs[h.pid].tag == "sleeper"
        assert procs[h.pid].args[-1] == "sleep 60"
        assert h.kill() is True
        with pytest.raises(CommandExitException) as e:
            h.wait(timeout=20)
        assert e.value.result.signal == signal.SIGKILL
        assert sb.commands.kill(h.pid) is False  # already gone

        # wait(timeout) raises TimeoutException and the process goes on.
        h = sb.commands.run("sleep 2; echo done", background=True)
        with pytest.raises(TimeoutException):
            h.wait(timeout=0.3)
        assert h.wait(timeout=30).stdout == "done\n"

        # stdin kept open: send, close, the process sees EOF.
        h = sb.commands.run("cat; echo EOF-seen", background=True, stdin=True)
        h.send_stdin("first ")
        sb.commands.send_stdin(h.pid, b"second\n")  # by pid, through the live handle
        h.close_stdin()
        r = h.wait(timeout=30)
        assert r.stdout == "first second\nEOF-seen\n"

        # Disconnect, then connect again: output written meanwhile is not lost.
        h = sb.commands.run("echo before; sleep 1; echo after", background=True)
        pid = h.pid
        h.disconnect()
        time.sleep(1.5)
        h2 = sb.commands.connect(pid)
        r = h2.wait(timeout=30)
        assert r.stdout == "before\nafter\n" and h2.dropped == 0

        # Callbacks with a background handle's wait; signal() through the handle.
        h = sb.commands.run("trap 'echo got-term; exit 7' TERM; echo ready; "
                            "while true; do sleep 0.1; done", background=True)
        assert h.read(timeout=20) == ("stdout", b"ready\n")
        assert h.signal(signal.SIGTERM) is True
        lines = []
        with pytest.raises(CommandExitException) as e:
            h.wait(timeout=20, on_stdout=lines.append)
        assert e.value.exit_code == 7 and "".join(lines) == "got-term\n"

        with pytest.raises(NotFoundException):
            sb.commands.connect(999999)
