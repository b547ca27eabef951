"""`make bench`: run every contender on the same corpus at each round-trip time.

    .venv/bin/python -m benchmarks.run            # the full run (results.md, chart)
    .venv/bin/python -m benchmarks.run --quick    # 50 small messages, 0 and 20 ms

Starts one Dovecot (implicit TLS, throwaway CA) and one moto server process
(``benchmarks.aws_server``, 15 ms added per AWS call), builds the corpus once
per scenario, and for every round-trip time puts a ``LatencyProxy`` in front
of Dovecot. Before each contender the corpus is delivered afresh and moto is
reset, so every contender starts from the same full mailbox and empty bucket
and queue. Each contender is checked afterwards: the mailbox must be empty and
every message must have arrived. Everything listens on 127.0.0.1 only and is
stopped on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.dovecot import DovecotServer

from benchmarks.aws_server import REPO_ROOT, AwsProcess
from benchmarks.contenders import CONTENDERS, RUNNERS, Setup, available
from benchmarks.corpus import KB, MB, Corpus, Spec, build, clear_maildir, deliver
from benchmarks.latency_proxy import LatencyProxy
from benchmarks.report import write_chart, write_markdown

USER = "bench"
HOST = "127.0.0.1"
MEMORY_FLOOR_LIMIT_MB = 64.0


@dataclass
class Scenario:
    name: str
    specs: list[Spec]
    rtts: list[float]
    contenders: list[str]


@dataclass
class BenchConfig:
    out_dir: Path
    scenarios: list[Scenario]
    aws_latency_ms: float = 15.0
    concurrency: int = 8
    timeout_s: float = 900.0
    # (small, big) message sizes for the memory-floor check of our handler; None skips it.
    memory_check: tuple[int, int] | None = (2 * KB, 100 * MB)
    ours_env: dict[str, str] = field(default_factory=dict)
    profile: bool = False
    work_dir: Path | None = None
    keep_work: bool = False
    command: str = ""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _work_dir(config: BenchConfig) -> Iterator[Path]:
    if config.work_dir is not None:
        config.work_dir.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="run-", dir=config.work_dir))
    else:
        path = Path(tempfile.mkdtemp(prefix="pop3-ingest-bench-"))
    path.chmod(0o755)  # getmail delivers as nobody, below this directory
    if os.geteuid() == 0:
        closed = [p for p in path.parents if p.stat().st_mode & 0o001 == 0]
        if closed:
            log(f"warning: {closed[0]} is not searchable by others; getmail6 (as nobody) fails")
    try:
        yield path
    finally:
        if not config.keep_work:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _pop3_endpoint(port: int, rtt_ms: float) -> Iterator[int]:
    """Dovecot's own port at 0 ms (POP3 on loopback), else a latency proxy's."""
    if rtt_ms <= 0:
        yield port
        return
    with LatencyProxy(HOST, port, rtt_ms) as proxy:
        yield proxy.port


def _machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def _tool_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions["moto"] = version("moto")
        versions["boto3"] = version("boto3")
    return versions


class Bench:
    def __init__(self, config: BenchConfig, work: Path) -> None:
        self.config = config
        self.work = work
        self.runs: list[dict[str, Any]] = []
        self.rounds = itertools.count(1)
        self.password = secrets.token_urlsafe(16)

    def run(self) -> dict[str, Any]:
        started = datetime.now(UTC)
        load_before = _loadavg()
        with contextlib.ExitStack() as stack:
            log("starting Dovecot and the moto server")
            dovecot = stack.enter_context(DovecotServer())
            self.dovecot = dovecot
            self.maildir = dovecot.add_user(USER, self.password)
            self.ca_file = self.work / "ca.pem"
            self.ca_file.write_text(dovecot.ca_pem)
            self.ca_file.chmod(0o644)
            self.aws = stack.enter_context(AwsProcess(self.config.aws_latency_ms))
            for scenario in self.config.scenarios:
                self._scenario(scenario)
            memory = self._memory_check() if self.config.memory_check else None
            clear_maildir(self.maildir)
        return {
            "meta": {
                "started": started.isoformat(timespec="seconds"),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                # Anything else running on the machine skews the timings.
                "loadavg": {"start": load_before, "end": _loadavg()},
                "command": self.config.command,
                "aws_latency_ms": self.config.aws_latency_ms,
                "concurrency": self.config.concurrency,
                "ours_env": self.config.ours_env,
                "machine": _machine(),
                "versions": _tool_versions(),
                "scenarios": [
                    {
                        "name": s.name,
                        "specs": [spec.__dict__ for spec in s.specs],
                        "rtts": s.rtts,
                        "contenders": s.contenders,
                    }
                    for s in self.config.scenarios
                ],
            },
            "runs": self.runs,
            "memory_floor": memory,
        }

    def _scenario(self, scenario: Scenario) -> None:
        log(f"scenario {scenario.name}: building the corpus")
        corpus_dir = self.work / f"corpus-{scenario.name}"
        corpus = build(corpus_dir, scenario.specs)
        log(
            f"scenario {scenario.name}: {corpus.count} messages, "
            f"{corpus.wire_bytes / MB:.1f} MB on the wire"
        )
        for rtt in scenario.rtts:
            with _pop3_endpoint(self.dovecot.pop3s_port, rtt) as port:
                for contender in scenario.contenders:
                    self._one(scenario.name, contender, rtt, port, corpus, corpus_dir)

    def _one(
        self,
        scenario: str,
        contender: str,
        rtt: float,
        port: int,
        corpus: Corpus,
        corpus_dir: Path,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "scenario": scenario,
            "rtt_ms": rtt,
            "contender": contender,
            "expected_messages": corpus.count,
            "expected_bytes": corpus.wire_bytes,
        }
        if not available(contender):
            record.update(skipped=True, ok=False, note="not installed")
            log(f"{scenario} rtt={rtt:g}ms {contender}: skipped (not installed)")
            self.runs.append(record)
            return record
        run_dir = self.work / f"{scenario}-{rtt:g}ms-{contender}"
        run_dir.mkdir()
        run_dir.chmod(0o755)
        pop3 = contender != "sink"

        def redeliver() -> None:
            deliver(
                corpus,
                self.maildir,
                uid=self.dovecot.mail_uid,
                gid=self.dovecot.mail_gid,
                round_id=next(self.rounds),
            )

        if pop3:
            redeliver()
        setup = Setup(
            work=run_dir,
            pop3_host=HOST,
            pop3_port=port,
            user=USER,
            password=self.password,
            ca_file=self.ca_file,
            ca_pem=self.dovecot.ca_pem,
            aws=self.aws,
            corpus=corpus,
            corpus_dir=corpus_dir,
            concurrency=self.config.concurrency,
            timeout_s=self.config.timeout_s,
            ours_env=self.config.ours_env,
            profile=self.config.profile and contender == "ours",
            redeliver=redeliver,
        )
        log(f"{scenario} rtt={rtt:g}ms {contender}: running")
        outcome = RUNNERS[contender](setup)
        notes = [outcome.note] if outcome.note else []
        ok = outcome.ok
        if pop3:
            left = self.dovecot.message_count(USER)
            if left:
                ok = False
                notes.append(f"{left} left on the server")
        if outcome.messages != corpus.count:
            ok = False
            notes.append(f"{outcome.messages} of {corpus.count} messages arrived")
        record.update(outcome.as_dict())
        record.update(ok=ok, note="; ".join(notes), skipped=False)
        if self.config.profile and contender == "ours" and self.config.keep_work:
            record["profile"] = str(run_dir / "ours.pstats")
        rate = outcome.messages / outcome.wall_s if outcome.wall_s > 0 else 0.0
        log(
            f"{scenario} rtt={rtt:g}ms {contender}: {outcome.messages} msgs in "
            f"{outcome.wall_s:.2f}s ({rate:.0f} msg/s), peak RSS {outcome.max_rss_mb:.0f} MB"
            + ("" if ok else f"  !! {record['note']}")
        )
        self.runs.append(record)
        return record

    def _memory_check(self) -> dict[str, Any]:
        assert self.config.memory_check is not None
        small, big = self.config.memory_check
        measured: dict[str, dict[str, Any]] = {}
        for label, size in (("small", small), ("big", big)):
            name = f"memory-{label}"
            corpus_dir = self.work / f"corpus-{name}"
            corpus = build(corpus_dir, [Spec(1, size, jitter=0.0)])
            with _pop3_endpoint(self.dovecot.pop3s_port, 0) as port:
                measured[label] = self._one(name, "ours", 0, port, corpus, corpus_dir)
        small_rss = float(measured["small"].get("max_rss_mb") or 0.0)
        big_rss = float(measured["big"].get("max_rss_mb") or 0.0)
        ok = bool(measured["small"].get("ok")) and bool(measured["big"].get("ok"))
        return {
            "small_bytes": measured["small"]["expected_bytes"],
            "big_bytes": measured["big"]["expected_bytes"],
            "small_rss_mb": small_rss,
            "big_rss_mb": big_rss,
            "difference_mb": big_rss - small_rss,
            "limit_mb": MEMORY_FLOOR_LIMIT_MB,
            "runs_ok": ok,
            "passed": ok and big_rss - small_rss <= MEMORY_FLOOR_LIMIT_MB,
        }


def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    """Run everything and write results.json, results.md and the chart into out_dir."""
    config.out_dir.mkdir(parents=True, exist_ok=True)
    with _work_dir(config) as work:
        if config.keep_work:
            log(f"work directory (kept): {work}")
        results = Bench(config, work).run()
    (config.out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, config.out_dir / "results.md")
    write_chart(results, config.out_dir / "messages_per_second.png")
    log(f"wrote {config.out_dir / 'results.md'} and messages_per_second.png")
    return results


# -- command line ----------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _size(text: str) -> int:
    """``20000``, ``20KB``, ``1MB``, ``100MB`` (decimal units)."""
    units = {"KB": KB, "MB": MB, "B": 1}
    upper = text.strip().upper()
    for suffix, factor in units.items():
        if upper.endswith(suffix):
            return int(float(upper[: -len(suffix)]) * factor)
    return int(upper)


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="50 small messages, 0 and 20 ms")
    parser.add_argument("--out", type=Path, help="output directory (default benchmarks/)")
    parser.add_argument("--rtts", help="round-trip times in ms, e.g. 0,20,80")
    parser.add_argument("--contenders", help=f"subset of {','.join(CONTENDERS)}")
    parser.add_argument("--scenarios", help="subset of small,large")
    parser.add_argument("--small-count", type=int)
    parser.add_argument("--small-size", type=_size, default=20 * KB)
    parser.add_argument("--large-count", type=int, default=50)
    parser.add_argument("--large-size", type=_size, default=1 * MB)
    parser.add_argument("--huge-size", type=_size, default=100 * MB, help="0 leaves it out")
    parser.add_argument("--large-rtts", help="round-trip times of the large scenario")
    parser.add_argument("--aws-latency-ms", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=8, help="sink threads")
    parser.add_argument("--timeout", type=float, default=900.0, help="per contender, seconds")
    parser.add_argument("--no-memory-check", action="store_true")
    parser.add_argument("--memory-sizes", default="2KB,100MB", help="small,big for the check")
    parser.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for our handler (repeatable), e.g. tuning knobs",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile our handler runs")
    parser.add_argument("--work-dir", type=Path, help="parent of the scratch directory")
    parser.add_argument("--keep-work", action="store_true", help="keep logs and corpora")
    args = parser.parse_args(argv)

    quick = args.quick
    rtts = (
        [float(x) for x in _csv(args.rtts)]
        if args.rtts
        else ([0.0, 20.0] if quick else [0.0, 20.0, 80.0])
    )
    large_rtts = [float(x) for x in _csv(args.large_rtts)] if args.large_rtts else rtts
    contenders = _csv(args.contenders) if args.contenders else list(CONTENDERS)
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(unknown)}")
    scenario_names = _csv(args.scenarios) if args.scenarios else (["small"] if quick else None)
    scenario_names = scenario_names or ["small", "large"]
    small_count = args.small_count if args.small_count is not None else (50 if quick else 1000)
    scenarios: list[Scenario] = []
    if "small" in scenario_names:
        scenarios.append(Scenario("small", [Spec(small_count, args.small_size)], rtts, contenders))
    if "large" in scenario_names:
        specs = [Spec(args.large_count, args.large_size, jitter=0.1)]
        if args.huge_size:
            specs.append(Spec(1, args.huge_size, jitter=0.0))
        scenarios.append(Scenario("large", specs, large_rtts, contenders))
    memory_sizes = [_size(x) for x in _csv(args.memory_sizes)]
    memory_check = None
    if not (args.no_memory_check or quick) and "ours" in contenders:
        memory_check = (memory_sizes[0], memory_sizes[1])
    ours_env = dict(item.split("=", 1) for item in args.ours_env)
    out = args.out or (REPO_ROOT / "benchmarks" / ("out/quick" if quick else ""))
    return BenchConfig(
        out_dir=out,
        scenarios=scenarios,
        aws_latency_ms=args.aws_latency_ms,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        memory_check=memory_check,
        ours_env=ours_env,
        profile=args.profile,
        work_dir=args.work_dir,
        keep_work=args.keep_work,
        command=shlex.join(["python", "-m", "benchmarks.run", *(argv or sys.argv[1:])]),
    )


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C: every finally block runs,
    # so Dovecot, moto, the proxy and a running contender are all stopped.
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main_thread else None
    try:
        results = run_benchmark(config)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    failed = [r for r in results["runs"] if not r.get("ok") and not r.get("skipped")]
    for run in failed:
        log(f"FAILED {run['scenario']} {run['rtt_ms']:g}ms {run['contender']}: {run['note']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
