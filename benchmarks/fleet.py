"""``make bench-fleet``: N mailboxes on one deployment, measured against moto with latency.

    .venv/bin/python -m benchmarks.fleet                 # N = 10,000 (BENCH_FLEET_N)
    BENCH_FLEET_N=100000 .venv/bin/python -m benchmarks.fleet
    .venv/bin/python -m benchmarks.fleet --help

Writes ``benchmarks/fleet.json`` (everything measured; ``make cost`` reads it)
and ``benchmarks/fleet.md``. What runs, in order (benchmarks/fleet.md says why):

1. moto in its own process, a latency per call (``benchmarks.fleet_aws``); N
   secrets tagged for the fleet; the first ``--sample`` name real mailboxes on
   Dovecot behind a line of ``--pop3-rtt-ms`` (``benchmarks.fleet_setup``).
2. One round: the reconciler or the dispatcher, whichever the code has, through
   its real handler (``benchmarks.fleet_round``).
3. The sample's runs: the real fetch handler on jobs, on Lambda's CPU share
   (``benchmarks.fleet_runner``), as the SQS event source hands them: first run,
   idle (batched and alone), with one and two new messages, not due, stale
   (``benchmarks.fleet_runs``).
4. One mailbox's run state through ``--state-days`` simulated days of mail.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.moto_server import leaky_env_names

from benchmarks.aws_server import REPO_ROOT
from benchmarks.fleet_aws import CALL_LATENCY_MS, PAGE_LATENCY_MS, FleetAws
from benchmarks.fleet_report import render
from benchmarks.fleet_round import SCHEDULE_GROUP, measure_dispatcher, measure_reconciler, mechanism
from benchmarks.fleet_runner import Runner
from benchmarks.fleet_runs import JobPlayer, Scenario, StatePlan, measure, state_after_days
from benchmarks.fleet_setup import (
    INTERVAL_MIX,
    SAMPLE_INTERVAL_MINUTES,
    TAG_KEY,
    TAG_VALUE,
    Population,
    SampleMailboxes,
    function_env,
    template_facts,
)

DEFAULT_MAILBOXES = 10_000
BUCKET = "fleet-mail"
POINTER_QUEUE = "fleet-pointers"
JOBS_QUEUE = "fleet-jobs.fifo"
STATE_SECRET = "fleet/state-sim"
_FETCH = "pop3_ingest.handlers.fetch.lambda_handler"
# The jobs queue as issue 10 wants it: FIFO, high throughput, a message per tick.
_JOBS_ATTRIBUTES = {
    "FifoQueue": "true",
    "ContentBasedDeduplication": "true",
    "DeduplicationScope": "messageGroup",
    "FifoThroughputLimit": "perMessageGroupId",
    "VisibilityTimeout": "900",
}


@dataclass(frozen=True)
class Options:
    mailboxes: int
    sample: int
    pop3_rtt_ms: float
    message_bytes: int
    page_latency_ms: float
    call_latency_ms: float
    state: StatePlan
    throttle: bool
    memory_mb: int | None
    out: Path
    argv: tuple[str, ...] = ()


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_n = int(os.environ.get("BENCH_FLEET_N") or DEFAULT_MAILBOXES)
    add = parser.add_argument
    add("--mailboxes", type=int, default=default_n, help="N (default: $BENCH_FLEET_N or 10000)")
    add("--sample", type=int, default=50, help="mailboxes whose runs are measured")
    add("--pop3-rtt-ms", type=float, default=40.0, help="round trip to the POP3 server")
    add("--message-bytes", type=int, default=40_000, help="size of the sample's new mail")
    add("--page-latency-ms", type=float, default=PAGE_LATENCY_MS)
    add("--call-latency-ms", type=float, default=CALL_LATENCY_MS)
    add("--state-days", type=int, default=30)
    add("--state-per-day", type=int, default=100)
    add(
        "--state-poll-minutes",
        type=int,
        default=360,
        help="simulated minutes between the state mailbox's runs (its size depends on the "
        "mail and the days, not on how often it is polled)",
    )
    add("--no-throttle", action="store_true", help="run the handler without Lambda's CPU share")
    add("--memory-mb", type=int, help="the fetch function's memory (default: the template's)")
    add("--out", type=Path, default=REPO_ROOT / "benchmarks")
    args = parser.parse_args(argv)
    if not 1 <= args.sample <= args.mailboxes:
        parser.error("--sample must be from 1 to --mailboxes")
    return Options(
        mailboxes=args.mailboxes,
        sample=args.sample,
        pop3_rtt_ms=args.pop3_rtt_ms,
        message_bytes=args.message_bytes,
        page_latency_ms=args.page_latency_ms,
        call_latency_ms=args.call_latency_ms,
        state=StatePlan(args.state_days, args.state_per_day, args.state_poll_minutes),
        throttle=not args.no_throttle,
        memory_mb=args.memory_mb,
        out=args.out,
        argv=tuple(sys.argv[1:] if argv is None else argv),
    )


def log(message: str) -> None:
    print(f"[bench-fleet {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the stack in moto -----------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    jobs_url: str
    resources: dict[str, str]  # environment variables naming stack resources


def provision(aws: FleetAws) -> Stack:
    aws.reset_moto()
    aws.client("s3").create_bucket(Bucket=BUCKET)
    sqs = aws.client("sqs")
    pointer_url = str(sqs.create_queue(QueueName=POINTER_QUEUE)["QueueUrl"])
    jobs_url = str(sqs.create_queue(QueueName=JOBS_QUEUE, Attributes=_JOBS_ATTRIBUTES)["QueueUrl"])
    jobs_arn = sqs.get_queue_attributes(QueueUrl=jobs_url, AttributeNames=["QueueArn"])
    aws.client("scheduler").create_schedule_group(Name=SCHEDULE_GROUP)
    resources = {
        "BUCKET_NAME": BUCKET,
        "QUEUE_URL": pointer_url,
        "JOBS_QUEUE_URL": jobs_url,
        "JOBS_QUEUE_ARN": jobs_arn["Attributes"]["QueueArn"],
        "SCHEDULE_GROUP": SCHEDULE_GROUP,
        "SCHEDULE_GROUP_NAME": SCHEDULE_GROUP,
        "SCHEDULER_ROLE_ARN": "arn:aws:iam::123456789012:role/pop3-ingest-scheduler",
        "MAILBOX_TAG_KEY": TAG_KEY,
        "MAILBOX_TAG_VALUE": TAG_VALUE,
    }
    return Stack(jobs_url=jobs_url, resources=resources)


def process_env(aws: FleetAws, handler_suffix: str, stack: Stack) -> dict[str, str]:
    """A function's process environment: the template's variables, our stack's
    resources, moto's endpoint; private hosts allowed (the mailboxes are on loopback)."""
    base = {k: v for k, v in os.environ.items() if k not in leaky_env_names(os.environ)}
    return (
        base
        | aws.env()
        | function_env(handler_suffix, stack.resources)
        | {
            "ALLOW_PRIVATE_HOSTS": "true",
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here; priced from the template
            "POWERTOOLS_METRICS_NAMESPACE": "Pop3Ingest",
        }
    )


