"""`free_port` offers server ports that outgoing connections cannot take meanwhile."""

from __future__ import annotations

import socket

from fnrelay.devstack import processes
from fnrelay.devstack.processes import free_port


def _ephemeral_range() -> tuple[int, int]:
    low, high = processes.EPHEMERAL_RANGE.read_text().split()
    return int(low), int(high)


def test_a_free_port_lies_below_the_ephemeral_range_and_binds():
    low, _ = _ephemeral_range()
    ports = {free_port() for _ in range(50)}
    assert all(processes.LOWEST <= p < low for p in ports)
    assert len(ports) > 1  # chosen at random: two workers rarely pick the same one
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))


def test_a_listening_port_and_an_excluded_one_are_never_offered(monkeypatch):
    first = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", first))
        busy.listen()
        # A range of three ports: one listened on, one excluded, one free.
        monkeypatch.setattr(processes, "_server_port_range", lambda: (first, first + 2))
        offered = {free_port(exclude=[first + 1]) for _ in range(20)}
    assert offered == {first + 2}


def test_outgoing_connections_take_no_port_free_port_offers():
    """What a chosen port is protected from: the kernel's choice of a client's local port."""
    low, high = _ephemeral_range()
    with socket.socket() as server:
        server.bind(("127.0.0.1", free_port()))
        server.listen()
        clients = [socket.create_connection(server.getsockname()) for _ in range(20)]
        try:
            assert all(low <= c.getsockname()[1] <= high for c in clients)
        finally:
            for c in clients:
                c.close()
