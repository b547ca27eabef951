"""The connect has its own limit (CONNECT_TIMEOUT_SECONDS), shorter than a read's.

A dead host must cost a run seconds, not POP3_TIMEOUT_SECONDS: the TCP connect
and the TLS handshake each keep to the connect limit, and the run's cut-off
still comes first when it is nearer. Reads keep POP3_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import pytest
from tests.support.local_hosts import LOCAL_SERVERS
from tests.unit.test_pop3_connect import TIMEOUT, config, enter, full_accept_queue, listener

from pop3_ingest.pop3 import Pop3Mailbox
from pop3_ingest.pop3.limits import TransferLimits

# enter() fails a session that took anywhere near the read timeout to give up.
READ_TIMEOUT = TIMEOUT
CONNECT_TIMEOUT = 0.5
PLENTY_OF_TIME = 600.0


def test_a_connect_step_waits_for_the_connect_limit_or_the_run_s_cut_off() -> None:
    limits = TransferLimits(READ_TIMEOUT, connect_timeout=CONNECT_TIMEOUT)
    assert limits.connect_wait("host:995") == CONNECT_TIMEOUT
    assert limits.clock("USER").timeout == READ_TIMEOUT  # answers keep the read timeout
    nearly_out = TransferLimits(READ_TIMEOUT, time_left=lambda: 0.2, connect_timeout=5.0)
    assert nearly_out.connect_wait("host:995") == pytest.approx(0.2)
    # Without a connect limit of its own, a connect keeps the read timeout (the CLI's check).
    assert TransferLimits(READ_TIMEOUT).connect_wait("host:995") == READ_TIMEOUT


def mailbox(port: int, tls: str = "none") -> Pop3Mailbox:
    return Pop3Mailbox(
        config(port, tls),
        READ_TIMEOUT,
        time_left=lambda: PLENTY_OF_TIME,
        connect_timeout=CONNECT_TIMEOUT,
        address_policy=LOCAL_SERVERS,
    )


def test_a_tcp_connect_that_hangs_fails_at_the_connect_limit() -> None:
    with full_accept_queue() as port:
        error = enter(mailbox(port))
    # A timeout of its own, not the run running out of time.
    assert "timed out connecting" in str(error)
    assert "out of time" not in str(error)


def test_a_tls_handshake_that_hangs_fails_at_the_connect_limit() -> None:
    with listener() as server:
        # Accepted (by the queue), and the ClientHello is never answered.
        error = enter(mailbox(server.getsockname()[1], "implicit"))
    assert "out of time" not in str(error)
