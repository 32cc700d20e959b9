# SPDX-License-Identifier: Apache-2.0
"""Sandbox lifecycle in a real guest: info, metadata, listing, metrics, lifetime, kill."""
import datetime
import os
import threading
import time

import pytest

from libsandbox import (
    InterruptedException,
    Sandbox,
    SandboxDeadException,
    SandboxNotRunningException,
)
from conftest import new_sandbox


def test_info_metadata_list_metrics():
    with new_sandbox(metadata={"owner": "tests", "purpose": "info"}, cpu=2, timeout=600) as sb:
        assert sb.sandbox_id.isalnum() and sb.sandbox_id == sb.sandbox_id.lower()
        assert sb.is_running()
        info = sb.get_info()
        assert info.sandbox_id == sb.sandbox_id and info.template_id == "base"
        assert info.metadata == {"owner": "tests", "purpose": "info"} == sb.metadata
        assert info.state == "running" and info.cpu_count == 2 and info.memory_mb == 256
        assert info.guest_cpus == 2 and info.envd_version and info.kernel_release
        assert "Debian" in info.os_name
        assert info.started_at is not None and info.end_at is not None
        life = (info.end_at - info.started_at).total_seconds()
        assert 590 < life < 700, life
        assert info.boot_time > 0

        listed = {l.sandbox_id: l for l in Sandbox.list()}
        me = listed[sb.sandbox_id]
        assert me.pid == os.getpid() and me.metadata["owner"] == "tests"
        assert me.cpu_count == 2 and me.memory_mb == 256
        assert Sandbox.connect(sb.sandbox_id) is sb

        sb.set_timeout(0)  # no limit any more
        assert sb.get_info().end_at is None
        sb.set_timeout(1000)
        end = sb.get_info().end_at
        assert end is not None and end > datetime.datetime.now(datetime.timezone.utc)

        m = sb.get_metrics()
        assert m.cpu_count == 2 and m.mem_total > 100 << 20 and 0 < m.mem_used < m.mem_total
        assert m.disk_total > 0 and 0 < m.disk_used <= m.disk_total and m.processes >= 1
        sb.commands.run("timeout 1 sh -c 'while :; do :; done' || true")
        m2 = sb.get_metrics()
        assert m2.cpu_busy_ms > m.cpu_busy_ms and m2.cpu_used_pct > 0
        assert isinstance(sb.console(), str)
        sb.ping()
    assert sb.state == "killed" and not sb.is_running()
    assert sb.sandbox_id not in {l.sandbox_id for l in Sandbox.list()}


def test_lifetime_kill_and_interrupt():
    # The lifetime runs out: the sandbox stops on its own, calls fail with SandboxDead.
    with new_sandbox(timeout=600) as sb:
        sb.set_timeout(2)
        assert sb.commands.run("echo alive").stdout == "alive\n"
        time.sleep(4)
        assert not sb.is_running()
        with pytest.raises(SandboxDeadException):
            sb.commands.run("echo too late")
    sb.kill()  # idempotent

    sb = new_sandbox(timeout=None)
    assert sb.get_info().end_at is None
    # interrupt() from another thread makes a blocking call raise InterruptedException and
    # leaves the sandbox usable.
    threading.Timer(1.0, sb.interrupt).start()
    t0 = time.monotonic()
    with pytest.raises(InterruptedException):
        sb.commands.run("sleep 30")
    assert time.monotonic() - t0 < 10
    assert sb.commands.run("echo usable").stdout == "usable\n"

    # kill() from another thread interrupts a blocking call and frees the sandbox.
    threading.Timer(1.0, sb.kill).start()
    t0 = time.monotonic()
    with pytest.raises(SandboxNotRunningException):
        sb.commands.run("sleep 30")
    assert time.monotonic() - t0 < 10
    with pytest.raises(SandboxNotRunningException):
        sb.files.read("/etc/hostname")
    assert not sb.is_running() and sb.state == "killed"
