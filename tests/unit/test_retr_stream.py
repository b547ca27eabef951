"""The streaming RETR decoder: exact bytes, no line limit, bounded memory."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3_ingest.errors import ConnectionLost, MessageTooLarge, SessionOutOfStep
from pop3_ingest.pop3.retr_stream import RetrStream, allowed_size
from pop3_ingest.redaction import response_code


def stream(wire: bytes, max_bytes: int = 10_000_000) -> tuple[RetrStream, list[bool]]:
    outcomes: list[bool] = []
    return RetrStream(buffered(wire), max_bytes, outcomes.append), outcomes


def buffered(wire: bytes, size: int = 8192) -> io.BufferedReader:
    # Like poplib's socket file: a buffered reader that can peek.
    return io.BufferedReader(io.BytesIO(wire), buffer_size=size)  # type: ignore[arg-type]


def read_all(s: RetrStream, size: int = 5) -> bytes:
    out = b""
    while chunk := s.read(size):
        out += chunk
    return out


def test_unstuffs_dots_and_stops_at_terminator() -> None:
    s, outcomes = stream(b"a\r\n..b\r\n...\r\n.\r\nNEXT RESPONSE\r\n")
    assert read_all(s) == b"a\r\n.b\r\n..\r\n"
    assert outcomes == [True]
    assert s.finished


def test_lines_far_longer_than_poplib_limit_pass_intact() -> None:
    long_line = b"x" * 200_000
    s, _ = stream(long_line + b"\r\n.\r\n")
    assert read_all(s, 4096) == long_line + b"\r\n"


def test_dot_inside_a_long_line_continuation_is_not_unstuffed() -> None:
    # The 64 KiB read boundary falls right before a dot in mid-line.
    body = b"y" * (64 * 1024) + b".z"
    s, _ = stream(body + b"\r\n.\r\n")
    assert read_all(s, 100_000) == body + b"\r\n"


def test_bare_lf_becomes_crlf_and_split_crlf_is_not_doubled() -> None:
    s, _ = stream(b"one\ntwo\r\n.\r\n")
    assert read_all(s) == b"one\r\ntwo\r\n"
    split = b"z" * (64 * 1024 - 1) + b"\r\n.\r\n"  # CR ends one read, LF starts the next
    s, _ = stream(split)
    assert read_all(s, 1 << 20) == b"z" * (64 * 1024 - 1) + b"\r\n"


def test_exact_reads_as_multipart_upload_expects() -> None:
    s, _ = stream(b"".join(b"line %d\r\n" % i for i in range(1000)) + b".\r\n")
    first = s.read(1000)
    assert len(first) == 1000


def test_eight_bit_bytes_untouched() -> None:
    body = "Grüße, ça va? 日本語\r\n".encode() + bytes(range(128, 256)) + b"\r\n"
    s, _ = stream(body + b".\r\n")
    assert read_all(s) == body


def test_connection_closed_mid_message_is_connection_lost() -> None:
    s, outcomes = stream(b"partial\r\nno terminator")
    with pytest.raises(ConnectionLost):
        read_all(s)
    assert outcomes == [False]


def test_endless_message_is_cut_at_the_allowed_size() -> None:
    s, outcomes = stream(b"A" * 100 + b"\r\n" * 1000, max_bytes=500)
    with pytest.raises(MessageTooLarge):
        read_all(s)
    assert outcomes == [False]
    assert allowed_size(1000) > 1000


def test_drain_consumes_rest_so_the_session_stays_in_step() -> None:
    source = buffered(b"a\r\nb\r\n.\r\n+OK next\r\n")
    s = RetrStream(source, 1000, lambda ok: None)
    s.read(2)
    s.drain()
    assert source.read() == b"+OK next\r\n"


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (b"-ERR [IN-USE] locked", "IN-USE"),
        (b"-ERR [SYS/TEMP] later", "SYS/TEMP"),
        (b"-ERR [auth] bad", "AUTH"),
        (b"-ERR plain failure", None),
        (b"+OK [IN-USE]", None),
    ],
)
def test_response_codes(response: bytes, code: str | None) -> None:
    assert response_code(response) == code


def test_next_pipelined_response_stays_in_the_buffer() -> None:
    source = buffered(b"x\r\n.\r\n+OK 2 octets\r\nab\r\n.\r\n+OK deleted\r\n", size=4)
    first = RetrStream(source, 1000, lambda ok: None)
    assert first.read_all() == b"x\r\n"
    assert source.readline() == b"+OK 2 octets\r\n"
    second = RetrStream(source, 1000, lambda ok: None)
    assert second.read_all() == b"ab\r\n"
    assert source.read() == b"+OK deleted\r\n"


def dot_stuff(message: bytes) -> bytes:
    """What a server sends for a message (RFC 1939 section 3)."""
    lines = message.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


@settings(max_examples=120, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
            st.sampled_from([b".", b"..", b".\r", b"", b". ", b"x" * 70_000, b".x" * 40_000]),
        ),
        max_size=30,
    ),
    buffer_size=st.sampled_from([5, 64, 8192, 1 << 17]),
    read_size=st.sampled_from([1, 5, 4096, -1]),
)
def test_decoding_round_trips_any_message(
    lines: list[bytes], buffer_size: int, read_size: int
) -> None:
    lines = [line.replace(b"\r", b"") for line in lines]
    message = b"".join(line + b"\r\n" for line in lines)
    source = buffered(dot_stuff(message) + b"+OK next\r\n", size=buffer_size)
    s = RetrStream(source, len(message) + 10, lambda ok: None)
    out = b""
    while chunk := s.read(read_size):
        out += chunk
        if read_size < 0:
            break
    assert out == message
    assert s.finished
    assert source.read() == b"+OK next\r\n"


def test_an_exact_size_stream_takes_a_status_like_first_line_as_mail() -> None:
    message = b"+OK this line is mail\r\nbody\r\n"
    s = RetrStream(buffered(message + b".\r\n"), len(message), lambda ok: None, exact=True)
    assert s.read_all() == message


@pytest.mark.parametrize("listed_delta", [-1, 1, 40])
def test_an_exact_size_stream_that_differs_from_its_listing_is_out_of_step(
    listed_delta: int,
) -> None:
    # What an answer out of step would look like: another message's bytes.
    message = b"+OK 3 octets\r\nnot the message listed\r\n"
    outcomes: list[bool] = []
    s = RetrStream(
        buffered(message + b".\r\n"), len(message) + listed_delta, outcomes.append, exact=True
    )
    with pytest.raises((SessionOutOfStep, MessageTooLarge)):
        s.read_all()
    assert outcomes == [False]
