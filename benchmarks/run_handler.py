"""Child process: invoke the real fetch handler until the mailbox is empty.

Run by the harness in its own process so its peak RSS is measured alone. The
environment carries the function's settings (SECRET_ID, BUCKET_NAME, ...) and
the SDK's endpoint; the result (timings and summaries) goes to ``--result`` as
JSON, while the handler's own logs go to stdout.

Each invocation gets a fresh FakeLambdaContext, as a scheduled Lambda would;
imports happen once, before the first one (a warm container), and are timed
separately (``import_s``: the cold-start share).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT / "functions", REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

EVENT_FILE = REPO_ROOT / "events" / "scheduled-event.json"
# Stop conditions that a further invocation could make progress on.
_CONTINUE = {"deadline", "message_cap", "connection_lost"}


def scheduled_event() -> dict[str, Any]:
    try:
        event = json.loads(EVENT_FILE.read_text())
    except (OSError, ValueError):
        event = None
    if isinstance(event, dict):
        return event
    return {"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--max-invocations", type=int, default=20)
    parser.add_argument("--timeout-ms", type=int, default=900_000)
    parser.add_argument("--memory-mb", type=int, default=512)
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the invocations")
    args = parser.parse_args(argv)

    started = time.monotonic()
    from tests.support.lambda_context import FakeLambdaContext

    from pop3_ingest.handlers.fetch import lambda_handler

    import_s = time.monotonic() - started
    event = scheduled_event()
    profiler = cProfile.Profile() if args.profile else None
    summaries: list[dict[str, Any]] = []
    durations: list[float] = []
    error = ""
    for _ in range(max(args.max_invocations, 1)):
        context = FakeLambdaContext(remaining_ms=args.timeout_ms, memory_limit_in_mb=args.memory_mb)
        began = time.monotonic()
        try:
            if profiler is not None:
                profiler.enable()
            summary = lambda_handler(event, context)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            durations.append(time.monotonic() - began)
            break
        finally:
            if profiler is not None:
                profiler.disable()
        durations.append(time.monotonic() - began)
        summaries.append(summary)
        more = summary.get("left_on_server", 0) > 0 and summary.get("stopped") in _CONTINUE
        if not more or summary.get("deleted", 0) == 0:
            break
    if profiler is not None and args.profile is not None:
        profiler.dump_stats(str(args.profile))

    def total(field: str) -> int:
        return sum(int(s.get(field, 0)) for s in summaries)

    result = {
        "import_s": import_s,
        "handler_s": sum(durations),
        "invocations": len(durations),
        "stored": total("stored"),
        "already_stored": total("already_stored"),
        "announced": total("announced"),
        "deleted": total("deleted"),
        "failed": total("failed"),
        "bytes": total("bytes"),
        "left_on_server": summaries[-1].get("left_on_server") if summaries else None,
        "stopped": [s.get("stopped") for s in summaries],
        "error": error,
    }
    args.result.write_text(json.dumps(result, indent=1))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
