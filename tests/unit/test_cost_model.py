"""The cost model's arithmetic (scripts/cost_model.py), on results made up for the test."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from scripts import cost_model as model

BATCH = 10


def run(jobs_per_invocation: float, **calls: float) -> dict[str, Any]:
    """One measured scenario: calls per job by ``service_Operation`` keyword."""
    return {
        "jobs_per_invocation": jobs_per_invocation,
        "calls_per_job": {k.replace("_", ":", 1): v for k, v in calls.items()},
        "gb_s_per_job": 0.05 if jobs_per_invocation > 1 else 0.2,
        "log_bytes_per_job": 600.0,
        "emf_bytes_per_job": 300.0,
    }


def results(mechanism: str = "scheduler") -> dict[str, Any]:
    """What the benchmark writes, with figures chosen for the test."""
    idle = {"s3_GetObject": 1.0, "secretsmanager_BatchGetSecretValue": 0.1}
    idle |= {"sqs_ReceiveMessage": 0.1, "sqs_DeleteMessageBatch": 0.1}
    helper = {
        "wall_s": 60.0,
        "gb_s": 15.0,
        "log_bytes": 1000,
        "calls": {"secretsmanager:ListSecrets": 100, "scheduler:ListSchedules": 100},
    }
    return {
        "command": "make bench-fleet",
        "generated": "2026-12-02T00:00:00Z",
        "code_revision": "test",
        "assumptions": {
            "mailboxes": 10_000,
            "message_bytes": 40_000,
            "page_latency_ms": 200,
            "call_latency_ms": 15,
            "pop3_rtt_ms": 40,
        },
        "deployment": {
            "memory_mb": 512,
            "batch_size": BATCH,
            "batching_window_s": 0,
            "tracing": "Active",
            "alarm_metrics": 4,
            "metrics_insights_alarms": 0,
            "insight_rules": 1,
            "dashboards": 1,
        },
        "round": {
            "mechanism": mechanism,
            "reconcile_steady": helper,
            "dispatch": helper | {"calls": {"sqs:SendMessageBatch": 1000}},
        },
        "runs": {
            "idle": run(BATCH, **idle),
            "idle_unbatched": run(1, **(idle | {"secretsmanager_BatchGetSecretValue": 1.0})),
            "mail_1": run(BATCH, **(idle | {"s3_PutObject": 2.0, "sqs_SendMessageBatch": 1.0})),
            "mail_2": run(BATCH, **(idle | {"s3_PutObject": 3.0, "sqs_SendMessageBatch": 1.0})),
        },
        "metrics": {"fleet_level": 8, "per_mailbox": 0},
        "state": {"bytes_final": 4000},
    }


def per_mailbox(data: dict[str, Any], mailboxes: int) -> dict[str, float]:
    lines = model.bill(data, model.Workload(mailboxes))
    return {line.item: line.usd / mailboxes for line in lines}


def test_one_job_alone_costs_what_the_unbatched_run_measured() -> None:
    runs = model.Runs(results()["runs"])
    secrets = model.calls("secretsmanager:BatchGetSecretValue")

    assert runs.idle_at(secrets, 1) == pytest.approx(secrets(runs.runs["idle_unbatched"]))
    assert runs.idle_at(secrets, BATCH) == pytest.approx(secrets(runs.runs["idle"]))
    # In between, the per-invocation cost is shared by more jobs.
    assert secrets(runs.runs["idle"]) < runs.idle_at(secrets, 3) < runs.idle_at(secrets, 2)


def test_without_mail_a_job_costs_an_idle_run() -> None:
    runs = model.Runs(results()["runs"])
    puts = model.calls("s3:PutObject")

    assert runs.per_job(puts, BATCH, messages_per_run=0) == pytest.approx(0)


def test_when_each_message_adds_the_same_the_cost_grows_with_the_messages() -> None:
    data = results()
    data["runs"]["mail_1"]["calls_per_job"]["s3:PutObject"] = 1.0
    data["runs"]["mail_2"]["calls_per_job"]["s3:PutObject"] = 2.0
    runs = model.Runs(data["runs"])
    puts = model.calls("s3:PutObject")

    for messages in (0.1, 0.35, 2.0):
        assert runs.per_job(puts, BATCH, messages) == pytest.approx(messages)


def test_a_run_with_mail_pays_its_fixed_part_once() -> None:
    # mail_1 adds two PUTs (the message and the state), each further message one.
    runs = model.Runs(results()["runs"])
    puts = model.calls("s3:PutObject")
    messages = 0.35
    some_mail = 1 - math.exp(-messages)

    assert runs.per_job(puts, BATCH, messages) == pytest.approx(some_mail + messages)


def test_batches_fill_with_the_fleets_rate_up_to_the_batch_size() -> None:
    data = results()
    sizes = [model.batch_size(data, model.Workload(n)) for n in (1, 300, 1_000, 100_000)]

    assert sizes[0] == 1
    assert sizes == sorted(sizes)
    assert sizes[-1] == BATCH


def test_custom_metrics_are_priced_tier_by_tier() -> None:
    first_ceiling, first_price = model.METRIC_TIERS[0]

    assert model.metric_cost(0) == 0
    assert model.metric_cost(first_ceiling) == pytest.approx(first_ceiling * first_price)
    above = model.metric_cost(first_ceiling + 1000) - model.metric_cost(first_ceiling)
    assert above == pytest.approx(1000 * model.METRIC_TIERS[1][1])
    costs = [model.metric_cost(n) for n in (10, 10_000, 300_000, 2_000_000)]
    assert costs == sorted(costs)


def test_xray_records_every_invocation_up_to_its_reservoir_then_a_share() -> None:
    month = model.Workload(1).seconds
    reservoir = model.assumed("xray_reservoir_per_s") * month

    assert model.traced(1000, month) == 1000
    assert model.traced(reservoir * 3, month) == pytest.approx(
        reservoir + model.assumed("xray_rate") * reservoir * 2
    )


def test_fixed_costs_are_shared_by_the_fleet() -> None:
    small, large = per_mailbox(results(), 1), per_mailbox(results(), 1_000)

    for item in ("CloudWatch dashboards", "CloudWatch alarms", "CloudWatch custom metrics"):
        assert large[item] == pytest.approx(small[item] / 1_000)


def test_per_mailbox_metrics_cost_every_fleet_the_same_per_mailbox() -> None:
    data = results()
    data["metrics"] = {"fleet_level": 0, "per_mailbox": 10}

    small, large = per_mailbox(data, 100), per_mailbox(data, 900)
    assert small["CloudWatch custom metrics"] == pytest.approx(large["CloudWatch custom metrics"])


def test_twice_the_secret_calls_per_job_cost_twice_as_much() -> None:
    data = results()
    doubled = copy.deepcopy(data)
    for scenario in doubled["runs"].values():
        calls = scenario["calls_per_job"]
        calls["secretsmanager:BatchGetSecretValue"] *= 2
    doubled["round"]["reconcile_steady"]["calls"]["secretsmanager:ListSecrets"] *= 2

    item = "Secrets Manager API calls"
    assert per_mailbox(doubled, 1_000)[item] == pytest.approx(2 * per_mailbox(data, 1_000)[item])


def test_only_the_scheduler_is_billed_for_ticks() -> None:
    item = "EventBridge Scheduler invocations"
    ticks = model.Workload(1).runs_per_mailbox

    scheduled = per_mailbox(results("scheduler"), 1)[item]
    assert scheduled == pytest.approx(model.cost("scheduler_invocation", ticks), rel=0.01)
    assert per_mailbox(results("dispatcher"), 1)[item] == 0


def test_the_document_shows_every_line_the_totals_and_the_goal(tmp_path: Path) -> None:
    source = tmp_path / "fleet.json"
    source.write_text(json.dumps(results()))
    out = tmp_path / "cost.md"

    assert model.main(["--results", str(source), "--out", str(out)]) == 0

    text = out.read_text()
    for line in model.bill(results(), model.Workload(1)):
        assert f"| {line.item} |" in text
    assert "Total per mailbox-month" in text
    assert f"${model.GOAL_PER_MAILBOX_MONTH}" in text
    for price in model.PRICES.values():
        assert price.source in text


def test_the_verdict_names_what_stands_in_the_way() -> None:
    data = results()
    data["metrics"] = {"fleet_level": 0, "per_mailbox": 10}  # $3 per mailbox-month at least

    verdict = " ".join(model.verdict(data))
    assert "over the goal" in verdict
    assert "CloudWatch custom metrics" in verdict


def test_missing_results_say_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = model.main(["--results", str(tmp_path / "none.json"), "--out", str(tmp_path / "c.md")])

    assert code != 0
    assert "make bench-fleet" in capsys.readouterr().err
