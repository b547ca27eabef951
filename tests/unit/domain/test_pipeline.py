"""The command window over an in-memory POP3 session: what is written, and when."""

from __future__ import annotations

import hashlib

from pop3_ingest.domain.message import ServerMessage
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.pipeline import Buffers, CommandWindow, receive

from ..fakes import FakeMailbox, FakeStream


class Gate:
    """Admits up to ``limit`` RETRs and records what was taken."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self.taken: list[ServerMessage] = []

    def admit(self, message: ServerMessage) -> bool:
        return len(self.taken) < self.limit

    def took(self, message: ServerMessage) -> None:
        self.taken.append(message)


class Recording(FakeMailbox):
    """Keeps each batch of commands as written."""

    def __init__(self, messages: dict[str, bytes], **kwargs: object) -> None:
        super().__init__(messages, **kwargs)  # type: ignore[arg-type]
        self.writes: list[list[str]] = []

    def send_commands(self, commands: list[str]) -> None:
        self.writes.append(list(commands))
        super().send_commands(commands)


def open_window(
    count: int, size: int = 4, **options: object
) -> tuple[Recording, CommandWindow, list[ServerMessage], Buffers]:
    mailbox = Recording({f"u{i}": b"x" * 100 for i in range(count)})
    mailbox.__enter__()
    listing = mailbox.list_messages()
    buffers = Buffers()
    window = CommandWindow(mailbox, size, IngestOptions(**options), buffers)  # type: ignore[arg-type]
    window.load(listing)
    return mailbox, window, listing, buffers


def drain(window: CommandWindow, buffers: Buffers) -> list[str]:
    """Read every answer due, letting each message's bytes go at once (uploaded)."""
    read = []
    while window.answers_due:
        kind, message = window.next_answer()
        if kind == "RETR":
            download = receive(message, window.read_retr(message), 1 << 20, buffers)
            buffers.release(download)
        else:
            window.read_dele(message)
        read.append(f"{kind} {message.number}")
    return read


def test_no_more_commands_are_in_flight_than_the_window() -> None:
    mailbox, window, _, buffers = open_window(10, size=4)
    gate = Gate()
    while window.fetching and len(gate.taken) < 10:
        window.send(gate)
        assert len(drain(window, buffers)) <= 4
    assert mailbox.max_in_flight == 4
    assert len(gate.taken) == 10


def test_deletes_go_out_before_more_retrs_and_answers_come_in_order() -> None:
    mailbox, window, listing, buffers = open_window(6, size=4)
    gate = Gate()
    window.send(gate)
    assert drain(window, buffers) == [f"RETR {n}" for n in (1, 2, 3, 4)]
    window.queue_delete(listing[0], "d1")
    window.queue_delete(listing[1], "d2")
    window.send(gate)
    assert mailbox.writes[-1] == ["DELE 1", "DELE 2", "RETR 5", "RETR 6"]
    assert drain(window, buffers) == ["DELE 1", "DELE 2", "RETR 5", "RETR 6"]


def test_a_dele_answer_gives_back_the_digest_that_proved_it() -> None:
    _, window, listing, _ = open_window(1)
    window.queue_delete(listing[0], "digest")
    window.send(Gate(limit=0))
    _, message = window.next_answer()
    assert window.read_dele(message) == "digest"


def test_the_gate_stops_retrs() -> None:
    mailbox, window, _, _ = open_window(5, size=10)
    gate = Gate(limit=2)
    window.send(gate)
    assert mailbox.writes == [["RETR 1", "RETR 2"]]
    assert window.retrs_in_flight() == (2, 200)


def test_no_retr_is_written_while_the_memory_budget_is_full() -> None:
    mailbox, window, _, buffers = open_window(5, size=10, memory_budget=250)
    window.send(Gate())
    assert mailbox.writes == [["RETR 1", "RETR 2"]]  # a third would pass the budget
    downloads = []
    while window.answers_due:  # read, but not uploaded yet
        _, message = window.next_answer()
        downloads.append(receive(message, window.read_retr(message), 1 << 20, buffers))
    window.send(Gate())
    assert len(mailbox.writes) == 1  # still full: wait for uploads
    buffers.release(downloads[0])  # one upload done
    window.send(Gate())
    assert mailbox.writes[1:] == [["RETR 3"]]


def test_reading_waits_for_uploads_while_memory_is_full() -> None:
    _, window, _, buffers = open_window(2, size=2, memory_budget=150)
    window.send(Gate())
    buffers.held = 150
    assert window.must_wait_before_reading(uploads_running=True)
    # Nothing running could free it: reading goes on (one message over budget).
    assert not window.must_wait_before_reading(uploads_running=False)


def test_once_no_quit_is_planned_no_dele_is_written() -> None:
    mailbox, window, listing, _ = open_window(2)
    window.queue_delete(listing[0], "d1")
    window.void_deletes()
    window.queue_delete(listing[1], "d2")
    window.send(Gate())
    assert not window.deletes_waiting
    assert mailbox.writes == []
    assert not window.fetching


def test_a_lost_line_gives_back_the_retrs_never_answered() -> None:
    _, window, listing, buffers = open_window(4, size=4)
    window.send(Gate())
    _kind, message = window.next_answer()
    buffers.release(receive(message, window.read_retr(message), 1 << 20, buffers))
    assert window.lose_line() == listing[1:4]
    assert not window.line_up
    assert not window.answers_due


def test_a_window_retried_alone_is_one_command_at_a_time_read_by_exact_size() -> None:
    exact: list[bool] = []

    class Exact(FakeMailbox):
        def read_retr(self, message: ServerMessage, *, exact_size: bool = False) -> FakeStream:
            exact.append(exact_size)
            return super().read_retr(message, exact_size=exact_size)

    mailbox = Exact({"a": b"+OK mail\r\n", "b": b"more"})
    mailbox.__enter__()
    listing = mailbox.list_messages()
    window = CommandWindow(mailbox, 8, IngestOptions(), Buffers())
    window.load(listing, retry_alone=[listing[0].number])
    assert window.size == 1
    window.send(Gate())
    _, message = window.next_answer()
    window.read_retr(message)
    assert exact == [True]


def test_big_messages_are_spooled_and_small_ones_held_in_memory() -> None:
    buffers = Buffers()
    small, big = b"s" * 10, b"b" * 5000
    held = receive(ServerMessage(1, "s", len(small)), FakeStream(small), 1000, buffers)
    spooled = receive(ServerMessage(2, "b", len(big)), FakeStream(big), 1000, buffers)
    assert held.data == small
    assert spooled.spool is not None
    assert spooled.spool.read() == big
    assert spooled.sha256 == hashlib.sha256(big).hexdigest()
    assert (buffers.held, buffers.spooled) == (len(small), len(big))
    buffers.release(held)
    buffers.release(spooled)
    assert (buffers.held, buffers.spooled) == (0, 0)
