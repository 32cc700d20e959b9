# SPDX-License-Identifier: Apache-2.0
"""Guest networking through the binding: the NAT, the egress policy and its updates, DNS names,
and a sandbox without network (real guests; traffic stays on this machine)."""
import socket
import threading

import pytest

from conftest import new_sandbox
from libsandbox import CommandExitException, InvalidArgumentException


class Greeter:
    """A TCP server on this machine's 127.0.0.1 answering every connection with a greeting."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.sendall(f"hello {self.port}\n".encode())

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def fetch(sb, host: str, port: int) -> str:
    return sb.commands.run(
        f"timeout 20 bash -c 'exec 3<>/dev/tcp/{host}/{port} && cat <&3'", timeout=60
    ).stdout


def test_nat_policy_and_names():
    g = Greeter()
    try:
        with new_sandbox(host_loopback=True, hosts={"svc.test": "10.0.2.2"}) as sb:
            assert fetch(sb, "10.0.2.2", g.port) == f"hello {g.port}\n"
            assert fetch(sb, "svc.test", g.port) == f"hello {g.port}\n"
            sb.update_network(allow_internet_access=False)
            with pytest.raises(CommandExitException) as e:
                fetch(sb, "10.0.2.2", g.port)
            assert e.value.exit_code not in (0, 124)  # refused at once, not timed out
            sb.update_network(allow_internet_access=False, allow_out=[f"10.0.2.2:{g.port}"])
            assert fetch(sb, "10.0.2.2", g.port) == f"hello {g.port}\n"
            with pytest.raises(InvalidArgumentException) as e:
                sb.update_network(deny_out=["999.0.0.1"])
            assert "999.0.0.1" in str(e.value)
            st = sb.network_stats()
            assert st.tx_frames > 0 and st.rx_frames > 0 and st.blocked >= 1
    finally:
        g.close()


def test_network_off():
    with new_sandbox(network=False) as sb:
        assert sb.commands.run("ls /sys/class/net").stdout == "lo\n"
    with pytest.raises(InvalidArgumentException):
        new_sandbox(network=False, allow_internet_access=False)
    with pytest.raises(InvalidArgumentException):
        new_sandbox(network={"allow": ["1.2.3.4"]})


def test_get_host_reaches_a_guest_service():
    """E2B's get_host: a server bound to the guest's 127.0.0.1 reached from this machine."""
    import urllib.request

    with new_sandbox(network=False) as sb:
        sb.files.write("/tmp/www/index.html", "served from the guest\n")
        sb.commands.run(
            "python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp/www",
            background=True,
        )
        addr = sb.get_host(8000)
        assert addr.startswith("127.0.0.1:")
        assert sb.get_host(8000) == addr  # idempotent
        body = None
        for _ in range(100):  # until the server listens
            try:
                body = urllib.request.urlopen(f"http://{addr}/index.html", timeout=10).read()
                break
            except OSError:
                import time

                time.sleep(0.3)
        assert body == b"served from the guest\n"
        sb.unexpose(8000)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{addr}/index.html", timeout=5)
        with pytest.raises(InvalidArgumentException):
            sb.get_host(0)