# -- the phases ----------------------------------------------------------------------------


def round_phase(
    aws: FleetAws, stack: Stack, population: Population, facts: dict[str, Any], throttle: bool
) -> dict[str, Any]:
    kind = mechanism()
    helpers = facts.get("helper_functions", {})
    if kind == "scheduler":
        memory = int((helpers.get("reconcile") or {}).get("memory_mb") or 256)
        env = process_env(aws, "reconcile.lambda_handler", stack)
        with Runner(env, memory_mb=memory, throttle=throttle) as runner:
            return measure_reconciler(aws, runner, population)
    if kind == "dispatcher":
        memory = int((helpers.get("dispatch") or {}).get("memory_mb") or 256)
        env = process_env(aws, "dispatch.lambda_handler", stack)
        with Runner(env, memory_mb=memory, throttle=throttle) as runner:
            return measure_dispatcher(aws, runner, population, stack.jobs_url)
    return {"mechanism": "none"}


def sample_phase(
    aws: FleetAws,
    stack: Stack,
    mail: SampleMailboxes,
    population: Population,
    facts: dict[str, Any],
    throttle: bool,
) -> tuple[dict[str, Any], float | None]:
    memory, batch = int(facts.get("memory_mb") or 512), int(facts.get("batch_size") or 10)
    timeout_ms = int(facts.get("timeout_s") or 300) * 1000
    env = process_env(aws, _FETCH, stack)
    names = population.sample_names()
    results: dict[str, Any] = {}
    with Runner(env, memory_mb=memory, throttle=throttle) as runner:
        player = JobPlayer(aws, runner, stack.jobs_url)

        def step(
            name: str, size: int, *, advance: bool = True, deliver: int = 0, age: float = 0
        ) -> None:
            if advance:  # every sample mailbox is due again
                runner.advance((SAMPLE_INTERVAL_MINUTES + 1) * 60)
            runner.clear_caches()  # a container that has not seen these mailboxes lately
            for i in range(population.sample):
                mail.deliver(i, deliver)
            now = runner.now()
            scenario = Scenario(name, size, memory, messages_delivered=deliver * population.sample)
            log(f"runs: {name} ({len(names)} jobs, {size} per invocation)")
            measure(player, scenario, [(n, now - age) for n in names], timeout_ms=timeout_ms)
            scenario.messages_left = sum(mail.waiting(i) for i in range(population.sample))
            results[name] = scenario.summary()

        step("first_run", batch, advance=False)
        step("idle", batch)
        step("idle_unbatched", 1)
        step("mail_1", batch, deliver=1)
        step("not_due", batch, advance=False)
        step("mail_2", batch, deliver=2)
        step("stale", batch, advance=False, age=2 * 3600)
        share = runner.cpu_share_applied
    return results, share


