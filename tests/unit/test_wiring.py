"""The fetch function's wiring (handlers/wiring.py): what runs side by side share,
and a state read made ahead of the run."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pop3_ingest.config import MailboxConfig, Settings
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.state import MailboxState
from pop3_ingest.handlers import wiring
from pop3_ingest.handlers.wiring import ReadAhead, ingest_options
from pop3_ingest.integrations.s3_state import Snapshot

SETTINGS = Settings.from_env({"BUCKET_NAME": "b", "QUEUE_URL": "q"})
CONFIG = MailboxConfig.from_secret({"host": "pop.example.com", "username": "u", "password": "p"})


def test_a_run_alone_has_the_whole_budget() -> None:
    assert ingest_options(SETTINGS, CONFIG, 1) == IngestOptions.from_settings(SETTINGS, CONFIG)


def test_runs_side_by_side_share_memory_disk_and_upload_threads() -> None:
    alone = ingest_options(SETTINGS, CONFIG, 1)
    runs = 10
    shared = ingest_options(SETTINGS, CONFIG, runs)
    # Together they hold no more than one run alone would.
    assert shared.memory_budget * runs <= alone.memory_budget
    assert shared.spool_budget * runs <= alone.spool_budget
    # Each keeps enough threads to upload while it downloads.
    assert 2 <= shared.upload_workers <= alone.upload_workers
    assert shared.pipeline_window == alone.pipeline_window


class CountingStore:
    def __init__(self) -> None:
        self.reads = 0

    def read(self, mailbox: str) -> Snapshot:
        self.reads += 1
        return Snapshot(MailboxState(last_attempt=float(self.reads)), etag=f"e{self.reads}")

    def take_lease(
        self, mailbox: str, owner: str, until: float, now: float, current: Snapshot
    ) -> Snapshot | None:
        return current

    def write(self, mailbox: str, state: MailboxState, base: Snapshot) -> Snapshot:
        return Snapshot(state, "written")

    def put_quarantine_record(self, mailbox: str, digest: str, record: dict[str, Any]) -> None:
        pass


def test_the_read_made_ahead_is_the_run_s_first_and_only_that_one() -> None:
    store = CountingStore()
    ahead = store.read("box")
    states = ReadAhead(store, ahead)
    assert states.read("box") is ahead
    assert store.reads == 1  # not read twice
    assert states.read("box").etag == "e2"  # any later read is a fresh one


def test_jobs_starting_side_by_side_build_the_aws_clients_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []

    class CountingSession:
        def client(self, service: str, **_: Any) -> object:
            built.append(service)
            time.sleep(0.01)  # long enough for the other threads to arrive meanwhile
            return object()

    monkeypatch.setattr(wiring.boto3.session, "Session", CountingSession)
    wiring._new_aws_clients.cache_clear()
    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(lambda _: wiring.aws_clients(), range(10)))
    finally:
        wiring._new_aws_clients.cache_clear()
    assert all(result is results[0] for result in results)
    assert sorted(built) == ["s3", "s3", "sqs"]
