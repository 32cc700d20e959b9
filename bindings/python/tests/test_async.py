# SPDX-License-Identifier: Apache-2.0
"""AsyncSandbox in a real guest: output read on the event loop while other tasks run."""
import asyncio

import pytest

from libsandbox import CommandExitException
from libsandbox.aio import AsyncSandbox
from conftest import BOOT


def test_async_sandbox():
    async def main():
        async with await AsyncSandbox.create(**BOOT) as sbx:
            r = await sbx.commands.run("echo hi; echo there >&2")
            assert (r.stdout, r.stderr) == ("hi\n", "there\n")

            # Two commands stream at once, and the loop stays free for a ticker meanwhile.
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.05)
                    ticks += 1

            t = asyncio.create_task(ticker())
            got = {"a": [], "b": []}
            ra, rb = await asyncio.gather(
                sbx.commands.run("for i in 1 2 3; do echo a$i; sleep 0.3; done",
                                 on_stdout=got["a"].append),
                sbx.commands.run("for i in 1 2 3; do echo b$i; sleep 0.3; done",
                                 on_stdout=got["b"].append),
            )
            t.cancel()
            assert "".join(got["a"]) == ra.stdout == "a1\na2\na3\n"
            assert "".join(got["b"]) == rb.stdout == "b1\nb2\nb3\n"
            assert ticks >= 10  # the event loop was never blocked for long

            with pytest.raises(CommandExitException) as e:
                await sbx.commands.run("exit 5")
            assert e.value.exit_code == 5

            # Background handle: async iteration, stdin, kill.
            h = await sbx.commands.run("cat", background=True, stdin=True)
            await h.send_stdin("ping\n")
            async for out, err in h:
                assert out == "ping\n"
                break
            assert await h.kill()
            with pytest.raises(CommandExitException):
                await h.wait()

            # Cancelling a foreground run kills the command.
            task = asyncio.create_task(sbx.commands.run("sleep 30", tag="cancelled"))
            await asyncio.sleep(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            procs = [p for p in await sbx.commands.list() if p.tag == "cancelled"]
            for _ in range(50):
                if procs and not procs[0].running:
                    break
                await asyncio.sleep(0.2)
                procs = [p for p in await sbx.commands.list() if p.tag == "cancelled"]
            assert procs and not procs[0].running

            # Files and a watch on the loop.
            await sbx.files.make_dir("/tmp/aw")
            w = await sbx.files.watch_dir("/tmp/aw")
            await sbx.files.write("/tmp/aw/f.txt", "content")
            # write() goes through a temporary file renamed into place: wait for f.txt.
            names = []
            while "f.txt" not in names:
                names.append((await asyncio.wait_for(w.next(), 20)).name)
            w.stop()
            assert await sbx.files.read("/tmp/aw/f.txt") == "content"
            assert [e.name for e in await sbx.files.list("/tmp/aw")] == ["f.txt"]

            # A terminal.
            p = await sbx.pty.create((24, 80), cmd="echo from-a-tty")
            data = b""
            async for chunk in p:
                data += chunk
            assert b"from-a-tty" in data
            assert (await p.wait()).exit_code == 0
            assert await sbx.is_running()
        assert not await sbx.is_running()

    asyncio.run(main())