def state_phase(
    aws: FleetAws, stack: Stack, mail: SampleMailboxes, plan: StatePlan
) -> dict[str, Any]:
    """One more mailbox, straight to Dovecot and AWS without latency: only sizes count."""
    user = "statesim"
    mail.dovecot.add_user(user, "pw-state-sim")
    # Due at every run: the clock moves ``poll_minutes`` on; 60 is the longest interval.
    interval = min(plan.poll_minutes, 60)
    secret = mail.dovecot.secret(user, mailbox="state-sim") | {"interval_minutes": interval}
    aws.client("secretsmanager").create_secret(
        Name=STATE_SECRET,
        SecretString=json.dumps(secret),
        Tags=[{"Key": TAG_KEY, "Value": TAG_VALUE}],
    )
    s3 = aws.client("s3")

    def state_size() -> int:
        sizes = [
            int(obj["Size"])
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for obj in page.get("Contents", [])
            if "state-sim" in obj["Key"] and "_state" in obj["Key"]
        ]
        return sum(sizes)

    sent = iter(range(10**9))

    def deliver(count: int) -> None:
        for _ in range(count):
            mail.dovecot.deliver(user, _small_message(next(sent), plan.message_bytes))

    env = process_env(aws, _FETCH, stack)
    aws.latency(False)
    try:
        with Runner(env, memory_mb=512, throttle=False) as runner:
            return state_after_days(
                aws,
                runner,
                plan=plan,
                secret_name=STATE_SECRET,
                deliver=deliver,
                state_size=state_size,
            )
    finally:
        aws.latency(True)


def _small_message(i: int, size: int) -> bytes:
    from tests.support.corpus import big_message

    return big_message(1_000_000 + i, size)


