"""The fleet benchmark and the cost model still work end to end, on a tiny fleet.

Nothing here asserts a time or a price: only that every phase ran the real
handlers, counted their calls, and that fleet.json, fleet.md and cost.md have
their shape. ``make bench-fleet`` and ``make cost`` are the real runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.fleet import main
from benchmarks.fleet_report import SCENARIOS
from scripts import cost_model
from tests.support.dovecot import dovecot_binary
from tests.support.harness import require

pytestmark = pytest.mark.integration

SAMPLE = 3


@pytest.mark.timeout(600)
def test_a_tiny_fleet_is_measured_and_priced(tmp_path: Path) -> None:
    require(None if dovecot_binary() else "dovecot is not installed; `make test` installs it")
    argv = [
        "--out", str(tmp_path),
        "--mailboxes", "40",
        "--sample", str(SAMPLE),
        "--state-days", "2",
        "--state-per-day", "24",
        "--state-poll-minutes", "360",
        "--message-bytes", "5000",
    ]  # fmt: skip
    assert main(argv) == 0

    results = json.loads((tmp_path / "fleet.json").read_text())
    assert results["round"]["mechanism"] in ("scheduler", "dispatcher")
    assert results["round"]["jobs_per_round"] > 0
    for name in SCENARIOS:
        run = results["runs"][name]
        assert run["jobs"] == SAMPLE, name
        assert run["errors"] == [], name
        assert run["failed_jobs"] == 0, name
        assert run["gb_s_per_job"] > 0, name
    # Mail delivered to the sample was taken: nothing is left on the servers.
    assert results["runs"]["mail_2"]["messages_delivered"] == 2 * SAMPLE
    assert results["runs"]["mail_2"]["messages_left"] == 0
    # A run reads its state: the endpoint counted the calls.
    assert results["runs"]["idle"]["calls"].get("s3:GetObject", 0) >= SAMPLE
    assert results["metrics"]["fleet_level"] + results["metrics"]["per_mailbox"] > 0
    assert results["state"]["error_count"] == 0
    assert results["state"]["bytes_final"] > 0
    assert "## The figures" in (tmp_path / "fleet.md").read_text()

    cost = tmp_path / "cost.md"
    assert cost_model.main(["--results", str(tmp_path / "fleet.json"), "--out", str(cost)]) == 0
    assert "Total per mailbox-month" in cost.read_text()
