"""``make cost``: what a fleet costs per mailbox-month, from what the benchmark measured.

Reads ``benchmarks/fleet.json`` (``make bench-fleet``), applies AWS list prices
(:data:`PRICES`, us-east-1, arm64: the only home of every price) and writes
``docs/cost.md``: one line per billed item, for 1, 1,000 and 100,000 mailboxes
polled every 5 minutes with 100 messages a day, against the goal of $0.05 per
mailbox-month (Secrets Manager storage and the stored mail excluded, shown apart).

Nothing here is a guess about our code: calls, GB-seconds, log bytes and metrics
come from the benchmark's runs. What is assumed about AWS (how full a batch is
at a given rate, how often idle pollers receive, the platform's log lines,
X-Ray's sampling) is named in :data:`ASSUMPTIONS` and printed in the document.

    .venv/bin/python scripts/cost_model.py [--results benchmarks/fleet.json] [--out docs/cost.md]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
GOAL_PER_MAILBOX_MONTH = 0.05
FLEET_SIZES = (1, 1_000, 100_000)
GIB = 1024**3


@dataclass(frozen=True)
class Price:
    usd: float
    per: float  # units the price is for
    unit: str
    source: str


_URL_LAMBDA = "https://aws.amazon.com/lambda/pricing/"
_URL_SECRETS = "https://aws.amazon.com/secrets-manager/pricing/"
_URL_S3 = "https://aws.amazon.com/s3/pricing/"
_URL_SQS = "https://aws.amazon.com/sqs/pricing/"
_URL_SCHEDULER = "https://aws.amazon.com/eventbridge/pricing/"
_URL_CLOUDWATCH = "https://aws.amazon.com/cloudwatch/pricing/"
_URL_XRAY = "https://aws.amazon.com/xray/pricing/"

# us-east-1 list prices, without free tiers (a fleet outgrows them; a small
# deployment pays less), as the pages named listed them in December 2026. The
# script does not fetch them: check the pages before relying on a figure.
PRICES_CHECKED = "2026-12"
PRICES: dict[str, Price] = {
    "lambda_request": Price(0.20, 1e6, "requests", _URL_LAMBDA),
    "lambda_gb_s_arm64": Price(
        0.0000133334, 1, "GB-second (arm64, first 7.5 billion)", _URL_LAMBDA
    ),
    "secrets_api": Price(0.05, 10_000, "API calls", _URL_SECRETS),
    "secret_month": Price(0.40, 1, "secret-month", _URL_SECRETS),
    "s3_tier1": Price(0.005, 1_000, "PUT, COPY, POST, LIST requests", _URL_S3),
    "s3_tier2": Price(0.0004, 1_000, "GET, HEAD and other requests", _URL_S3),
    "s3_storage": Price(0.023, 1, "GB-month (Standard, first 50 TB)", _URL_S3),
    "sqs_fifo": Price(0.50, 1e6, "FIFO requests (64 KB each)", _URL_SQS),
    "sqs_standard": Price(0.40, 1e6, "standard requests (64 KB each)", _URL_SQS),
    "scheduler_invocation": Price(1.00, 1e6, "EventBridge Scheduler invocations", _URL_SCHEDULER),
    "alarm_metric": Price(0.10, 1, "alarm metric-month (standard resolution)", _URL_CLOUDWATCH),
    "insight_rule": Price(0.50, 1, "Contributor Insights rule-month", _URL_CLOUDWATCH),
    "insight_events": Price(0.02, 1e6, "log events matched by a rule", _URL_CLOUDWATCH),
    "dashboard": Price(3.00, 1, "dashboard-month", _URL_CLOUDWATCH),
    "logs_ingest": Price(0.50, 1, "GB ingested (standard)", _URL_CLOUDWATCH),
    "logs_storage": Price(0.03, 1, "GB-month archived", _URL_CLOUDWATCH),
    "xray_trace": Price(5.00, 1e6, "traces recorded", _URL_XRAY),
}
# Custom metrics, per metric-month: (metrics up to here, price) in tiers.
METRIC_TIERS = ((10_000, 0.30), (250_000, 0.10), (1_000_000, 0.05), (math.inf, 0.02))

# What is assumed about AWS, not measured here (each is printed in docs/cost.md).
ASSUMPTIONS: dict[str, tuple[float, str]] = {
    "poll_gap_s": (
        1.0,
        "seconds of arriving jobs one receive of Lambda's SQS poller collects when the "
        "source has no batching window: a batch holds min(BatchSize, jobs/s x max(window, this))",
    ),
    "idle_pollers": (
        5.0,
        "long-polling connections Lambda keeps on the jobs queue, each an empty receive "
        "every 20 s when there is nothing (a fixed cost of the queue)",
    ),
    "long_poll_s": (20.0, "seconds one empty long poll lasts"),
    "platform_log_bytes": (
        350.0,
        "bytes of Lambda's own START, END and REPORT lines per invocation",
    ),
    "xray_reservoir_per_s": (1.0, "traces X-Ray's default sampling rule keeps each second"),
    "xray_rate": (0.05, "share of further requests X-Ray's default rule samples"),
    "daily_reconciles": (30.0, "full reconciles a month (the daily schedule)"),
}


def assumed(name: str) -> float:
    return ASSUMPTIONS[name][0]


@dataclass(frozen=True)
class Workload:
    """The fleet the goal is stated for."""

    mailboxes: int
    poll_minutes: float = 5
    messages_per_day: float = 100
    days: float = 30

    @property
    def runs_per_mailbox(self) -> float:
        return self.days * 24 * 60 / self.poll_minutes

    @property
    def messages_per_run(self) -> float:
        return self.messages_per_day * self.poll_minutes / (24 * 60)

    @property
    def jobs(self) -> float:
        return self.mailboxes * self.runs_per_mailbox

    @property
    def seconds(self) -> float:
        return self.days * 86_400


def cost(price: str, quantity: float) -> float:
    p = PRICES[price]
    return p.usd * quantity / p.per


def metric_cost(count: float) -> float:
    """Custom metrics per month, tier by tier."""
    total, below = 0.0, 0.0
    for ceiling, usd in METRIC_TIERS:
        in_tier = max(0.0, min(count, ceiling) - below)
        total += in_tier * usd
        below = ceiling
        if count <= ceiling:
            break
    return total


def traced(invocations: float, seconds: float) -> float:
    """Traces X-Ray's default rule records: a reservoir per second, then a share."""
    reservoir = assumed("xray_reservoir_per_s") * seconds
    if invocations <= reservoir:
        return invocations
    return reservoir + assumed("xray_rate") * (invocations - reservoir)


