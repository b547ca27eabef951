"""What the fleet benchmark stands on: the deployment as the template declares it,
N mailbox secrets in moto, and real POP3 mailboxes for the sample behind a slow line.

- :func:`template_facts`: memory, timeout, the jobs event source's batch, tracing,
  and how many alarms, Contributor Insights rules, dashboards and saved queries a
  Mode=fleet stack creates. Read from ``template.yaml``, whatever it holds today.
- :class:`Population`: N secrets tagged for the fleet (names, intervals, values);
  the first ``sample`` of them name real mailboxes.
- :class:`SampleMailboxes`: those mailboxes on one Dovecot (implicit TLS, a real
  server), reached through :class:`benchmarks.latency_proxy.LatencyProxy`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from tests.support.cfn_template import Template, load_template
from tests.support.corpus import big_message
from tests.support.dovecot import DovecotServer

from benchmarks.latency_proxy import LatencyProxy

TAG_KEY = "pop3-ingest"
TAG_VALUE = "enabled"
# Polling intervals of the simulated fleet (minutes -> share of mailboxes). The
# cost goal is stated for 5 minutes; the others show what not-due ticks cost.
INTERVAL_MIX = ((5, 8), (15, 1), (60, 1))
# The sample's interval: the benchmark's clock moves past it between rounds.
SAMPLE_INTERVAL_MINUTES = 5
_FETCH_HANDLER = "pop3_ingest.handlers.fetch.lambda_handler"


# -- the template -----------------------------------------------------------------------


def _function_by_handler(template: Template, suffix: str) -> str | None:
    for name in template.functions():
        if str(template.props(name).get("Handler", "")).endswith(suffix):
            return name
    return None


def _event_source(template: Template, params: dict[str, str], function: str) -> dict[str, Any]:
    for name, resource in template.of_type("AWS::Lambda::EventSourceMapping").items():
        if not template.exists(name, params):
            continue
        props = template.resolve(resource["Properties"], params)
        target = props.get("FunctionName")
        if target == {"Ref": function} or target == function:
            return dict(props)
    return {}


def _counts(template: Template, params: dict[str, str], kinds: dict[str, str]) -> dict[str, int]:
    existing = template.existing(params)
    return {
        label: sum(1 for n in template.of_type(kind) if n in existing)
        for label, kind in kinds.items()
    }


def _alarm_metrics(template: Template, params: dict[str, str]) -> dict[str, int]:
    """Alarm metrics as CloudWatch bills them: one per alarm on a metric, one per
    metric of a math expression; Metrics Insights queries counted apart."""
    plain = queries = 0
    for name, alarm in template.of_type("AWS::CloudWatch::Alarm").items():
        if not template.exists(name, params):
            continue
        props = template.resolve(alarm["Properties"], params)
        metrics = props.get("Metrics") or []
        if not metrics:
            plain += 1
            continue
        for metric in metrics:
            expression = str(metric.get("Expression", ""))
            if "SELECT" in expression.upper():
                queries += 1
            elif "MetricStat" in metric or "INSIGHT_RULE_METRIC" in expression:
                plain += 1
    return {"alarm_metrics": plain, "metrics_insights_alarms": queries}


def template_facts(mode: str = "fleet") -> dict[str, Any]:
    """What the deployment's bill depends on, as the template declares it for ``mode``."""
    template = load_template()
    params = template.params(Mode=mode)
    fetch = _function_by_handler(template, _FETCH_HANDLER)
    facts: dict[str, Any] = {"mode": mode, "fetch_function": fetch}
    if fetch is not None:
        props = template.resolve(template.props(fetch), params)
        source = _event_source(template, params, fetch)
        facts |= {
            "memory_mb": props.get("MemorySize"),
            "timeout_s": props.get("Timeout"),
            "tracing": props.get("Tracing"),
            "batch_size": source.get("BatchSize", 1) if source else None,
            "batching_window_s": source.get("MaximumBatchingWindowInSeconds", 0)
            if source
            else None,
        }
    helpers = {}
    for suffix in ("reconcile.lambda_handler", "dispatch.lambda_handler"):
        name = _function_by_handler(template, suffix)
        if name is not None and template.exists(name, params):
            props = template.resolve(template.props(name), params)
            helpers[suffix.split(".")[0]] = {
                "function": name,
                "memory_mb": props.get("MemorySize"),
                "tracing": props.get("Tracing"),
            }
    facts["helper_functions"] = helpers
    facts |= _counts(
        template,
        params,
        {
            "alarms": "AWS::CloudWatch::Alarm",
            "insight_rules": "AWS::CloudWatch::InsightRule",
            "dashboards": "AWS::CloudWatch::Dashboard",
            "query_definitions": "AWS::Logs::QueryDefinition",
            "schedules": "AWS::Scheduler::Schedule",
            "event_rules": "AWS::Events::Rule",
        },
    )
    facts |= _alarm_metrics(template, params)
    return facts


