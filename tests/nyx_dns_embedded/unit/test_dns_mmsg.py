"""Batched UDP I/O (recvmmsg/sendmmsg through ctypes) on loopback: what one call
receives, who sent it, and that replies reach each sender."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from nyx_dns_embedded._mmsg import MSG_WAITFORONE, UdpBatch, available

pytestmark = pytest.mark.skipif(not available(), reason="no recvmmsg/sendmmsg in this libc")


@pytest.fixture(params=[(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], ids=["v4", "v6"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    family, host = request.param
    server = socket.socket(family, socket.SOCK_DGRAM)
    try:
        server.bind((host, 0))
    except OSError:
        server.close()
        pytest.skip(f"no {host} here")
    clients = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(3)]
    for c in clients:
        c.bind((host, 0))
        c.settimeout(5)
    server.settimeout(5)
    yield server, clients
    server.close()
    for c in clients:
        c.close()


def test_one_call_receives_what_is_queued_and_replies_reach_each_sender(
    pair: tuple[socket.socket, list[socket.socket]],
) -> None:
    server, clients = pair
    batch = UdpBatch(server, slots=4, size=64)
    dest = server.getsockname()
    for i, c in enumerate(clients):
        c.sendto(f"hello {i}".encode(), dest)
    clients[0].sendto(b"x" * 100, dest)  # longer than a slot: cut
    clients[1].sendto(b"fifth", dest)  # over the 4 slots: left for the next call
    got = batch.recv(MSG_WAITFORONE)
    assert got == 4
    datagrams = [bytes(batch.data[i * 64 : i * 64 + batch.lengths[i * 16 + 14]]) for i in range(4)]
    assert datagrams == [b"hello 0", b"hello 1", b"hello 2", b"x" * 64]
    sources = [batch.source(i) for i in range(4)]
    # as recvfrom gives them: (host, port), or for IPv6 (host, port, flowinfo, scope_id)
    assert sources == [c.getsockname() for c in clients] + [clients[0].getsockname()]
    if server.family == socket.AF_INET:
        assert batch.packed_source(0) == socket.inet_aton("127.0.0.1")
        assert batch.names32[1] == int.from_bytes(socket.inet_aton("127.0.0.1"), sys.byteorder)
    for i in range(4):
        assert batch.reply(i, f"answer {i}".encode())
    assert not batch.reply(0, b"y" * 65)  # does not fit a slot: the caller sends it itself
    assert batch.flush() == 4 and batch.queued == 0
    assert clients[0].recv(100) == b"answer 0"
    assert clients[1].recv(100) == b"answer 1"
    assert clients[2].recv(100) == b"answer 2"
    assert clients[0].recv(100) == b"answer 3"
    assert batch.recv(socket.MSG_DONTWAIT) == 1
    assert bytes(batch.data[: batch.lengths[14]]) == b"fifth"
    assert batch.recv(socket.MSG_DONTWAIT) == 0  # nothing queued: no error, no wait
    assert batch.flush() == 0


def test_a_full_send_queue_is_never_waited_for(
    pair: tuple[socket.socket, list[socket.socket]],
) -> None:
    server, clients = pair
    batch = UdpBatch(server, slots=8, size=2048)
    dest = server.getsockname()
    clients[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    clients[0].sendto(b"q", dest)
    assert batch.recv(MSG_WAITFORONE) == 1
    for _ in range(50):  # far more than the client's buffer holds: dropped, not blocked
        for _ in range(8):
            batch.reply(0, b"z" * 2000)
        batch.flush()
    assert clients[0].recv(4096) == b"z" * 2000