# -- per job, from the measured runs ------------------------------------------------------

Measure = Callable[[Mapping[str, Any]], float]


def calls(*operations: str) -> Measure:
    """Calls per job of these ``service:Operation``\\ s."""
    return lambda run: sum(float(run["calls_per_job"].get(op, 0.0)) for op in operations)


def value_of(name: str) -> Measure:
    return lambda run: float(run[name])


def log_bytes(run: Mapping[str, Any]) -> float:
    return float(run["log_bytes_per_job"]) + float(run["emf_bytes_per_job"])


@dataclass(frozen=True)
class Runs:
    """The benchmark's scenarios, combined into the expected cost of one job."""

    runs: Mapping[str, Mapping[str, Any]]

    @property
    def measured_batch(self) -> float:
        return float(self.runs["idle"]["jobs_per_invocation"])

    def idle_at(self, measure: Measure, batch: float) -> float:
        """Per job, idle, when invocations hold ``batch`` jobs: the invocation's total
        interpolated between one job alone and the measured batch."""
        alone, full = self.runs["idle_unbatched"], self.runs["idle"]
        per_invocation_1 = measure(alone) * float(alone["jobs_per_invocation"])
        per_invocation_b = measure(full) * self.measured_batch
        if self.measured_batch <= 1:
            return measure(full)
        slope = (per_invocation_b - per_invocation_1) / (self.measured_batch - 1)
        return (per_invocation_1 + slope * (batch - 1)) / batch

    def per_job(self, measure: Measure, batch: float, messages_per_run: float) -> float:
        """Expected per job: idle at ``batch``, plus what one and each further new
        message add (Poisson arrivals, ``messages_per_run`` on average)."""
        idle, one, two = (measure(self.runs[k]) for k in ("idle", "mail_1", "mail_2"))
        some_mail = 1 - math.exp(-messages_per_run)
        further = messages_per_run - some_mail  # E[messages - 1; at least one]
        return self.idle_at(measure, batch) + some_mail * (one - idle) + further * (two - one)


