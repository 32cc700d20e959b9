# SPDX-License-Identifier: Apache-2.0
"""sandbox.pty and files.watch_dir in a real guest."""
import time

import pytest

from libsandbox import CommandExitException, FilesystemEventType, PtySize
from conftest import new_sandbox


def _read_until(h, marker: bytes, timeout: float = 30) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} in terminal output: {got[-500:]!r}"
        r = h.read(timeout=left)
        assert r is not None, f"terminal ended before {marker!r}: {got[-500:]!r}"
        got += r[1]
    return got


def test_pty_shell_keys_resize_exit():
    with new_sandbox() as sb:
        t = sb.pty.create(size=PtySize(rows=24, cols=80), cwd="/tmp", envs={"GREETING": "hi"})
        assert t.pid > 0
        t.send_stdin("echo $GREETING-$((6*7))-$(pwd)-$TERM\n")
        out = _read_until(t, b"hi-42-/tmp-xterm-256color")
        assert b"\r\n" in out  # a terminal: CR LF line ends

        t.send_stdin("stty size\n")
        _read_until(t, b"24 80")
        t.resize((30, 100))
        t.send_stdin("stty size\n")
        _read_until(t, b"30 100")
        sb.pty.resize(t.pid, PtySize(40, 120))  # by pid
        t.send_stdin("stty size; tty\n")
        _read_until(t, b"/dev/pts/")

        info = [p for p in sb.commands.list() if p.pid == t.pid][0]
        assert info.pty and info.running

        t.send_stdin("exit 3\n")
        with pytest.raises(CommandExitException) as e:
            t.wait(timeout=30)
        assert e.value.exit_code == 3

        # A command on a terminal, killed by pid; iteration yields bytes.
        t = sb.pty.create(size=(10, 40), cmd="echo tty-says-hi; sleep 60")
        first = next(iter(t))
        assert isinstance(first, bytes)
        if b"tty-says-hi" not in first:
            _read_until(t, b"tty-says-hi")
        assert sb.pty.kill(t.pid) is True
        with pytest.raises(CommandExitException):
            t.wait(timeout=30)


def test_watch_dir_events():
    with new_sandbox() as sb:
        sb.files.make_dir("/tmp/watched/sub")
        with sb.files.watch_dir("/tmp/watched", recursive=True) as w:
            assert w.get_new_events() == []
            sb.files.write("/tmp/watched/a.txt", "1")
            sb.commands.run("echo more >> /tmp/watched/sub/b.txt; rm /tmp/watched/a.txt")
            events = []
            deadline = time.monotonic() + 20
            want = {
                ("a.txt", FilesystemEventType.CREATE),
                ("sub/b.txt", FilesystemEventType.CREATE),
                ("a.txt", FilesystemEventType.REMOVE),
            }
            while not want <= {(e.name, e.type) for e in events} and time.monotonic() < deadline:
                e = w.next(timeout=1)
                if e is not None:
                    events.append(e)
            assert want <= {(e.name, e.type) for e in events}, events
            # Iteration yields events as they come.
            sb.commands.run("mkdir /tmp/watched/newdir")
            for e in w:
                if e.name == "newdir":
                    assert e.type == FilesystemEventType.CREATE
                    break
        assert w.closed
        # A non-recursive watch does not see the subdirectory.
        w = sb.files.watch_dir("/tmp/watched")
        sb.commands.run("touch /tmp/watched/sub/deep; touch /tmp/watched/top")
        seen = []
        deadline = time.monotonic() + 20
        while "top" not in seen and time.monotonic() < deadline:
            e = w.next(timeout=1)
            if e:
                seen.append(e.name)
        assert "top" in seen and not any("deep" in n for n in seen)
        w.stop()
