"""Connecting keeps to the run's cut-off: TCP connect, TLS handshake and greeting.

Each case uses a loopback listener that never gets as far as POP3 (a full
accept queue, a peer that never answers the TLS ClientHello, a server that
never greets), a POP3_TIMEOUT_SECONDS of 30 s and half a second left in the
run. The session must fail with ConnectError because the run is out of time;
the generous bound on how long that takes only tells the two limits apart.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from tests.support.local_hosts import LOCAL_SERVERS

from pop3_ingest.config import MailboxConfig
from pop3_ingest.errors import ConnectError
from pop3_ingest.pop3 import Pop3Mailbox

TIMEOUT = 30.0
TIME_LEFT = 0.5
# Well under TIMEOUT: reaching it means the 30 s timeout, not the cut-off, was waited for.
WELL_BEFORE_THE_TIMEOUT = 10.0


def config(port: int, tls: str = "none") -> MailboxConfig:
    return MailboxConfig.from_secret(
        {"host": "127.0.0.1", "port": port, "tls": tls, "username": "u", "password": "p"}
    )


@contextlib.contextmanager
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def full_accept_queue() -> Iterator[int]:
    """A port whose listener never accepts and whose queue is full: a connect hangs."""
    with listener() as server, contextlib.ExitStack() as stack:
        port = server.getsockname()[1]
        for _ in range(16):
            filler = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            filler.settimeout(0.3)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break  # the queue is full: the next SYN is dropped too
        else:
            pytest.skip("the kernel kept accepting connections into the queue")
        yield port


def enter(mailbox: Pop3Mailbox) -> ConnectError:
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        mailbox.__enter__()
    assert time.monotonic() - started < WELL_BEFORE_THE_TIMEOUT
    return caught.value


def test_a_tcp_connect_that_hangs_is_cut_off_when_the_run_is_out_of_time() -> None:
    with full_accept_queue() as port:
        error = enter(
            Pop3Mailbox(
                config(port), TIMEOUT, time_left=lambda: TIME_LEFT, address_policy=LOCAL_SERVERS
            )
        )
    assert "out of time" in str(error)


def test_a_tls_handshake_that_hangs_is_cut_off_when_the_run_is_out_of_time() -> None:
    with listener() as server:
        port = server.getsockname()[1]
        # Accepted (by the queue), and the ClientHello is never answered.
        error = enter(
            Pop3Mailbox(
                config(port, "implicit"),
                TIMEOUT,
                time_left=lambda: TIME_LEFT,
                address_policy=LOCAL_SERVERS,
            )
        )
    assert "TLS handshake" in str(error)
    assert "out of time" in str(error)


def test_a_missing_greeting_is_cut_off_when_the_run_is_out_of_time() -> None:
    with listener() as server:
        port = server.getsockname()[1]
        error = enter(
            Pop3Mailbox(
                config(port), TIMEOUT, time_left=lambda: TIME_LEFT, address_policy=LOCAL_SERVERS
            )
        )
    assert "out of time" in str(error)


def test_no_time_left_means_no_connection_at_all() -> None:
    with listener() as server:
        port = server.getsockname()[1]
        error = enter(
            Pop3Mailbox(config(port), TIMEOUT, time_left=lambda: 0.0, address_policy=LOCAL_SERVERS)
        )
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected
    assert "no time left to connect" in str(error)
