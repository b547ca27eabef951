"""One round of the fleet: what it takes to get every due mailbox a job.

Whichever the code has, measured through its real Lambda handler:

- **the reconciler** (EventBridge Scheduler): a full reconcile from nothing
  (one schedule per mailbox created) and one with nothing to change (the daily
  run), with its calls and time; then the schedules it made are read back, to
  see how many ticks a round brings and whether any mailbox is ticked when it
  is not due. The Scheduler itself sends the jobs: that costs a Scheduler
  invocation and an SQS SendMessage per tick, and no Lambda time of ours.
- **the dispatcher**: one dispatch run (listing every tagged secret, sending a
  job for each), its calls and time.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from typing import Any

from benchmarks.fleet_aws import FleetAws
from benchmarks.fleet_runner import Runner
from benchmarks.fleet_setup import Population, due_per_round

RECONCILE_HANDLER = "pop3_ingest.handlers.reconcile:lambda_handler"
DISPATCH_HANDLER = "pop3_ingest.handlers.dispatch:lambda_handler"
# What the daily schedule hands the reconciler: EventBridge Scheduler's own
# event for a schedule without an Input (a full reconcile).
FULL_RECONCILE_EVENT: dict[str, Any] = {
    "version": "0",
    "detail-type": "Scheduled Event",
    "source": "aws.scheduler",
    "detail": {},
}
DISPATCH_EVENT: dict[str, Any] = {
    "version": "0",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "detail": {},
}
SCHEDULE_GROUP = "pop3-ingest-fleet"
ROUND_MINUTES = 5
# Schedules read back in full (GetSchedule) to check their rate against the secret.
_SCHEDULES_CHECKED = 200
_RATE = re.compile(r"rate\((\d+) minutes?\)")


def mechanism() -> str:
    """Which way the code gives mailboxes their jobs."""
    if importlib.util.find_spec("pop3_ingest.handlers.reconcile") is not None:
        return "scheduler"
    if importlib.util.find_spec("pop3_ingest.handlers.dispatch") is not None:
        return "dispatcher"
    return "none"


def _invocation(
    aws: FleetAws, runner: Runner, handler: str, event: dict[str, Any]
) -> dict[str, Any]:
    aws.reset_counts()
    answer = runner.invoke(handler, event, timeout_ms=900_000)
    printed = answer["printed"]
    return {
        "wall_s": answer["wall_s"],
        "cpu_s": answer["cpu_s"],
        "memory_mb": runner.memory_mb,
        "gb_s": answer["wall_s"] * runner.memory_mb / 1024,
        "cpu_share": runner.cpu_share_applied,
        "error": answer.get("error"),
        "result": _short(answer.get("result")),
        "calls": aws.calls(),
        "moto_bound": aws.moto_bound(),
        "log_bytes": printed["log_bytes"] + printed["emf_bytes"],
        "metrics": printed["metrics"],
    }


def _short(result: Any) -> Any:
    """A handler's result without long lists (the names of thousands of mailboxes)."""
    if isinstance(result, dict):
        return {k: (len(v) if isinstance(v, list) else v) for k, v in result.items()}
    return result


def measure_dispatcher(
    aws: FleetAws, runner: Runner, population: Population, jobs_url: str
) -> dict[str, Any]:
    run = _invocation(aws, runner, DISPATCH_HANDLER, DISPATCH_EVENT)
    result = run["result"] if isinstance(run["result"], dict) else {}
    jobs = int(result.get("enqueued", 0))
    aws.client("sqs").purge_queue(QueueUrl=jobs_url)  # the sample gets jobs of its own
    due = due_per_round(population.intervals, ROUND_MINUTES)
    return {
        "mechanism": "dispatcher",
        "dispatch": run,
        "seconds_to_dispatch_round": run["wall_s"],
        "jobs_per_round": jobs,
        "due_per_round": due,
        "not_due_per_round": max(0.0, jobs - due),
        "lambda_invocations_per_round": 1,
        "scheduler_invocations_per_round": 0,
    }


def _schedule_names(scheduler: Any) -> list[str]:
    names: list[str] = []
    for page in scheduler.get_paginator("list_schedules").paginate(GroupName=SCHEDULE_GROUP):
        names.extend(s["Name"] for s in page.get("Schedules", []))
    return names


def _ticks(
    scheduler: Any, names: list[str], interval_of: Callable[[str], int | None]
) -> dict[str, Any]:
    """Ticks per round against what is due, on schedules spread over the whole list."""
    step = max(1, len(names) // _SCHEDULES_CHECKED)
    checked = ticks = due = 0.0
    mismatched: list[str] = []
    for name in names[::step][:_SCHEDULES_CHECKED]:
        schedule = scheduler.get_schedule(Name=name, GroupName=SCHEDULE_GROUP)
        match = _RATE.fullmatch(schedule.get("ScheduleExpression", ""))
        body = json.loads(schedule.get("Target", {}).get("Input") or "{}")
        interval = interval_of(str(body.get("secret_id", "")))
        if match is None or interval is None:
            mismatched.append(name)
            continue
        checked += 1
        ticks += ROUND_MINUTES / int(match.group(1))
        due += ROUND_MINUTES / interval
        if int(match.group(1)) != interval:
            mismatched.append(name)
    return {"checked": checked, "ticks": ticks, "due": due, "mismatched": mismatched[:10]}


def measure_reconciler(aws: FleetAws, runner: Runner, population: Population) -> dict[str, Any]:
    first = _invocation(aws, runner, RECONCILE_HANDLER, FULL_RECONCILE_EVENT)
    again = _invocation(aws, runner, RECONCILE_HANDLER, FULL_RECONCILE_EVENT)
    aws.latency(False)
    try:
        scheduler = aws.client("scheduler")
        names = _schedule_names(scheduler)
        index = {population.name(i): i for i in range(population.size)}

        def interval_of(secret: str) -> int | None:
            return population.intervals[index[secret]] if secret in index else None

        ticks = _ticks(scheduler, names, interval_of)
    finally:
        aws.latency(True)
    due = due_per_round(population.intervals, ROUND_MINUTES)
    # Ticks per due mailbox on the schedules read back, applied to the whole fleet;
    # a mailbox without a schedule gets no tick at all.
    covered = min(1.0, len(names) / population.size)
    jobs = due * covered * (ticks["ticks"] / ticks["due"]) if ticks["due"] else 0.0
    return {
        "mechanism": "scheduler",
        "reconcile_full": first,
        "reconcile_steady": again,
        "schedules": len(names),
        "schedules_checked": ticks["checked"],
        "schedules_mismatched": ticks["mismatched"],
        # The Scheduler starts each tick within its flexible window: no run of ours.
        "seconds_to_dispatch_round": 0.0,
        "jobs_per_round": jobs,
        "due_per_round": due,
        "not_due_per_round": max(0.0, jobs - due),
        "lambda_invocations_per_round": 0,
        "scheduler_invocations_per_round": jobs,
    }