def batch_size(results: Mapping[str, Any], workload: Workload) -> float:
    """Jobs per invocation at this fleet's rate (see ASSUMPTIONS["poll_gap_s"])."""
    facts = results["deployment"]
    limit = float(facts.get("batch_size") or 1)
    window = max(float(facts.get("batching_window_s") or 0), assumed("poll_gap_s"))
    rate = workload.mailboxes / (workload.poll_minutes * 60)
    return min(limit, max(1.0, rate * window))


# -- the bill, line by line ------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    item: str
    usd: float  # the whole fleet, per month
    quantity: str  # what is billed, per mailbox-month, in words


@dataclass(frozen=True)
class Fleet:
    """One fleet size: the measured runs, scaled; the helper function's share."""

    results: Mapping[str, Any]
    workload: Workload

    @property
    def runs(self) -> Runs:
        return Runs(self.results["runs"])

    @property
    def batch(self) -> float:
        return batch_size(self.results, self.workload)

    def per_job(self, measure: Measure) -> float:
        return self.runs.per_job(measure, self.batch, self.workload.messages_per_run)

    def per_mailbox(self, monthly: float) -> float:
        return monthly / self.workload.mailboxes

    @property
    def invocations(self) -> float:
        return self.workload.jobs / self.batch

    @property
    def mechanism(self) -> str:
        return str(self.results["round"].get("mechanism", "none"))

    def helper_runs(self) -> tuple[Mapping[str, Any], float]:
        """The round's own function: (one measured run, runs a month at this size).
        Its work grows with the fleet: scaled from the benchmark's N."""
        round_ = self.results["round"]
        scale = self.workload.mailboxes / float(self.results["assumptions"]["mailboxes"])
        if self.mechanism == "scheduler":
            return round_["reconcile_steady"], assumed("daily_reconciles") * scale
        if self.mechanism == "dispatcher":
            return round_["dispatch"], self.workload.runs_per_mailbox * scale
        return {"calls": {}, "gb_s": 0.0, "log_bytes": 0}, 0.0

    def helper_invocations(self) -> float:
        if self.mechanism == "scheduler":
            return assumed("daily_reconciles")
        if self.mechanism == "dispatcher":
            return self.workload.runs_per_mailbox
        return 0.0

    def helper_calls(self, service: str, *operations: str) -> float:
        run, times = self.helper_runs()
        return times * sum(
            float(v)
            for k, v in run["calls"].items()
            if k.startswith(f"{service}:") and (not operations or k.split(":", 1)[1] in operations)
        )


_S3_TIER1 = (
    "s3:PutObject",
    "s3:CreateMultipartUpload",
    "s3:UploadPart",
    "s3:CompleteMultipartUpload",
    "s3:ListObjects",
    "s3:CopyObject",
)
_S3_TIER2 = ("s3:GetObject", "s3:HeadObject")
_SECRETS_CALLS = (
    "secretsmanager:GetSecretValue",
    "secretsmanager:BatchGetSecretValue",
    "secretsmanager:DescribeSecret",
    "secretsmanager:ListSecrets",
)
# The poller's calls on the jobs queue (FIFO); the handler's own sends are pointers.
_SQS_JOBS = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:DeleteMessageBatch",
    "sqs:ChangeMessageVisibility",
    "sqs:ChangeMessageVisibilityBatch",
)
_SQS_POINTERS = ("sqs:SendMessage", "sqs:SendMessageBatch")


