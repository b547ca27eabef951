"""Progress on stderr: for a person at a terminal only, never in --json or piped output."""

from __future__ import annotations

import io

from pop3_ingest_cli.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_progress_rewritten_in_place_and_cleared() -> None:
    stream = Terminal()
    progress = Progress("status", as_json=False, stream=stream)
    progress.note("listing run states")
    for done in range(1, 4):
        progress.step("reading run states", done, 3)
    progress.done()
    text = stream.getvalue()
    assert "pop3-ingest status: listing run states" in text
    assert "reading run states 3/3" in text
    assert "\n" not in text, "one line, rewritten with carriage returns"
    assert text.endswith("\r\x1b[K"), "cleared at the end"


def test_json_output_and_pipes_get_no_progress() -> None:
    for progress in (
        Progress("status", as_json=True, stream=Terminal()),
        Progress("status", as_json=False, stream=io.StringIO()),  # a pipe or file
    ):
        progress.note("listing")
        progress.step("reading", 1, 1)
        progress.done()
        assert progress.stream.getvalue() == ""


def test_a_long_count_is_shown_a_bounded_number_of_times() -> None:
    stream = Terminal()
    progress = Progress("replay", as_json=False, stream=stream)
    for done in range(1, 100_001):
        progress.step("objects", done, 100_000)
    writes = stream.getvalue().count("\r\x1b[K")
    assert 100 <= writes <= 201
    assert "objects 100000/100000" in stream.getvalue()
