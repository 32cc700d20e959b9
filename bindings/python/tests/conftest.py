# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: the package from this source tree and small, patient guests."""
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package source, also without PYTHONPATH

import libsandbox  # noqa: E402

#: Options every guest-booting test uses: a small guest and a generous boot timeout
#: (inside the emulated KVM host everything is slow).
BOOT = dict(memory_mb=256, boot_timeout=120)
if os.environ.get("SBX_TEST_CONSOLE") == "1":
    BOOT["console"] = 2


def new_sandbox(**kw):
    opts = dict(BOOT)
    opts.update(kw)
    return libsandbox.Sandbox.create(**opts)


@pytest.fixture
def sandbox():
    """A fresh sandbox of the base template (Debian, bash, python3, user `user`)."""
    sb = new_sandbox()
    try:
        yield sb
    finally:
        sb.kill()