def lambda_lines(fleet: Fleet) -> list[Line]:
    helper, times = fleet.helper_runs()
    requests = fleet.invocations + fleet.helper_invocations()
    gb_s = fleet.workload.jobs * fleet.per_job(value_of("gb_s_per_job"))
    gb_s += times * float(helper.get("gb_s", 0.0))
    return [
        Line(
            "Lambda requests",
            cost("lambda_request", requests),
            f"{fleet.per_mailbox(requests):,.0f} invocations ({fleet.batch:.1f} jobs each)",
        ),
        Line(
            "Lambda GB-seconds (arm64)",
            cost("lambda_gb_s_arm64", gb_s),
            f"{fleet.per_mailbox(gb_s):,.1f} GB-s",
        ),
    ]


def secrets_line(fleet: Fleet) -> Line:
    count = fleet.workload.jobs * fleet.per_job(calls(*_SECRETS_CALLS))
    count += fleet.helper_calls("secretsmanager")
    return Line(
        "Secrets Manager API calls",
        cost("secrets_api", count),
        f"{fleet.per_mailbox(count):,.0f} calls",
    )


def s3_lines(fleet: Fleet) -> list[Line]:
    jobs, mail = fleet.workload.jobs, fleet.workload.messages_per_run * fleet.workload.jobs
    tier1 = jobs * fleet.per_job(calls(*_S3_TIER1))
    tier2 = jobs * fleet.per_job(calls(*_S3_TIER2))
    state = fleet.results["state"]
    state_bytes = float(state.get("bytes_final", 0))
    # Old versions of the state live a day (the bucket's lifecycle rule).
    state_puts = max(0.0, fleet.per_job(calls("s3:PutObject")) - fleet.workload.messages_per_run)
    old_versions = state_puts * fleet.workload.runs_per_mailbox / fleet.workload.days
    stored = fleet.workload.mailboxes * state_bytes * (1 + old_versions) / GIB
    return [
        Line(
            "S3 PUT/LIST requests",
            cost("s3_tier1", tier1),
            f"{fleet.per_mailbox(tier1):,.0f} requests, {fleet.per_mailbox(mail):,.0f} of them "
            "mail objects (one per message)",
        ),
        Line(
            "S3 GET/HEAD requests",
            cost("s3_tier2", tier2),
            f"{fleet.per_mailbox(tier2):,.0f} requests",
        ),
        Line(
            "S3 storage of run state (+1 day of old versions)",
            cost("s3_storage", stored),
            f"{state_bytes:,.0f} bytes, {state_puts * fleet.workload.runs_per_mailbox:,.0f} "
            "writes a month",
        ),
    ]


def sqs_line(fleet: Fleet) -> Line:
    jobs = fleet.workload.jobs
    fifo = jobs * fleet.per_job(calls(*_SQS_JOBS))
    if fleet.mechanism == "scheduler":
        fifo += jobs  # the Scheduler's SendMessage, one per tick
    fifo += fleet.helper_calls("sqs")  # the dispatcher's sends
    fifo += assumed("idle_pollers") * fleet.workload.seconds / assumed("long_poll_s")
    pointers = jobs * fleet.per_job(calls(*_SQS_POINTERS))
    usd = cost("sqs_fifo", fifo) + cost("sqs_standard", pointers)
    return Line(
        "SQS requests",
        usd,
        f"{fleet.per_mailbox(fifo):,.0f} on the jobs queue (FIFO, idle polling included), "
        f"{fleet.per_mailbox(pointers):,.0f} pointer batches",
    )


def scheduler_line(fleet: Fleet) -> Line:
    ticks = fleet.workload.jobs if fleet.mechanism == "scheduler" else 0.0
    ticks += assumed("daily_reconciles") if fleet.mechanism == "scheduler" else 0.0
    return Line(
        "EventBridge Scheduler invocations",
        cost("scheduler_invocation", ticks),
        f"{fleet.per_mailbox(ticks):,.0f} ticks",
    )


