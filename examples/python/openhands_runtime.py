#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A runtime adapter in the shape of OpenHands' sandbox runtime, backed by libsandbox.

OpenHands drives its sandbox through a Runtime: run a shell command and get an observation
(output + exit code), copy files in, read and write files, list a workspace. This adapter
gives the same operations on a libsandbox microVM in this process, so an agent framework of
that shape can swap its Docker sandbox for a hardware-isolated one. The demo at the bottom
copies a small project in, runs its tests, lets the "agent" fix a bug, and runs them again.

    python3 examples/python/openhands_runtime.py
"""
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

try:
    import libsandbox
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python"))
    import libsandbox

from libsandbox import CommandExitException, Sandbox, SandboxException


# --- actions and observations, as OpenHands names them ---------------------------------------


@dataclass
class CmdRunAction:
    command: str
    timeout: Optional[float] = 120


@dataclass
class FileReadAction:
    path: str


@dataclass
class FileWriteAction:
    path: str
    content: str


@dataclass
class CmdOutputObservation:
    content: str  # stdout and stderr, interleaved by stream as the agent sees them
    exit_code: int
    command: str


@dataclass
class FileReadObservation:
    content: str
    path: str


@dataclass
class FileWriteObservation:
    content: str
    path: str


@dataclass
class ErrorObservation:
    content: str


Observation = Union[CmdOutputObservation, FileReadObservation, FileWriteObservation, ErrorObservation]


class LibsandboxRuntime:
    """OpenHands-style runtime: one sandbox, a workspace directory, observations back."""

    def __init__(self, workspace: str = "/workspace", template: Optional[str] = None, **sandbox_options):
        self.workspace = workspace
        self.sandbox = Sandbox.create(template=template, **sandbox_options)
        # The workspace belongs to the default user, like OpenHands' /workspace.
        self.sandbox.commands.run(
            f"mkdir -p {shlex.quote(workspace)} && chown user: {shlex.quote(workspace)}", user="root"
        )

    def _abs(self, path: str) -> str:
        return path if path.startswith("/") else f"{self.workspace}/{path}"

    def run(self, action: Union[CmdRunAction, str]) -> Observation:
        """Runs a shell command in the workspace."""
        if isinstance(action, str):
            action = CmdRunAction(action)
        try:
            r = self.sandbox.commands.run(action.command, cwd=self.workspace, timeout=action.timeout)
            out, code = r.stdout + r.stderr, r.exit_code
        except CommandExitException as e:  # a failing command is an observation, not an error
            out, code = e.stdout + e.stderr, e.exit_code
            if e.result.timed_out:
                out += f"\n[command timed out after {action.timeout} s]"
        except SandboxException as e:
            return ErrorObservation(f"could not run {action.command!r}: {e}")
        return CmdOutputObservation(content=out, exit_code=code, command=action.command)

    def read(self, action: Union[FileReadAction, str]) -> Observation:
        path = self._abs(action if isinstance(action, str) else action.path)
        try:
            return FileReadObservation(content=self.sandbox.files.read(path), path=path)
        except SandboxException as e:
            return ErrorObservation(f"cannot read {path}: {e}")

    def write(self, action: Union[FileWriteAction, str], content: Optional[str] = None) -> Observation:
        if isinstance(action, str):
            action = FileWriteAction(action, content or "")
        path = self._abs(action.path)
        try:
            self.sandbox.files.write(path, action.content)
            return FileWriteObservation(content=f"wrote {len(action.content)} characters", path=path)
        except SandboxException as e:
            return ErrorObservation(f"cannot write {path}: {e}")

    def copy_to(self, host_src: str, sandbox_dest: str, recursive: bool = False) -> None:
        """Copies a host file (or, with recursive, a directory) into sandbox_dest, which is
        a directory: the source keeps its name, as with OpenHands."""
        src = Path(host_src)
        if src.is_dir() and not recursive:
            raise ValueError(f"{host_src} is a directory: pass recursive=True")
        dest = f"{self._abs(sandbox_dest).rstrip('/')}/{src.name}"
        self.sandbox.files.copy_in(src, dest)

    def copy_from(self, path: str) -> Path:
        """Copies a sandbox file or directory out to a new host temporary directory."""
        path = self._abs(path)
        dest = Path(tempfile.mkdtemp(prefix="sandbox-copy-")) / Path(path).name
        self.sandbox.files.copy_out(path, dest)
        return dest

    def list_files(self, path: Optional[str] = None) -> List[str]:
        """Names in a directory (the workspace by default), directories with a trailing /."""
        entries = self.sandbox.files.list(self._abs(path) if path else self.workspace)
        return sorted(e.name + ("/" if e.type == libsandbox.FileType.DIR else "") for e in entries)

    def close(self) -> None:
        self.sandbox.kill()

    def __enter__(self) -> "LibsandboxRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- demo ------------------------------------------------------------------------------------

BUGGY = """def add(a, b):
    return a - b
"""

TESTS = """import unittest
from calc import add

class T(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)

if __name__ == "__main__":
    unittest.main()
"""


def show(label: str, obs: Observation) -> None:
    print(f"--- {label}: {type(obs).__name__}")
    for k, v in vars(obs).items():
        text = str(v).rstrip()
        print(f"    {k}: {text if len(text) < 2000 else text[:2000] + ' ...'}")


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        project = Path(d, "project")
        project.mkdir()
        (project / "calc.py").write_text(BUGGY)
        (project / "test_calc.py").write_text(TESTS)

        with LibsandboxRuntime(timeout=600, memory_mb=256, boot_timeout=120) as rt:
            rt.copy_to(str(project), "/workspace", recursive=True)
            print("workspace:", rt.list_files())
            print("project:", rt.list_files("project"))
            first = rt.run(CmdRunAction("cd project && python3 -B -m unittest -q 2>&1"))
            show("tests before the fix", first)
            show("read", rt.read("project/calc.py"))
            fixed = rt.read("project/calc.py").content.replace("a - b", "a + b")
            show("write", rt.write(FileWriteAction("project/calc.py", fixed)))
            second = rt.run("cd project && python3 -B -m unittest -q 2>&1")
            show("tests after the fix", second)
            show("missing file", rt.read("project/nope.py"))
            back = rt.copy_from("project")
            print("copied back:", sorted(p.name for p in back.iterdir()))
            ok = (
                isinstance(first, CmdOutputObservation) and first.exit_code != 0
                and isinstance(second, CmdOutputObservation) and second.exit_code == 0
                and "a + b" in (back / "calc.py").read_text()
            )
    print("openhands_runtime: demo", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
