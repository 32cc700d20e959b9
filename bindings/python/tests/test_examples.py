# SPDX-License-Identifier: Apache-2.0
"""The Python examples (examples/python) run end to end in a real guest and say what they should."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "python"


def _run(name: str) -> str:
    script = EXAMPLES / name
    if not script.exists():
        pytest.skip(f"{script} is not in this tree")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                       timeout=500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def test_agent_loop_example():
    out = _run("agent_loop.py")
    assert "agent_loop: 6 steps, 2 failed, 13 messages" in out, out[-3000:]
    assert "primes: [2, 3, 5, 7, 11" in out
    assert "ZeroDivisionError" in out  # the traceback went back to the model
    assert "mean is 3.875 median is 3.5" in out  # the fix ran on the state of step 2
    assert "characters omitted" in out and "row 49999: 2499900001" in out  # shortened output
    assert "warning: nothing to do" in out and "exit code 2" in out


def test_openhands_runtime_example():
    out = _run("openhands_runtime.py")
    assert "openhands_runtime: demo ok" in out, out[-3000:]
    assert "workspace: ['project/']" in out
    assert "FAILED (failures=1)" in out and "AssertionError: -1 != 5" in out
    assert "exit_code: 0" in out and "cannot read /workspace/project/nope.py" in out
    assert "copied back: ['calc.py', 'test_calc.py']" in out