def cloudwatch_lines(fleet: Fleet) -> list[Line]:
    facts, metrics = fleet.results["deployment"], fleet.results["metrics"]
    count = float(metrics["fleet_level"]) + float(metrics["per_mailbox"]) * fleet.workload.mailboxes
    alarms = float(facts.get("alarm_metrics", 0)) + float(facts.get("metrics_insights_alarms", 0))
    rules = float(facts.get("insight_rules", 0))
    matched = fleet.workload.jobs if rules else 0.0  # every run's line, at most
    dashboards = float(facts.get("dashboards", 0))
    return [
        Line("CloudWatch custom metrics", metric_cost(count), f"{count:,.0f} metrics in the fleet"),
        Line("CloudWatch alarms", cost("alarm_metric", alarms), f"{alarms:,.0f} alarm metrics"),
        Line(
            "Contributor Insights",
            cost("insight_rule", rules) + cost("insight_events", matched),
            f"{rules:,.0f} rule(s), {fleet.per_mailbox(matched):,.0f} log events matched",
        ),
        Line("CloudWatch dashboards", cost("dashboard", dashboards), f"{dashboards:,.0f}"),
    ]


def logs_lines(fleet: Fleet) -> list[Line]:
    helper, times = fleet.helper_runs()
    ingested = fleet.workload.jobs * fleet.per_job(log_bytes)
    ingested += fleet.invocations * assumed("platform_log_bytes")
    ingested += times * float(helper.get("log_bytes", 0))
    gib = ingested / GIB
    return [
        Line(
            "CloudWatch Logs ingestion",
            cost("logs_ingest", gib),
            f"{fleet.per_mailbox(ingested) / 1e6:,.2f} MB",
        ),
        Line("CloudWatch Logs storage (a month kept)", cost("logs_storage", gib), "same bytes"),
    ]


def xray_line(fleet: Fleet) -> Line:
    facts = fleet.results["deployment"]
    active = str(facts.get("tracing", "")).lower() == "active"
    traces = traced(fleet.invocations, fleet.workload.seconds) if active else 0.0
    return Line(
        "X-Ray traces (Tracing: Active, default sampling)",
        cost("xray_trace", traces),
        f"{fleet.per_mailbox(traces):,.1f} traces",
    )


def bill(results: Mapping[str, Any], workload: Workload) -> list[Line]:
    """Every line item of one fleet size, per month for the whole fleet."""
    fleet = Fleet(results, workload)
    return [
        *lambda_lines(fleet),
        secrets_line(fleet),
        *s3_lines(fleet),
        sqs_line(fleet),
        scheduler_line(fleet),
        *cloudwatch_lines(fleet),
        *logs_lines(fleet),
        xray_line(fleet),
    ]


def excluded(results: Mapping[str, Any], workload: Workload) -> list[Line]:
    """Per mailbox-month, outside the goal: the secret's storage, the mail itself."""
    message_bytes = float(results["assumptions"].get("message_bytes", 0))
    mail_gib = workload.messages_per_day * workload.days * message_bytes / GIB
    return [
        Line("Secrets Manager storage", cost("secret_month", 1), "one secret per mailbox"),
        Line(
            "S3 storage of the mail received in a month",
            cost("s3_storage", mail_gib),
            f"{mail_gib * 1024:,.0f} MiB of {message_bytes:,.0f}-byte messages, growing monthly",
        ),
    ]


# -- docs/cost.md ---------------------------------------------------------------------------------


def usd(value: float) -> str:
    if value == 0:
        return "0"
    if value < 0.0001:
        return f"{value:.6f}"
    return f"{value:.4f}"


def totals(results: Mapping[str, Any]) -> dict[int, list[Line]]:
    return {n: bill(results, Workload(n)) for n in FLEET_SIZES}


