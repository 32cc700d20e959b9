# SPDX-License-Identifier: Apache-2.0
"""Ctrl-C in a real guest: SIGINT during a blocking call raises KeyboardInterrupt promptly,
kills the command, and leaves the sandbox usable."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from conftest import new_sandbox
sb = new_sandbox()
for phase in ("exec", "callbacks", "wait", "file"):
    print("READY", phase, flush=True)
    t0 = time.monotonic()
    try:
        if phase == "exec":
            sb.commands.run("sleep 30", timeout=60)
        elif phase == "callbacks":
            sb.commands.run("while true; do echo tick; sleep 0.1; done", on_stdout=lambda s: None,
                            timeout=60, tag="cb")
        elif phase == "wait":
            sb.commands.run("sleep 30", background=True, tag="bg").wait()
        else:
            with sb.files.watch_dir("/tmp") as w:
                w.next(timeout=60)
        print("NOT INTERRUPTED", phase, flush=True)
    except KeyboardInterrupt:
        print("INTERRUPTED %s %.1f" % (phase, time.monotonic() - t0), flush=True)
    print("AFTER", phase, sb.commands.run("echo usable").stdout.strip(), flush=True)
running = [p.tag for p in sb.commands.list() if p.running]
print("RUNNING", running, flush=True)
sb.kill()
print("DONE", flush=True)
"""


def test_ctrl_c_interrupts_blocking_calls():
    here = Path(__file__).resolve().parent
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(here)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parent), str(here)])),
    )
    lines = []
    try:
        for _ in range(4):
            line = p.stdout.readline()
            lines.append(line)
            assert line.startswith("READY"), (lines, p.stderr.read() if p.poll() is not None else "")
            time.sleep(1.5)  # the call is blocking by now
            p.send_signal(signal.SIGINT)
            for _ in range(2):
                lines.append(p.stdout.readline())
        rest, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    lines += rest.splitlines(keepends=True)
    text = "".join(lines)
    assert p.returncode == 0, text + err
    for phase in ("exec", "callbacks", "wait", "file"):
        assert f"INTERRUPTED {phase} " in text, text + err
        took = float(text.split(f"INTERRUPTED {phase} ")[1].split()[0])
        assert took < 8, text
        assert f"AFTER {phase} usable" in text, text + err
    # Foreground commands died with the interrupt; the background one was only detached.
    assert "RUNNING ['bg']" in text, text
    assert "DONE" in text
