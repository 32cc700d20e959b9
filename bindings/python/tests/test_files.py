# SPDX-License-Identifier: Apache-2.0
"""sandbox.files in a real guest: round trips (text, bytes, streams of MiBs), metadata,
names, errors, host<->guest tree copies."""
import hashlib
import io
import os
import tempfile
from pathlib import Path

import pytest

from libsandbox import (
    AlreadyExistsException,
    DirectoryNotEmptyException,
    FileType,
    IsADirectoryException,
    NotFoundException,
    WriteInfo,
)
from conftest import new_sandbox


def _pattern(n: int) -> bytes:
    """n reproducible, non-repeating-looking bytes."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(i.to_bytes(8, "little")).digest()
        i += 1
    return bytes(out[:n])


def test_round_trips():
    with new_sandbox() as sb:
        f = sb.files
        text = "héllo wörld ✓\nline 2\n"
        info = f.write("notes/hello.txt", text)  # relative: under /home/user, parents made
        assert isinstance(info, WriteInfo) and info.name == "hello.txt"
        assert f.read("notes/hello.txt") == text
        assert f.read("/home/user/notes/hello.txt", format="bytes") == text.encode()
        assert sb.commands.run("cat /home/user/notes/hello.txt").stdout == text

        binary = bytes(range(256)) * 4
        f.write("/tmp/bin", binary)
        assert f.read("/tmp/bin", format="bytes") == binary
        assert f.read("/tmp/bin", format="bytes", offset=10, length=20) == binary[10:30]

        # Several MiB, streamed both ways in bounded memory, checked inside the guest too.
        big = _pattern(5 * 1024 * 1024 + 123)
        f.write("/tmp/big", io.BytesIO(big))  # a file object is streamed
        assert sb.commands.run("sha256sum /tmp/big").stdout.split()[0] == (
            hashlib.sha256(big).hexdigest()
        )
        with f.read("/tmp/big", format="stream") as r:
            assert r.size == len(big)
            h = hashlib.sha256()
            chunks = 0
            for c in r:
                h.update(c)
                chunks += 1
        assert h.hexdigest() == hashlib.sha256(big).hexdigest() and chunks > 1
        assert f.read("/tmp/big", format="bytes") == big

        # Streaming writer: append mode, mode bits, commit makes it visible.
        with f.open_write("/tmp/log", mode=0o600) as w:
            w.write("a\n")
            w.write(b"b\n")
        with f.open_write("/tmp/log", append=True) as w:
            w.write("c\n")
        assert f.read("/tmp/log") == "a\nb\nc\n"
        assert f.get_info("/tmp/log").permissions == "rw-------"
        # An exception inside the writer abandons the write: the target is untouched.
        with pytest.raises(RuntimeError):
            with f.open_write("/tmp/log") as w:
                w.write("replacement")
                raise RuntimeError("abandon")
        assert f.read("/tmp/log") == "a\nb\nc\n"

        # A list of files; an iterable of chunks; another owner.
        infos = f.write([{"path": "/tmp/m/1", "data": "one"}, {"path": "/tmp/m/2", "data": b"two"}])
        assert [i.path for i in infos] == ["/tmp/m/1", "/tmp/m/2"]
        f.write("/tmp/m/3", (bytes([i]) * 1000 for i in range(10)))
        assert f.read("/tmp/m/3", format="bytes") == b"".join(bytes([i]) * 1000 for i in range(10))
        f.write("/tmp/rootfile", "x", user="root")
        assert f.get_info("/tmp/rootfile").owner == "root"
        assert f.get_info("/tmp/m/1").owner == "user"


def test_metadata_names_errors_and_copies():
    with new_sandbox() as sb:
        f = sb.files
        assert f.make_dir("/tmp/w/a/b") is True
        assert f.make_dir("/tmp/w/a/b") is False
        f.write("/tmp/w/a/file.txt", "12345")
        sb.commands.run("ln -s file.txt /tmp/w/a/link")

        names = {(e.path, e.type) for e in f.list("/tmp/w", depth=3)}
        assert names == {
            ("/tmp/w/a", FileType.DIR),
            ("/tmp/w/a/b", FileType.DIR),
            ("/tmp/w/a/file.txt", FileType.FILE),
            ("/tmp/w/a/link", FileType.SYMLINK),
        }
        assert [e.name for e in f.list("/tmp/w")] == ["a"]  # depth 1 by default

        i = f.get_info("/tmp/w/a/file.txt")
        assert (i.name, i.type, i.size, i.owner, i.group) == ("file.txt", FileType.FILE, 5, "user", "user")
        assert i.permissions == "rw-r--r--" and i.mode == 0o644
        assert i.modified_time.tzinfo is not None
        assert f.get_info("/tmp/w/a/link").symlink_target == "file.txt"

        assert f.exists("/tmp/w/a/file.txt") and not f.exists("/tmp/w/nope")
        moved = f.rename("/tmp/w/a/file.txt", "/tmp/w/moved.txt")
        assert moved.path == "/tmp/w/moved.txt" and moved.size == 5
        assert not f.exists("/tmp/w/a/file.txt")

        with pytest.raises(NotFoundException) as e:
            f.read("/tmp/w/nope")
        assert "/tmp/w/nope" in str(e.value) and e.value.code_name == "SBX_ENOENT"
        with pytest.raises(NotFoundException):
            f.get_info("/nope")
        with pytest.raises(NotFoundException):
            f.list("/nope")
        with pytest.raises(IsADirectoryException):
            f.read("/tmp/w")
        with pytest.raises(AlreadyExistsException):
            f.make_dir("/tmp/w/moved.txt")
        with pytest.raises(DirectoryNotEmptyException):
            f.remove("/tmp/w/a", recursive=False)
        f.remove("/tmp/w/a")  # recursive by default
        assert not f.exists("/tmp/w/a")
        f.remove("/tmp/w/moved.txt")
        assert f.list("/tmp/w") == []

        # Trees between host and guest, with progress and modes.
        with tempfile.TemporaryDirectory() as d:
            src = Path(d, "src")
            (src / "sub").mkdir(parents=True)
            (src / "a.txt").write_text("alpha")
            (src / "sub" / "run.sh").write_text("#!/bin/sh\necho ran\n")
            os.chmod(src / "sub" / "run.sh", 0o755)
            (src / "blob").write_bytes(_pattern(3 << 20))
            progress = []
            f.copy_in(src, "/tmp/tree", on_progress=lambda b, n: progress.append((b, n)))
            assert progress and progress[-1][1] >= 3 and progress[-1][0] >= 3 << 20
            assert sb.commands.run("/tmp/tree/sub/run.sh").stdout == "ran\n"
            assert f.read("/tmp/tree/a.txt") == "alpha"

            sb.commands.run("echo made-inside > /tmp/tree/sub/new.txt")
            f.download_dir("/tmp/tree", Path(d, "back"))
            back = Path(d, "back")
            assert (back / "sub" / "new.txt").read_text() == "made-inside\n"
            assert (back / "blob").read_bytes() == (src / "blob").read_bytes()
            assert os.stat(back / "sub" / "run.sh").st_mode & 0o777 == 0o755
            with pytest.raises(NotFoundException):
                f.copy_out("/tmp/no-such-tree", Path(d, "x"))