def mail_puts(workload: Workload) -> float:
    """The mail's own S3 PUTs, per mailbox-month: one per message (in the PUT/LIST line)."""
    return cost("s3_tier1", workload.messages_per_day * workload.days)


def per_mailbox_total(results: Mapping[str, Any], n: int) -> float:
    return sum(line.usd for line in bill(results, Workload(n))) / n


def bill_table(results: Mapping[str, Any]) -> list[str]:
    bills = totals(results)
    head = " | ".join(f"{n:,} mailbox{'es' if n > 1 else ''}" for n in FLEET_SIZES)
    billed = f"Billed, per mailbox-month at {FLEET_SIZES[-1]:,}"
    rows = [
        f"| Line item ($ per mailbox-month) | {head} | {billed} |",
        "|---" * (len(FLEET_SIZES) + 2) + "|",
    ]
    for i, line in enumerate(bills[FLEET_SIZES[-1]]):
        amounts = " | ".join(usd(bills[n][i].usd / n) for n in FLEET_SIZES)
        rows.append(f"| {line.item} | {amounts} | {line.quantity} |")
    each = {n: sum(x.usd for x in bills[n]) / n for n in FLEET_SIZES}

    def cells(value: Callable[[int], str]) -> str:
        return " | ".join(value(n) for n in FLEET_SIZES)

    rows += [
        f"| **Total per mailbox-month** | {cells(lambda n: f'**{usd(each[n])}**')} | |",
        "| Total without the mail's own PUTs (one per message) | "
        f"{cells(lambda n: usd(each[n] - mail_puts(Workload(n))))} | |",
        f"| Whole fleet per month ($) | {cells(lambda n: f'{each[n] * n:,.2f}')} | |",
        f"| Goal: at most ${GOAL_PER_MAILBOX_MONTH} per mailbox-month | "
        f"{cells(lambda n: 'met' if each[n] <= GOAL_PER_MAILBOX_MONTH else '**not met**')} | |",
    ]
    return rows


def verdict(results: Mapping[str, Any]) -> list[str]:
    n = FLEET_SIZES[-1]
    lines = bill(results, Workload(n))
    total = per_mailbox_total(results, n)
    ranked = sorted(lines, key=lambda x: x.usd, reverse=True)[:3]
    largest = ", ".join(f"{x.item} ${usd(x.usd / n)}" for x in ranked)
    without_mail = total - mail_puts(Workload(n))
    mail = (
        f" Of it, ${usd(mail_puts(Workload(n)))} is the mail's own PUTs (one per message); "
        f"without them ${without_mail:.4f}."
    )
    if total <= GOAL_PER_MAILBOX_MONTH:
        return [
            f"At {n:,} mailboxes: **${total:.4f} per mailbox-month, within the goal of "
            f"${GOAL_PER_MAILBOX_MONTH}**. Largest items: {largest}.{mail}"
        ]
    return [
        f"At {n:,} mailboxes: **${total:.4f} per mailbox-month, over the goal of "
        f"${GOAL_PER_MAILBOX_MONTH}**. What stands in the way: {largest}.{mail}"
    ]


def price_text(price: Price) -> str:
    amount = f"{price.usd:.10f}".rstrip("0").rstrip(".")
    per = f"{price.per:,.0f} " if price.per != 1 else ""
    return f"${amount} per {per}{price.unit}"


def _tiers() -> str:
    return ", ".join(
        f"${usd_:.2f} up to {ceiling:,.0f}" if ceiling != math.inf else f"${usd_:.2f} beyond"
        for ceiling, usd_ in METRIC_TIERS
    )


