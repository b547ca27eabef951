"""The real handlers in a warm child process, on Lambda's CPU share and a clock of ours.

The fleet benchmark sends this process one JSON command per line on stdin and
reads one JSON answer per line:

- ``{"op": "invoke", "handler": "module:function", "event": {...}}``: call the
  handler once with a fresh Lambda context; the answer holds its result (or
  error), wall and CPU seconds, and what it printed: log bytes, log lines, and
  the custom metrics of its EMF blobs (namespace, name, dimensions).
- ``{"op": "advance", "seconds": S}``: the process's clock (``time.time``) moves
  S seconds ahead, so a mailbox run a minute ago is due again, and 30 days of
  mail pass in a minute. Installed before the handlers are imported: their
  default clocks are this one. ``{"op": "now"}`` tells its time.
- ``{"op": "clear_caches"}``: forget cached secret values (a container that has
  not seen the mailbox lately); the AWS clients stay warm.

Lambda gives a function CPU in proportion to its memory (one vCPU at 1,769 MB)
and bills wall time. :class:`Runner` puts the process in a cgroup (v1 cpu
controller, as root) whose quota is that share, so measured wall time is what
Lambda would bill; where it cannot, the process runs unthrottled and says so
(``cpu_share_applied``).
"""

from __future__ import annotations

import concurrent.futures.thread as thread_pool
import cProfile
import importlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from benchmarks.aws_server import REPO_ROOT

# One vCPU at this much memory (Lambda's documented proportion).
MB_PER_VCPU = 1769
_CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
_PERIOD_US = 100_000


def cpu_share(memory_mb: int) -> float:
    """Lambda's vCPUs for a memory setting."""
    return memory_mb / MB_PER_VCPU


# -- the child ---------------------------------------------------------------------


class SimulatedClock:
    """``time.time`` plus an offset the harness moves forward."""

    def __init__(self, real: Callable[[], float]) -> None:
        self._real = real
        self.offset = 0.0

    def __call__(self) -> float:
        return self._real() + self.offset


def metric_keys(blob: dict[str, Any]) -> Iterator[str]:
    """Every custom metric an EMF blob writes: namespace, name and dimension values."""
    for directive in blob.get("_aws", {}).get("CloudWatchMetrics", []):
        namespace = directive.get("Namespace", "")
        for dimension_set in directive.get("Dimensions", []) or [[]]:
            dims = ",".join(f"{d}={blob.get(d, '')}" for d in sorted(dimension_set))
            for metric in directive.get("Metrics", []):
                yield f"{namespace}|{metric.get('Name', '')}|{dims}"


def printed_output(text: str) -> dict[str, Any]:
    """What an invocation printed, split into log lines and EMF metric blobs."""
    log_lines = log_bytes = emf_bytes = 0
    metrics: set[str] = set()
    messages: dict[str, int] = {}
    for line in text.splitlines():
        size = len(line.encode()) + 1
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "_aws" in record:
            emf_bytes += size
            metrics.update(metric_keys(record))
        else:
            log_lines += 1
            log_bytes += size
            if isinstance(record, dict):
                message = str(record.get("message", ""))[:80]
                messages[message] = messages.get(message, 0) + 1
    return {
        "log_lines": log_lines,
        "log_bytes": log_bytes,
        "emf_bytes": emf_bytes,
        "metrics": sorted(metrics),
        "log_messages": messages,
    }


class _Child:
    """The handlers' side: commands in, answers out."""

    def __init__(self, answers: io.TextIOBase, printed: io.StringIO, clock: SimulatedClock):
        self.answers = answers
        self.printed = printed
        self.clock = clock
        self.handlers: dict[str, Callable[..., Any]] = {}

    def serve(self, commands: io.TextIOBase) -> None:
        for line in commands:
            command = json.loads(line)
            if command.get("op") == "exit":
                return
            try:
                answer = self.handle(command)
            except Exception as exc:  # the harness decides; the child keeps serving
                answer = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
            self.answers.write(json.dumps(answer, default=str) + "\n")
            self.answers.flush()

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "advance":
            self.clock.offset += float(command["seconds"])
            return {"now": self.clock()}
        if op == "now":
            return {"now": self.clock()}
        if op == "clear_caches":
            from aws_lambda_powertools.utilities import parameters

            clear: Callable[[], None] = parameters.clear_caches
            clear()
            return {}
        if op == "invoke":
            return self.invoke(command)
        raise ValueError(f"unknown op {op!r}")

    def handler(self, name: str) -> tuple[Callable[..., Any], float]:
        """The handler function, imported on first use; (function, import seconds)."""
        if name in self.handlers:
            return self.handlers[name], 0.0
        began = time.monotonic()
        module, _, attribute = name.partition(":")
        function = getattr(importlib.import_module(module), attribute)
        self.handlers[name] = function
        return function, time.monotonic() - began

    def invoke(self, command: dict[str, Any]) -> dict[str, Any]:
        from tests.support.lambda_context import FakeLambdaContext

        function, import_s = self.handler(str(command["handler"]))
        context = FakeLambdaContext(
            remaining_ms=int(command.get("timeout_ms", 300_000)),
            memory_limit_in_mb=int(command.get("memory_mb", 512)),
        )
        self.printed.seek(0)
        self.printed.truncate()
        error = result = None
        profile = _profiler()
        cpu, wall = time.process_time(), time.monotonic()
        try:
            if profile is None:
                result = function(command["event"], context)
            else:
                result = profile.runcall(function, command["event"], context)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        if profile is not None:
            _save_profile(profile, str(command["handler"]))
        return {
            "result": result,
            "error": error,
            "wall_s": wall,
            "cpu_s": cpu,
            "import_s": import_s,
            "printed": printed_output(self.printed.getvalue()),
        }


