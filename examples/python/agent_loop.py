#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""An agent loop: code an LLM wrote runs in one sandbox, its output and errors go back to it.

No model and no network are needed: the "model" is a fixed list of Python snippets, as an LLM
would produce them (one raises, one prints a lot, a later one relies on state an earlier one
left behind, and one fixes the error). Each snippet is written to a file in the sandbox and
run with python3; the observation fed back is the exit status, stdout and stderr, shortened
the way an agent framework shortens tool output before it goes into the context window.

    python3 examples/python/agent_loop.py        (libsandbox installed, or run from the repo)
"""
import os
import sys
import textwrap
from typing import Dict, List

try:
    from libsandbox import CommandExitException, Sandbox
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python"))
    from libsandbox import CommandExitException, Sandbox

# What the "LLM" answers, turn by turn.
SNIPPETS: List[str] = [
    # 1: plain computation
    """
    import platform
    primes = [n for n in range(2, 60) if all(n % d for d in range(2, n))]
    print("python", platform.python_version(), "primes:", primes)
    """,
    # 2: leaves state behind for a later turn (files persist in the sandbox)
    """
    import json
    data = {"name": "report", "values": [3, 1, 4, 1, 5, 9, 2, 6]}
    with open("/home/user/data.json", "w") as f:
        json.dump(data, f)
    print("saved", len(data["values"]), "values")
    """,
    # 3: raises: the traceback goes back to the model
    """
    import json
    values = json.load(open("/home/user/data.json"))["values"]
    print("mean is", sum(values) / len([v for v in values if v > 100]))
    """,
    # 4: the model fixes its mistake
    """
    import json, statistics
    values = json.load(open("/home/user/data.json"))["values"]
    print("mean is", statistics.mean(values), "median is", statistics.median(values))
    """,
    # 5: prints a lot: the observation is shortened
    """
    for i in range(50000):
        print(f"row {i}: {i * i}")
    """,
    # 6: stderr and a non-zero exit without a traceback
    """
    import sys
    print("checking inputs")
    print("warning: nothing to do", file=sys.stderr)
    sys.exit(2)
    """,
]

MAX_OBSERVATION = 2000  # characters of output the "model" gets back per stream


def shorten(text: str, limit: int = MAX_OBSERVATION) -> str:
    """Keeps the head and the tail of long output, as agent frameworks do."""
    if len(text) <= limit:
        return text
    head, tail = text[: limit // 2], text[-limit // 2 :]
    return f"{head}\n... [{len(text) - limit} characters omitted] ...\n{tail}"


def run_snippet(sandbox: Sandbox, step: int, code: str) -> Dict[str, object]:
    """Runs one snippet and returns the observation for the model."""
    path = f"/home/user/agent/step_{step}.py"
    sandbox.files.write(path, textwrap.dedent(code).lstrip())
    try:
        r = sandbox.commands.run(f"python3 {path}", timeout=60)
        exit_code, stdout, stderr = r.exit_code, r.stdout, r.stderr
    except CommandExitException as e:  # non-zero exit: still an observation, not a crash
        exit_code, stdout, stderr = e.exit_code, e.stdout, e.stderr
    return {
        "exit_code": exit_code,
        "stdout": shorten(stdout),
        "stderr": shorten(stderr),
        "stdout_chars": len(stdout),
    }


def main() -> int:
    history: List[Dict[str, str]] = [
        {"role": "system", "content": "You write Python; I run it and show you the result."}
    ]
    failed = 0
    with Sandbox.create(timeout=600, memory_mb=256, boot_timeout=120) as sandbox:
        print(f"sandbox {sandbox.sandbox_id} ({sandbox.get_info().os_name})")
        for step, code in enumerate(SNIPPETS, 1):
            history.append({"role": "assistant", "content": code})
            obs = run_snippet(sandbox, step, code)
            if obs["exit_code"] != 0:
                failed += 1
            feedback = (
                f"exit code {obs['exit_code']}\n"
                f"stdout ({obs['stdout_chars']} characters):\n{obs['stdout']}"
                + (f"\nstderr:\n{obs['stderr']}" if obs["stderr"] else "")
            )
            history.append({"role": "tool", "content": feedback})
            print(f"=== step {step}: model wrote ===")
            print(textwrap.dedent(code).strip())
            print(f"--- step {step}: fed back ---")
            print(feedback.rstrip())
    print(f"agent_loop: {len(SNIPPETS)} steps, {failed} failed, {len(history)} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