def function_env(
    handler_suffix: str, resources: dict[str, str], mode: str = "fleet"
) -> dict[str, str]:
    """The function's environment as the template sets it for ``mode``: plain values
    as written, values that name a stack resource from ``resources`` (by variable)."""
    template = load_template()
    params = template.params(Mode=mode)
    name = _function_by_handler(template, handler_suffix)
    env: dict[str, str] = {}
    if name is not None:
        props = template.resolve(template.props(name), params)
        variables = (props.get("Environment") or {}).get("Variables") or {}
        for key, value in variables.items():
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                env[key] = str(value)
    return env | resources


# -- the secrets ----------------------------------------------------------------------


def interval_of(index: int) -> int:
    """The polling interval of mailbox ``index`` (INTERVAL_MIX, spread evenly)."""
    slot = index % sum(share for _, share in INTERVAL_MIX)
    for minutes, share in INTERVAL_MIX:
        if slot < share:
            return minutes
        slot -= share
    raise AssertionError("unreachable")


def due_per_round(intervals: list[int], round_minutes: int = 5) -> float:
    """Mailboxes that are due in one round of ``round_minutes``, on average."""
    return sum(round_minutes / minutes for minutes in intervals)


@dataclass
class Population:
    """N mailbox secrets; ``sample`` of them (the first) name real mailboxes."""

    size: int
    sample: int
    prefix: str = "fleet/mbox-"
    intervals: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.intervals = [
            SAMPLE_INTERVAL_MINUTES if i < self.sample else interval_of(i) for i in range(self.size)
        ]

    def name(self, index: int) -> str:
        return f"{self.prefix}{index:06d}"

    def mailbox(self, index: int) -> str:
        return f"mbox-{index:06d}"

    def sample_names(self) -> list[str]:
        return [self.name(i) for i in range(self.sample)]

    def entries(self, sample_secret: Callable[[int], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Every secret: ``sample_secret(i)`` for the sample, a stand-in elsewhere."""
        tags = [{"Key": TAG_KEY, "Value": TAG_VALUE}]
        for i in range(self.size):
            if i < self.sample:
                value = sample_secret(i)
            else:  # never run: only listed, scheduled and read
                value = {
                    "host": f"pop.tenant-{i % 997}.example.com",
                    "username": f"user{i}@tenant-{i % 997}.example.com",
                    "password": f"pw-{i:06d}-not-real",
                    "mailbox": self.mailbox(i),
                }
            value["interval_minutes"] = self.intervals[i]
            yield {"name": self.name(i), "value": json.dumps(value), "tags": tags}


# -- the sample's mailboxes ---------------------------------------------------------------


class SampleMailboxes:
    """Real mailboxes on one Dovecot (implicit TLS) behind a line of ``rtt_ms``."""

    def __init__(self, population: Population, *, rtt_ms: float, message_bytes: int) -> None:
        self.population = population
        self.rtt_ms = rtt_ms
        self.message_bytes = message_bytes
        self.dovecot = DovecotServer(auth_failure_delay_s=0)
        self.proxy: LatencyProxy | None = None
        self._sent = 0

    def start(self) -> Self:
        self.dovecot.start()
        for i in range(self.population.sample):
            self.dovecot.add_user(self.user(i), f"pw-{i}-sample")
        self.proxy = LatencyProxy(
            "127.0.0.1", self.dovecot.pop3s_port, self.rtt_ms, max_connections=64
        ).start()
        return self

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        self.dovecot.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def user(index: int) -> str:
        return f"sample{index:04d}"

    def secret(self, index: int, *, direct: bool = False) -> dict[str, Any]:
        """The secret of sample mailbox ``index``: through the slow line, or ``direct``."""
        assert self.proxy is not None
        port = self.dovecot.pop3s_port if direct else self.proxy.port
        return self.dovecot.secret(
            self.user(index), port=port, mailbox=self.population.mailbox(index)
        )

    def deliver(self, index: int, count: int = 1, size: int | None = None) -> None:
        for _ in range(count):
            self._sent += 1
            raw = big_message(self._sent, size or self.message_bytes)
            self.dovecot.deliver(self.user(index), raw)

    def waiting(self, index: int) -> int:
        """Messages still on the server for sample mailbox ``index``."""
        return self.dovecot.message_count(self.user(index))