def _profiler() -> cProfile.Profile | None:
    """A profiler per invocation when BENCH_PROFILE_DIR names a directory (where
    the CPU of a run goes: `python -m pstats` on the files). Work on pool threads
    (mailboxes side by side, uploads) gets a profile per work item."""
    if not os.environ.get("BENCH_PROFILE_DIR"):
        return None
    _profile_pool_work()
    return cProfile.Profile(time.thread_time)


def _profile_pool_work() -> None:
    work_item: Any = thread_pool._WorkItem
    if getattr(work_item, "profiled", False):
        return
    plain_run = work_item.run

    def profiled_run(self: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        profile.runcall(plain_run, self)
        _save_profile(profile, "pool-work")

    work_item.run = profiled_run
    work_item.profiled = True


def _save_profile(profile: cProfile.Profile, handler: str) -> None:
    folder = Path(os.environ["BENCH_PROFILE_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    name = handler.replace(":", ".")
    profile.dump_stats(folder / f"{name}.{os.getpid()}.{time.monotonic_ns()}.prof")


def main() -> int:
    clock = SimulatedClock(time.time)
    time.time = clock  # before any handler module is imported (see module doc)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    # Anything written to the process's own stdout would garble the answers.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    printed = io.StringIO()
    # Powertools' Logger keeps the sys.stdout it finds at import; print() uses
    # whatever sys.stdout is: both land in ``printed``.
    sys.stdout = printed
    _Child(answers, printed, clock).serve(sys.stdin)  # type: ignore[arg-type]
    return 0


# -- the harness side ------------------------------------------------------------


class CpuCgroup:
    """A cgroup (v1 cpu controller) holding a process to a share of one CPU."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.path = _CGROUP_CPU / f"pop3-ingest-fleet-bench-{os.getpid()}-{id(self):x}"

    @staticmethod
    def available() -> bool:
        return os.geteuid() == 0 and (_CGROUP_CPU / "cgroup.procs").exists()

    def create(self) -> None:
        self.path.mkdir()
        (self.path / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(int(_PERIOD_US * self.share)))

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        for _ in range(50):  # the kernel lets go of exited processes shortly after
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


class Runner:
    """``with Runner(env, memory_mb=512) as runner: runner.invoke(handler, event)``."""

    def __init__(self, env: dict[str, str], *, memory_mb: int, throttle: bool = True) -> None:
        self.env = env
        self.memory_mb = memory_mb
        self.throttle = throttle
        self.cpu_share_applied: float | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._cgroup: CpuCgroup | None = None

    def start(self) -> Self:
        share = cpu_share(self.memory_mb)
        if self.throttle and share < 1 and CpuCgroup.available():
            self._cgroup = CpuCgroup(share)
            self._cgroup.create()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fleet_runner"],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._cgroup is not None:
            # At once, before the interpreter starts any thread: they all inherit it.
            self._cgroup.add(self._proc.pid)
            self.cpu_share_applied = share
        return self

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                try:
                    proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                    proc.stdin.close()
                except OSError:
                    pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None

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

    def send(self, command: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise RuntimeError("runner not started")
        proc.stdin.write(json.dumps(command) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"runner exited (code {proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if set(answer) == {"error"}:
            raise RuntimeError(f"runner: {answer['error']}")
        return answer

    def invoke(
        self, handler: str, event: dict[str, Any], *, timeout_ms: int = 300_000
    ) -> dict[str, Any]:
        return self.send(
            {
                "op": "invoke",
                "handler": handler,
                "event": event,
                "timeout_ms": timeout_ms,
                "memory_mb": self.memory_mb,
            }
        )

    def advance(self, seconds: float) -> float:
        return float(self.send({"op": "advance", "seconds": seconds})["now"])

    def now(self) -> float:
        return float(self.send({"op": "now"})["now"])

    def clear_caches(self) -> None:
        self.send({"op": "clear_caches"})


if __name__ == "__main__":
    sys.exit(main())
