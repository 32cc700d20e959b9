# SPDX-License-Identifier: Apache-2.0
"""Binding tests that boot no guest: library loading, struct layouts, error mapping, argument
checks (ctest label unit)."""
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import libsandbox
from libsandbox import _native as N
from libsandbox import exceptions as X

PKG = Path(libsandbox.__file__).resolve().parent
REPO = PKG.parents[2]


def _header() -> Path:
    d = os.environ.get("SBX_INCLUDE_DIR")
    h = Path(d) / "sandbox.h" if d else REPO / "include" / "sandbox.h"
    if not h.exists():
        pytest.skip(f"sandbox.h not found at {h} (set SBX_INCLUDE_DIR)")
    return h


def test_library_loading():
    """SBX_LIBRARY selects the library; a wrong one fails with a message naming it."""
    path = N.library_path()
    assert os.path.exists(path) or "/" not in path
    assert re.fullmatch(r"\d+\.\d+\.\d+", libsandbox.version())
    env = dict(os.environ, SBX_LIBRARY="/nonexistent/libsandbox.so", PYTHONPATH=str(PKG.parent))
    code = (
        "import libsandbox\n"
        "try:\n"
        "    libsandbox.version()\n"
        "except libsandbox.LibraryNotFoundException as e:\n"
        "    print('NOTFOUND', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "NOTFOUND" in out.stdout and "/nonexistent/libsandbox.so" in out.stdout
    # A directory in SBX_LIBRARY means libsandbox.so inside it.
    env["SBX_LIBRARY"] = os.path.dirname(os.path.realpath(path))
    if not os.path.exists(os.path.join(env["SBX_LIBRARY"], "libsandbox.so")):
        return
    out = subprocess.run(
        [sys.executable, "-c", "import libsandbox; print(libsandbox.version())"],
        env=env, capture_output=True, text=True,
    )
    assert out.returncode == 0 and out.stdout.strip() == libsandbox.version(), out.stderr


def test_every_public_function_is_bound():
    """Every SBX_API function of sandbox.h has a prototype and is used by the package."""
    text = _header().read_text()
    names = set(re.findall(r"^SBX_API\s+[^(]*?\b(sbx_[a-z_]+)\s*\(", text, re.M))
    assert len(names) > 50
    assert names == set(N._PROTOTYPES), names ^ set(N._PROTOTYPES)
    src = "".join(p.read_text() for p in PKG.glob("*.py") if p.name != "_native.py")
    src += (PKG / "_native.py").read_text().split("# --- finding and loading")[1]
    unused = sorted(n for n in names if n not in src)
    assert unused == [], f"declared but never called: {unused}"


def test_struct_layouts_match_c():
    """The ctypes structs have the sizes and field offsets a C compiler gives the header."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler to compare layouts with")
    h = _header()
    lines = ['#include <stddef.h>', '#include <stdio.h>', '#include "sandbox.h"', "int main(void){"]
    for name, cls in N.STRUCTS.items():
        lines.append(f'printf("{name} %zu\\n", sizeof({name}));')
        for f in cls._fields_:
            lines.append(f'printf("{name}.{f[0]} %zu\\n", offsetof({name}, {f[0]}));')
    lines.append("return 0;}")
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "l.c"), os.path.join(d, "l")
        Path(src).write_text("\n".join(lines))
        subprocess.run([cc, "-I", str(h.parent), src, "-o", exe], check=True)
        out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    want = dict(line.rsplit(" ", 1) for line in out.splitlines())
    for name, cls in N.STRUCTS.items():
        assert int(want[name]) == ctypes.sizeof(cls), name
        for f in cls._fields_:
            assert int(want[f"{name}.{f[0]}"]) == getattr(cls, f[0]).offset, f"{name}.{f[0]}"


def test_error_mapping():
    """Every SBX_E* code maps to a specific exception class keeping code, name, message."""
    codes = sorted(N.ERROR_NAMES)
    assert codes == list(range(-22, 0))
    for c in codes:
        cls = X.exception_class(c)
        assert cls is not X.SandboxException, N.ERROR_NAMES[c]
        e = X.from_code(c, "context")
        assert isinstance(e, libsandbox.SandboxException)
        assert e.code == c and e.code_name == N.ERROR_NAMES[c] and e.message == "context"
        assert N.ERROR_NAMES[c] in str(e)
        assert libsandbox.strerror(c)  # the library's own name
    assert X.exception_class(N.SBX_ENOENT) is libsandbox.NotFoundException
    assert X.exception_class(N.SBX_ETIMEDOUT) is libsandbox.TimeoutException
    assert X.exception_class(N.SBX_ENOSPC) is libsandbox.NotEnoughSpaceException
    assert X.exception_class(N.SBX_EINVAL) is libsandbox.InvalidArgumentException
    assert issubclass(libsandbox.SandboxDeadException, libsandbox.SandboxNotRunningException)
    assert issubclass(libsandbox.CommandTimeoutException, libsandbox.TimeoutException)
    assert issubclass(libsandbox.CommandTimeoutException, libsandbox.CommandExitException)
    # Without a message the library's name for the code is used.
    assert X.from_code(N.SBX_ENOENT).message == libsandbox.strerror(N.SBX_ENOENT)


def test_create_argument_errors():
    """Bad options fail before anything boots, with the C library's code and message."""
    with pytest.raises(libsandbox.InvalidArgumentException) as e:
        libsandbox.Sandbox.create(memory_mb=10)
    assert e.value.code == N.SBX_EINVAL and "memory" in e.value.message
    with pytest.raises(libsandbox.TemplateException) as e:
        libsandbox.Sandbox.create(rootfs="no-such-image")
    assert e.value.code == N.SBX_EIMAGE and "no-such-image" in e.value.message
    with tempfile.TemporaryDirectory() as d:
        with pytest.raises(libsandbox.TemplateException):
            libsandbox.Sandbox.create(image_dir=d)
    with pytest.raises(libsandbox.InvalidArgumentException):
        libsandbox.Sandbox.create(timeout=-1)
    with pytest.raises(libsandbox.InvalidArgumentException):
        libsandbox.Sandbox.create(envs={"A=B": "x"})
    with pytest.raises(libsandbox.InvalidArgumentException):
        libsandbox.Sandbox.create(cpu=0)
    # Hardening options reach the C library: its checks answer.
    with pytest.raises(libsandbox.InvalidArgumentException) as e:
        libsandbox.Sandbox.create(max_buffer_mb=70000)
    assert e.value.code == N.SBX_EINVAL and "max_buffer_mib" in e.value.message
    with pytest.raises(libsandbox.InvalidArgumentException) as e:
        libsandbox.Sandbox.create(cgroup="/sys/fs/cgroup")
    assert "isolated mode only" in e.value.message
    with pytest.raises(libsandbox.InvalidArgumentException):
        libsandbox.Sandbox.create(max_processes=0)
    with pytest.raises(libsandbox.NotFoundException):
        libsandbox.Sandbox.connect("nosuchsandbox")
    assert isinstance(libsandbox.Sandbox.list(), list)


def test_template_argument_errors():
    """template= names a template of the store (not an image); bad template and snapshot
    arguments fail before anything boots."""
    with tempfile.TemporaryDirectory() as d:
        with pytest.raises(libsandbox.NotFoundException) as e:
            libsandbox.Sandbox.create(template="no-such-template", template_dir=d)
        assert e.value.code == N.SBX_ENOENT and "no-such-template" in e.value.message
        with pytest.raises(libsandbox.InvalidArgumentException):
            libsandbox.Sandbox.create(template="x", rootfs="base")
        with pytest.raises(libsandbox.SandboxException):
            libsandbox.Sandbox.resume(os.path.join(d, "never-paused"))
        with pytest.raises(libsandbox.InvalidArgumentException):
            libsandbox.Sandbox.resume(os.path.join(d, "x"), network=False)
        with pytest.raises(libsandbox.InvalidArgumentException):
            libsandbox.Template.build("t", template_dir=d)  # no definition
        with pytest.raises(libsandbox.InvalidArgumentException):
            libsandbox.Template.build("t", dockerfile="D", dockerfile_text="FROM base", template_dir=d)
        with pytest.raises(libsandbox.InvalidArgumentException):
            libsandbox.Template.build("t", dockerfile_text="FROM base", tags="a,b", template_dir=d)
        with pytest.raises(libsandbox.InvalidArgumentException):
            libsandbox.Template.remove("")
        assert libsandbox.Template.list(os.path.join(d, "none")) == []
        with pytest.raises(libsandbox.NotFoundException):
            libsandbox.Template.remove("nope", template_dir=d)


def test_code_results():
    """run_code's results as the library hands them over: formats by E2B's names, parsed
    JSON, the main result's text, JSON of the whole execution."""
    from libsandbox.code import _result

    mimes = [b"text/plain", b"text/html", b"application/json", b"x-custom/type"]
    data = [b"42", b"<b>42</b>", b'{"a": [1, 2]}', b"raw"]
    r = N.sbx_code_result()
    r.is_main_result, r.nformats = 1, len(mimes)
    r.mime = N.StrArray([m.decode() for m in mimes]).ptr
    r.data = N.StrArray([d.decode() for d in data]).ptr
    res = _result(r)
    assert res.is_main_result and (res.text, res.html, res.png) == ("42", "<b>42</b>", None)
    assert res.json == {"a": [1, 2]} and res.data["x-custom/type"] == "raw"
    assert res.formats() == ["text", "html", "json", "x-custom/type"]
    other = libsandbox.Result(is_main_result=False, data={"image/png": "iVBORw0KGgo="})
    ex = libsandbox.Execution(results=[other, res])
    assert ex.text == "42" and libsandbox.Execution(results=[other]).text is None
    assert '"text/plain": "42"' in ex.to_json() and '"error": null' in ex.to_json()
    m = libsandbox.OutputMessage("line\n", 5, True)
    assert m == "line\n" and m.line == "line\n" and (m.timestamp, m.error) == (5, True)
