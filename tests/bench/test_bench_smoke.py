"""The benchmark harness still works end to end, on a tiny corpus.

Timings are noisy, so nothing here asserts a rate or a ratio: only that every
contender ran, delivered every message, emptied the mailbox, and that the
results (JSON, Markdown, PNG) have their expected shape. ``make bench`` is the
real run; this keeps its code from rotting. getmail6 and fetchmail take part
when installed (``make deps-bench``); ``make test`` does not need them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.contenders import available
from benchmarks.run import main
from tests.support.dovecot import dovecot_binary
from tests.support.harness import require

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_harness_runs_every_contender_on_a_tiny_corpus(tmp_path: Path) -> None:
    require(None if dovecot_binary() else "dovecot is not installed; `make test` installs it")
    contenders = ["ours", "bare", "sink"] + [c for c in ("getmail6", "fetchmail") if available(c)]
    out = tmp_path / "out"
    argv = [
        "--out", str(out),
        "--contenders", ",".join(contenders),
        "--small-count", "10",
        "--rtts", "20",
        "--large-count", "2",
        "--large-size", "60KB",
        "--huge-size", "300KB",
        "--large-rtts", "0",
        "--memory-sizes", "2KB,300KB",
        "--timeout", "60",
    ]  # fmt: skip
    exit_code = main(argv)

    results = json.loads((out / "results.json").read_text())
    failed = [r for r in results["runs"] if not r["ok"]]
    assert failed == [], failed
    assert exit_code == 0

    runs = {(r["scenario"], r["rtt_ms"], r["contender"]): r for r in results["runs"]}
    for contender in contenders:
        assert ("small", 20.0, contender) in runs
        assert ("large", 0.0, contender) in runs
    small = runs[("small", 20.0, "ours")]
    assert small["messages"] == small["expected_messages"] == 10
    assert runs[("large", 0.0, "bare")]["messages"] == 3
    for run in results["runs"]:
        assert run["wall_s"] > 0
        assert run["max_rss_mb"] > 0
    # The cost model needs the requests moto saw: at least one write per message
    # (the handler may add its own bookkeeping objects).
    writes = small["requests"].get("s3:PutObject", 0)
    assert writes + small["requests"].get("s3:CompleteMultipartUpload", 0) >= 10
    assert any(k.startswith("sqs:Send") for k in small["requests"])

    floor = results["memory_floor"]
    assert set(floor) >= {"small_rss_mb", "big_rss_mb", "difference_mb", "limit_mb", "passed"}

    markdown = (out / "results.md").read_text()
    for heading in ("## Many small messages", "## Large messages", "## Memory floor",
                    "## Cost model"):  # fmt: skip
        assert heading in markdown
    assert "ours / min(a, b)" in markdown
    assert "messages_per_second.png" in markdown
    assert (out / "messages_per_second.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