# -- results -----------------------------------------------------------------------------------


def metric_counts(
    scenarios: dict[str, Any], population: Population, extra: list[str]
) -> dict[str, Any]:
    """Distinct custom metrics the runs wrote: fleet-wide ones, and those per mailbox."""
    keys = set(extra)
    for scenario in scenarios.values():
        keys.update(scenario.get("metrics", []))
    mailboxes = {population.mailbox(i) for i in range(population.sample)}
    per_mailbox = sorted(k for k in keys if any(f"={m}" in k for m in mailboxes))
    fleet = sorted(keys - set(per_mailbox))
    seen = {m for m in mailboxes if any(f"={m}" in k for k in per_mailbox)}
    each = len(per_mailbox) / max(len(seen), 1)
    return {
        "fleet_level": len(fleet),
        "per_mailbox": each,
        "at_fleet_size": len(fleet) + each * population.size,
        "fleet_level_names": fleet,
        "per_mailbox_examples": per_mailbox[:20],
    }


def git_revision() -> str:
    def run(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    revision = run("rev-parse", "--short", "HEAD") or "unknown"
    return revision + ("+changes" if run("status", "--porcelain", "functions") else "")


def command(options: Options) -> str:
    """How to run this again."""
    text = "make bench-fleet"
    if options.argv:
        text = ".venv/bin/python -m benchmarks.fleet " + " ".join(options.argv)
    if os.environ.get("BENCH_FLEET_N"):
        text = f"BENCH_FLEET_N={os.environ['BENCH_FLEET_N']} {text}"
    return text


def run_benchmark(options: Options, progress: Callable[[str], None] = log) -> dict[str, Any]:
    facts = template_facts()
    if options.memory_mb:
        facts["memory_mb"] = options.memory_mb
    population = Population(options.mailboxes, options.sample)
    began = time.monotonic()
    with (
        FleetAws(options.page_latency_ms, options.call_latency_ms) as aws,
        SampleMailboxes(
            population, rtt_ms=options.pop3_rtt_ms, message_bytes=options.message_bytes
        ) as mail,
    ):
        aws.latency(False)
        stack = provision(aws)
        progress(f"setup: {options.mailboxes} secrets")
        aws.seed_secrets(list(population.entries(mail.secret)))
        aws.latency(True)
        setup_s = time.monotonic() - began
        progress(f"round: {mechanism()}")
        round_result = round_phase(aws, stack, population, facts, options.throttle)
        scenarios, share = sample_phase(aws, stack, mail, population, facts, options.throttle)
        progress(f"state: {options.state.days} days")
        state = state_phase(aws, stack, mail, options.state)
    extra = list(
        round_result.get("dispatch", round_result.get("reconcile_full", {})).get("metrics", [])
    )
    return {
        "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command(options),
        "code_revision": git_revision(),
        "assumptions": {
            "mailboxes": options.mailboxes,
            "sample": options.sample,
            "page_latency_ms": options.page_latency_ms,
            "call_latency_ms": options.call_latency_ms,
            "pop3_rtt_ms": options.pop3_rtt_ms,
            "pop3_server": "Dovecot, implicit TLS (pop3s), behind benchmarks.latency_proxy",
            "message_bytes": options.message_bytes,
            "interval_mix_minutes": {str(m): s for m, s in INTERVAL_MIX},
            "sample_interval_minutes": SAMPLE_INTERVAL_MINUTES,
            "cpu_share": share,
            "throttled": share is not None,
        },
        "deployment": facts,
        "round": round_result,
        "runs": scenarios,
        "metrics": metric_counts(scenarios, population, extra),
        "state": state,
        "seconds": {"setup": setup_s, "total": time.monotonic() - began},
    }


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "fleet.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    (out / "fleet.md").write_text(render(results))


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    results = run_benchmark(options)
    write(results, options.out)
    log(f"wrote {options.out / 'fleet.json'} and fleet.md in {results['seconds']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
