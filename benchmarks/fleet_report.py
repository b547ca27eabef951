"""benchmarks/fleet.md from the fleet benchmark's results (benchmarks/fleet.json)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The scenarios in the order they ran, and what each one is.
SCENARIOS = {
    "first_run": "first run of new mailboxes (no state yet) in a fresh container (clients "
    "created, TLS set up): a cold start, not used by the cost model",
    "idle": "steady state, nothing new, jobs in batches",
    "idle_unbatched": "steady state, nothing new, one job per invocation",
    "mail_1": "one new message per mailbox",
    "not_due": "a job for a mailbox that ran moments ago",
    "mail_2": "two new messages per mailbox",
    "stale": "a job scheduled two hours ago (a newer tick exists)",
}


def _n(value: float, digits: int = 2) -> str:
    if abs(value - round(value)) < 1e-9 and abs(value) >= 1:
        return f"{round(value):,}"
    return f"{value:,.{digits}f}"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _calls_of(calls: Mapping[str, float], service: str, *operations: str) -> float:
    return sum(
        v
        for k, v in calls.items()
        if k.startswith(f"{service}:") and (not operations or k.split(":", 1)[1] in operations)
    )


def _calls_text(calls: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {_n(v)}" for k, v in sorted(calls.items())) or "none"


def _dispatch(results: dict[str, Any]) -> tuple[str, float, str]:
    """(time to get a round going, calls per mailbox to do so, which calls)."""
    round_, n = results.get("round", {}), results["assumptions"]["mailboxes"]
    kind = round_.get("mechanism")
    if kind == "scheduler":
        full, steady = round_["reconcile_full"], round_["reconcile_steady"]
        text = (
            "0 s of our compute: EventBridge Scheduler starts each mailbox's tick (the "
            f"daily full reconcile of {n:,}: {_n(full['wall_s'], 1)} s from nothing, "
            f"{_n(steady['wall_s'], 1)} s with nothing to change)"
        )
        per_mailbox = round_.get("jobs_per_round", 0) / max(n, 1)
        return text, per_mailbox, "one SQS SendMessage by the Scheduler per tick"
    if kind == "dispatcher":
        run = round_["dispatch"]
        per_mailbox = sum(run["calls"].values()) / max(n, 1)
        return (
            f"{_n(run['wall_s'], 1)} s (one dispatcher run)",
            per_mailbox,
            _calls_text(run["calls"]),
        )
    return "not measured", 0.0, "no mechanism found"


def headline(results: dict[str, Any]) -> list[str]:
    """The figures issue 10 asks for."""
    round_, n = results.get("round", {}), results["assumptions"]["mailboxes"]
    idle = results.get("runs", {}).get("idle", {})
    per_job = idle.get("calls_per_job", {})
    dispatch, schedule_calls, schedule_note = _dispatch(results)
    metrics, state = results.get("metrics", {}), results.get("state", {})
    jobs = [
        _n(round_.get(k, 0), 1) for k in ("jobs_per_round", "due_per_round", "not_due_per_round")
    ]
    batch = float(idle.get("jobs_per_invocation") or 1)
    invocations = round_.get("jobs_per_round", 0) / batch
    invocations += round_.get("lambda_invocations_per_round", 0)
    return [
        _row("Figure", "Measured"),
        _row("---", "---"),
        _row("Mechanism", round_.get("mechanism", "none")),
        _row(f"Time to schedule or dispatch one round of {n:,}", dispatch),
        _row(
            "API calls per mailbox per round, to schedule",
            f"{_n(schedule_calls, 3)} ({schedule_note})",
        ),
        _row(
            f"API calls per mailbox per round, to run (idle, {idle.get('batch_size')} a batch)",
            f"{_n(sum(per_job.values()), 3)} ({_calls_text(per_job)})",
        ),
        _row("Jobs per 5-minute round / due / not due", " / ".join(jobs)),
        _row(
            "Lambda invocations per 5-minute round",
            f"{_n(invocations, 1)} (jobs in batches of {_n(batch, 1)}; not due: "
            f"{_n(round_.get('not_due_per_round', 0), 1)} jobs)",
        ),
        _row(
            f"Custom metrics at {n:,} mailboxes",
            f"{_n(metrics.get('at_fleet_size', 0))} ({metrics.get('fleet_level', 0)} fleet-level"
            f" + {_n(metrics.get('per_mailbox', 0))} per mailbox)",
        ),
        _row(
            f"State bytes per mailbox after {state.get('days', '?')} days at "
            f"{state.get('messages_per_day', '?')} messages a day",
            f"{_n(state.get('bytes_final', 0))} (largest at the end of any day: "
            f"{_n(state.get('bytes_max', 0))})",
        ),
    ]


def runs_table(runs: dict[str, Any]) -> list[str]:
    lines = [
        _row(
            "Run",
            "Jobs",
            "Per invocation",
            "Wall s / invocation",
            "CPU s / invocation",
            "GB-s / job",
            "S3 GET / PUT per job",
            "Secrets Manager per job",
            "SQS per job",
            "Log bytes / job",
            "What the runs logged",
        ),
        "|---" * 11 + "|",
    ]
    for name in SCENARIOS:
        run = runs.get(name)
        if run is None:
            continue
        per_job = run["calls_per_job"]
        gets = _calls_of(per_job, "s3", "GetObject", "HeadObject")
        puts = _calls_of(per_job, "s3", "PutObject", "CreateMultipartUpload", "UploadPart")
        logged = "; ".join(f"{k} x{v}" for k, v in list(run["log_messages"].items())[:4])
        lines.append(
            _row(
                name,
                run["jobs"],
                _n(run["jobs_per_invocation"], 1),
                _n(run["wall_s_per_invocation"], 3),
                _n(run["cpu_s_per_invocation"], 3),
                _n(run["gb_s_per_job"], 4),
                f"{_n(gets)} / {_n(puts)}",
                _n(_calls_of(per_job, "secretsmanager")),
                _n(_calls_of(per_job, "sqs")),
                _n(run["log_bytes_per_job"] + run["emf_bytes_per_job"], 0),
                logged,
            )
        )
    return lines


def round_section(round_: dict[str, Any]) -> list[str]:
    kind = round_.get("mechanism")
    runs = {
        "scheduler": [
            ("Full reconcile, from nothing", "reconcile_full"),
            ("Full reconcile, nothing to change", "reconcile_steady"),
        ],
        "dispatcher": [("Dispatch", "dispatch")],
    }.get(str(kind), [])
    lines = [
        _row("Run", "Wall s", "CPU s", "Memory MB (CPU share)", "GB-s", "Result", "Calls"),
        "|---" * 7 + "|",
    ]
    for label, key in runs:
        run = round_[key]
        result = f"error: {run['error']}" if run.get("error") else run.get("result")
        share = f"{run['cpu_share']:.2f}" if run.get("cpu_share") else "not held"
        memory = f"{run['memory_mb']} ({share})"
        wall, cpu, gb_s = _n(run["wall_s"], 1), _n(run["cpu_s"], 1), _n(run["gb_s"], 1)
        lines.append(_row(label, wall, cpu, memory, gb_s, result, _calls_text(run["calls"])))
    for label, key in runs:
        slow = round_[key].get("moto_bound") or {}
        if slow:
            lines += [
                "",
                f"{label}: calls moto alone made slower than assumed (the time above is longer "
                f"than AWS's would be): {_calls_text(slow)}.",
            ]
    if kind == "scheduler":
        mismatched = len(round_.get("schedules_mismatched", []))
        lines += [
            "",
            f"Schedules created: {round_.get('schedules', 0):,}; "
            f"{_n(round_.get('schedules_checked', 0))} read back, {mismatched} of them with a "
            "rate other than the secret's interval.",
        ]
    return lines


def _state_line(state: dict[str, Any]) -> str:
    days = state.get("bytes_by_day", [])
    marks = {0, 6, 13, 29, len(days) - 1}
    curve = ", ".join(f"day {d + 1}: {b:,}" for d, b in enumerate(days) if d in marks)
    return (
        f"- Run state of one mailbox over {state.get('days')} simulated days, "
        f"{state.get('messages_per_day')} messages a day, a run every "
        f"{state.get('poll_minutes')} minutes ({state.get('runs')} runs): "
        f"{curve or 'not measured'} bytes; {state.get('state_puts', '?')} state writes; "
        f"{state.get('error_count', 0)} failed runs."
    )


def _assumptions(results: dict[str, Any]) -> list[str]:
    a, facts = results["assumptions"], results.get("deployment", {})
    shares = sorted(a["interval_mix_minutes"].items(), key=lambda item: int(item[0]))
    mix = ", ".join(f"{minutes} min ({share}/10)" for minutes, share in shares)
    return [
        f"- AWS is moto in its own process (`benchmarks/fleet_aws.py`). Every call lasts "
        f"{a['page_latency_ms']:.0f} ms if it returns a page of a listing (ListSecrets, "
        f"ListSchedules, ...) and {a['call_latency_ms']:.0f} ms otherwise (S3, SQS, "
        "GetSecretValue, CreateSchedule, ...); moto's own time counts towards it. Calls are "
        "counted at the endpoint, retries included.",
        f"- POP3: {a['pop3_server']}, {a['pop3_rtt_ms']:.0f} ms round trip (connect, TLS, "
        f"every command). New mail: {a['message_bytes']:,}-byte messages.",
        f"- The sample's mailboxes poll every {a['sample_interval_minutes']} minutes; the "
        "handler's clock (`time.time` in its process) moves past that between runs, so each "
        "measured run is due without waiting. Secret caches are cleared before each run "
        "(a container that has not seen the mailbox lately).",
        f"- The rest of the fleet polls every {mix}: what the round measures as due and not due.",
        "- Memory, batch size, tracing and the alarms, rules and dashboards counted are read "
        f"from template.yaml (Mode=fleet): {facts.get('memory_mb')} MB, batches of "
        f"{facts.get('batch_size')}, tracing {facts.get('tracing')}, {facts.get('alarms')} "
        f"alarms, {facts.get('insight_rules')} Contributor Insights rules, "
        f"{facts.get('dashboards')} dashboards.",
        "- The state is measured on one more mailbox, without latency (only sizes count), "
        "as the S3 object's size at the end of each simulated day.",
        "- Not modelled here: Lambda cold starts (a warm container serves many jobs at this "
        "scale), the Scheduler's own delivery time, S3 and Secrets Manager throttling.",
    ]


def render(results: dict[str, Any]) -> str:
    a, facts = results["assumptions"], results.get("deployment", {})
    metrics = results.get("metrics", {})
    share = a.get("cpu_share")
    cpu = (
        f"held to {share:.2f} of a CPU (a cgroup quota: Lambda's share at "
        f"{facts.get('memory_mb')} MB), so wall time is what Lambda would bill"
        if share
        else "NOT held to Lambda's CPU share (no cgroup here): wall times are optimistic"
    )
    fleet_names = ", ".join(metrics.get("fleet_level_names", [])) or "none"
    sections = [
        "# Fleet benchmark",
        "",
        f"`{results['command']}` on {results['generated']} (code {results['code_revision']}); "
        f"{a['mailboxes']:,} mailboxes, {a['sample']} of them run for real, in "
        f"{results['seconds']['total']:.0f} s. `make cost` turns these figures into docs/cost.md.",
        "",
        "## The figures",
        "",
        *headline(results),
        "",
        "## One round",
        "",
        *round_section(results.get("round", {})),
        "",
        "## Mailbox runs",
        "",
        "The real fetch handler on jobs from the FIFO jobs queue, received and deleted as "
        f"Lambda's SQS event source does (its calls are counted), {cpu}. An invocation lasts "
        "at least its CPU seconds divided by that share: where the two are close, the run is "
        "CPU-bound, and more memory buys time but not a smaller bill.",
        "",
        *runs_table(results.get("runs", {})),
        "",
        *(f"- **{k}**: {v}" for k, v in SCENARIOS.items()),
        "",
        "## Metrics and state",
        "",
        "- Custom metrics written by the runs (distinct namespace, name and dimension values): "
        f"{metrics.get('fleet_level', 0)} fleet-level, {_n(metrics.get('per_mailbox', 0))} per "
        f"mailbox. Fleet-level: {fleet_names}.",
        _state_line(results.get("state", {})),
        "",
        "## Assumptions and method",
        "",
        *_assumptions(results),
        "",
    ]
    return "\n".join(sections)