def _method(results: Mapping[str, Any]) -> list[str]:
    a = results["assumptions"]
    if results["round"].get("mechanism") == "scheduler":
        round_text = (
            "the reconciler's daily full run (measured at the benchmark's N, scaled to the "
            "fleet), and one Scheduler invocation plus one SQS SendMessage per tick."
        )
    else:
        round_text = "one dispatcher run per round (measured at the benchmark's N, scaled)."
    return [
        "- Per job, from the benchmark's runs (benchmarks/fleet.md): an idle run at the batch "
        "size this fleet's rate fills (interpolated between one job alone and a full batch, "
        "both measured), plus what a run with one new message and each further message add "
        "(measured).",
        "- Lambda GB-seconds: wall time of each measured invocation, on Lambda's CPU share, "
        "times its memory, per job. Requests: jobs divided by the batch size.",
        f"- The round: {round_text}",
        "- S3: PUT, COPY, POST and LIST at the first price, GET and HEAD at the second; the "
        "state object and a day of its old versions stored.",
        "- Custom metrics: the distinct metrics the runs wrote (fleet-level ones once, "
        f"per-mailbox ones once per mailbox), priced in tiers: {_tiers()}.",
        "- Alarms, Contributor Insights rules and dashboards: counted in template.yaml "
        "(Mode=fleet), a Metrics Insights alarm as one alarm metric; every run's log line is "
        "counted as matched by the rule (an upper bound).",
        "",
        "Assumed about AWS, not measured:",
        "",
        *(f"- `{name}` = {value:g}: {text}." for name, (value, text) in ASSUMPTIONS.items()),
        f"- Benchmark: {a['page_latency_ms']:.0f} ms per listing page, "
        f"{a['call_latency_ms']:.0f} ms per other AWS call, {a['pop3_rtt_ms']:.0f} ms POP3 "
        "round trip (benchmarks/fleet.md).",
        "- Secrets Manager bills BatchGetSecretValue as one API call (the pricing page counts "
        "API calls); were it billed per secret returned, the Secrets Manager line would be the "
        "secrets read per job instead of the calls.",
    ]


def _prices() -> list[str]:
    return [
        f"## Prices (us-east-1, list, no free tier; as of {PRICES_CHECKED}, not fetched: "
        "check the pages)",
        "",
        "| Item | Price | Source |",
        "|---|---|---|",
        *(f"| {name} | {price_text(p)} | {p.source} |" for name, p in PRICES.items()),
        f"| custom metrics | {_tiers()} per metric-month | {_URL_CLOUDWATCH} |",
    ]


def render(results: Mapping[str, Any], source: str) -> str:
    facts, work = results["deployment"], Workload(FLEET_SIZES[-1])
    lines = [
        "# What a fleet costs",
        "",
        f"Written by `make cost` (scripts/cost_model.py) from `{source}` "
        f"(`{results['command']}`, {results['generated']}, code {results['code_revision']}). "
        "Do not edit by hand: re-run the benchmark and `make cost`.",
        "",
        f"Every mailbox polled every {work.poll_minutes:g} minutes "
        f"({work.runs_per_mailbox:,.0f} runs a month) with {work.messages_per_day:g} messages "
        f"a day ({work.messages_per_run:.3f} per run, Poisson). Mechanism measured: "
        f"**{results['round'].get('mechanism')}**; {facts.get('memory_mb')} MB arm64, batches "
        f"of up to {facts.get('batch_size')} jobs.",
        "",
        *verdict(results),
        "",
        *bill_table(results),
        "",
        "A fleet of one pays the fleet's fixed costs alone (dashboard, alarms, metrics, the "
        "Contributor Insights rule, idle polling of the jobs queue); most of them are inside "
        "AWS's free tier, which this model leaves out. One mailbox is what Mode=single is for.",
        "",
        "## Outside the goal",
        "",
        *(f"- {x.item}: ${usd(x.usd)} a month ({x.quantity})." for x in excluded(results, work)),
        "",
        "## How each line is computed",
        "",
        *_method(results),
        "",
        *_prices(),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "benchmarks" / "fleet.json")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "cost.md")
    args = parser.parse_args(argv)
    if not args.results.exists():
        print(f"{args.results} not found: run `make bench-fleet` first", file=sys.stderr)
        return 2
    results = json.loads(args.results.read_text())
    try:
        shown = args.results.resolve().relative_to(REPO_ROOT)
    except ValueError:
        shown = args.results
    args.out.write_text(render(results, str(shown)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
