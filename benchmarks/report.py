"""results.json -> results.md (tables, ratios, cost model) and the chart (PNG)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The floors for the 1,000 x 20 KB scenario: ours / getmail6 by RTT.
TARGETS = {0.0: 1.5, 20.0: 8.0}
LAMBDA_MEMORY_GB = 0.5  # 512 MB
# us-east-1 list prices (x86 Lambda, S3 Standard PUT, SQS standard): for scale only.
PRICE_LAMBDA_GB_S = 0.0000166667
PRICE_S3_PUT = 0.005 / 1000
PRICE_SQS_REQUEST = 0.40 / 1_000_000
LABELS = {
    "ours": "ours (pop3-ingest)",
    "getmail6": "getmail6",
    "fetchmail": "fetchmail",
    "bare": "(a) bare pipelined download",
    "sink": "(b) S3+SQS sink alone",
}
COLORS = {
    "ours": "#d62728",
    "getmail6": "#1f77b4",
    "fetchmail": "#2ca02c",
    "bare": "#7f7f7f",
    "sink": "#9467bd",
}
MB = 1_000_000
TIMES = "\u00d7"  # multiplication sign
NONE = "\u2013"  # en dash: no value
GE = "\u2265"


# -- figures of one run ----------------------------------------------------------


def done(run: dict[str, Any]) -> bool:
    return not run.get("skipped") and bool(run.get("wall_s"))


def rate(run: dict[str, Any]) -> float:
    """Messages per second, end to end (process start to exit)."""
    return float(run["messages"]) / float(run["wall_s"]) if done(run) else 0.0


def mb_rate(run: dict[str, Any]) -> float:
    return float(run["bytes"]) / MB / float(run["wall_s"]) if done(run) else 0.0


def inner_s(run: dict[str, Any]) -> float:
    """Time measured inside the process (no interpreter start), else the wall time."""
    return float(run.get("work_s") or run.get("wall_s") or 0.0)


def inner_rate(run: dict[str, Any]) -> float:
    seconds = inner_s(run)
    return float(run["messages"]) / seconds if done(run) and seconds > 0 else 0.0


def inner_mb_rate(run: dict[str, Any]) -> float:
    seconds = inner_s(run)
    return float(run["bytes"]) / MB / seconds if done(run) and seconds > 0 else 0.0


def _index(results: dict[str, Any]) -> dict[tuple[str, float, str], dict[str, Any]]:
    return {(r["scenario"], float(r["rtt_ms"]), r["contender"]): r for r in results["runs"]}


def _rtts(results: dict[str, Any], scenario: str) -> list[float]:
    return sorted({float(r["rtt_ms"]) for r in results["runs"] if r["scenario"] == scenario})


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}{TIMES}" if numerator > 0 and denominator > 0 else NONE


def _fmt(value: float | None, digits: int = 1) -> str:
    return NONE if value is None else f"{value:,.{digits}f}"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# -- sections --------------------------------------------------------------------


def _describe(spec: dict[str, Any]) -> str:
    size = int(spec["size"])
    shown = f"{size / MB:g} MB" if size >= MB else f"{size / 1000:g} KB"
    return f"{int(spec['count']):,} {TIMES} {'~' if spec.get('jitter') else ''}{shown}"


def _runs_table(results: dict[str, Any], scenario: str) -> list[str]:
    rows = []
    for run in results["runs"]:
        if run["scenario"] != scenario:
            continue
        name = LABELS.get(run["contender"], run["contender"])
        if run.get("skipped"):
            rows.append([f"{run['rtt_ms']:g}", name] + [NONE] * 8 + [run.get("note", "")])
            continue
        status = "ok" if run.get("ok") else f"**FAILED**: {run.get('note', '')}"
        if run.get("ok") and run.get("note"):
            status = f"ok ({run['note']})"
        rows.append(
            [
                f"{run['rtt_ms']:g}",
                name,
                f"{run['messages']:,}",
                _fmt(run["wall_s"], 2),
                _fmt(rate(run), 0),
                _fmt(mb_rate(run), 1),
                _fmt(run.get("work_s"), 2),
                _fmt(inner_rate(run), 0) if run.get("work_s") else NONE,
                _fmt(run.get("cpu_s"), 2),
                _fmt(run.get("max_rss_mb"), 0),
                status,
            ]
        )
    header = [
        "RTT ms",
        "contender",
        "messages",
        "wall s",
        "msg/s",
        "MB/s",
        "in-process s",
        "msg/s in-process",
        "CPU s",
        "peak RSS MB",
        "result",
    ]
    return _table(header, rows)


def _ratios(results: dict[str, Any], scenario: str, *, by_bytes: bool) -> list[str]:
    index = _index(results)
    e2e, inner = (mb_rate, inner_mb_rate) if by_bytes else (rate, inner_rate)
    unit = "MB/s" if by_bytes else "msg/s"
    rows = []
    for rtt in _rtts(results, scenario):
        get = {c: index.get((scenario, rtt, c), {}) for c in ("ours", "getmail6", "fetchmail")}
        limits = {c: index.get((scenario, rtt, c), {}) for c in ("bare", "sink")}
        ours = get["ours"]
        limit_values = {c: inner(r) for c, r in limits.items() if r and done(r)}
        limit_name = min(limit_values, key=lambda c: limit_values[c]) if limit_values else ""
        limit = limit_values.get(limit_name, 0.0)
        target = TARGETS.get(rtt) if scenario == "small" else None
        vs_getmail = e2e(ours) / e2e(get["getmail6"]) if ours and get["getmail6"] else 0.0
        if target is None or not vs_getmail:
            verdict = NONE
        else:
            verdict = f"{GE} {target:g}{TIMES}: {'met' if vs_getmail >= target else 'not met'}"
        rows.append(
            [
                f"{rtt:g}",
                _fmt(e2e(ours), 1) if ours else NONE,
                _fmt(inner(ours), 1) if ours else NONE,
                _ratio(e2e(ours), e2e(get["getmail6"])) if ours and get["getmail6"] else NONE,
                verdict,
                _ratio(inner(ours), e2e(get["getmail6"])) if ours and get["getmail6"] else NONE,
                _ratio(e2e(ours), e2e(get["fetchmail"])) if ours and get["fetchmail"] else NONE,
                _fmt(limit_values.get("bare"), 1),
                _fmt(limit_values.get("sink"), 1),
                _ratio(inner(ours), limit) if ours and limit else NONE,
                {"bare": "a", "sink": "b"}.get(limit_name, NONE),
            ]
        )
    header = [
        "RTT ms",
        f"ours {unit}",
        f"ours {unit} in-process",
        "ours / getmail6",
        "issue floor",
        "warm ours / getmail6",
        "ours / fetchmail",
        f"(a) bare {unit}",
        f"(b) sink {unit}",
        "ours / min(a, b)",
        "limit",
    ]
    return _table(header, rows)


def _requests(results: dict[str, Any], scenario: str) -> list[str]:
    rows = []
    for run in results["runs"]:
        if run["scenario"] != scenario or not run.get("requests") or not run.get("messages"):
            continue
        ops = ", ".join(f"{k} {v:,}" for k, v in sorted(run["requests"].items()))
        rows.append([f"{run['rtt_ms']:g}", LABELS.get(run["contender"], ""), ops])
    return _table(["RTT ms", "contender", "AWS requests seen by moto"], rows) if rows else []


def _cost_model(results: dict[str, Any]) -> list[str]:
    rows = []
    for run in results["runs"]:
        if run["scenario"] != "small" or run["contender"] != "ours" or not done(run):
            continue
        messages = int(run["messages"])
        if not messages:
            continue
        requests: dict[str, int] = run.get("requests", {})
        s3 = sum(v for k, v in requests.items() if k.startswith("s3:"))
        sqs = sum(v for k, v in requests.items() if k.startswith("sqs:"))
        other = sum(v for k, v in requests.items() if not k.startswith(("s3:", "sqs:")))
        seconds = inner_s(run) / messages * 1000
        gb_s = seconds * LAMBDA_MEMORY_GB
        dollars = (
            gb_s * PRICE_LAMBDA_GB_S
            + s3 / messages * 1000 * PRICE_S3_PUT
            + sqs / messages * 1000 * PRICE_SQS_REQUEST
        )
        rows.append(
            [
                f"{run['rtt_ms']:g}",
                f"{s3 / messages:.2f}",
                f"{sqs / messages:.3f}",
                f"{other}",
                f"{seconds:.1f}",
                f"{gb_s:.2f}",
                f"${dollars:.4f}",
            ]
        )
    header = [
        "RTT ms",
        "S3 requests / msg",
        "SQS requests / msg",
        "other AWS requests (run)",
        "Lambda s / 1,000 msgs",
        "GB-s / 1,000 msgs @ 512 MB",
        "$ / 1,000 msgs (list prices)",
    ]
    return _table(header, rows) if rows else ["(our handler did not run in the small scenario)"]


def _memory(results: dict[str, Any]) -> list[str]:
    floor = results.get("memory_floor")
    if not floor:
        return ["(not run)"]
    verdict = "PASS" if floor["passed"] else "FAIL"
    return [
        f"Our handler alone on one message of {floor['small_bytes'] / 1000:,.0f} KB: peak RSS "
        f"{floor['small_rss_mb']:.0f} MB; on one message of {floor['big_bytes'] / MB:,.1f} MB: "
        f"{floor['big_rss_mb']:.0f} MB. Difference **{floor['difference_mb']:.0f} MB** "
        f"(limit {floor['limit_mb']:.0f} MB): **{verdict}**"
        + ("" if floor["runs_ok"] else " (a run failed, see the table below)"),
    ]


def render_markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    machine = meta.get("machine", {})
    scenarios = {s["name"]: s for s in meta.get("scenarios", [])}
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `make bench` (`{meta.get('command', '')}`), {meta.get('started', '')} "
        f"to {meta.get('finished', '')}, on {machine.get('cpus', '?')} cores "
        f"({machine.get('cpu', 'unknown CPU')}), Python {machine.get('python', '?')}; "
        f"load average {meta.get('loadavg', {}).get('start', '?')} at the start, "
        f"{meta.get('loadavg', {}).get('end', '?')} at the end.",
        "",
        "Setup: one Dovecot (POP3 with implicit TLS on 127.0.0.1, throwaway CA every "
        "contender verifies); round-trip time added by `benchmarks/latency_proxy.py` "
        "(0 ms = straight to Dovecot); moto over HTTP in its own process with "
        f"**{meta.get('aws_latency_ms', 15):g} ms added to every AWS call**; the corpus "
        "re-delivered and moto reset before each contender. Rates are messages (or MB) over "
        "the wall time of the contender's whole process; *in-process* excludes interpreter "
        "start-up and imports (for ours: the time inside `lambda_handler`, what a warm "
        f"Lambda bills). Sink: {meta.get('concurrency', 8)} threads, pointers in batches of "
        "10. How each piece works: [README.md](README.md).",
        "",
        "![messages per second by round-trip time](messages_per_second.png)",
        "",
    ]
    if meta.get("ours_env"):
        lines += [f"Handler settings for this run: `{meta['ours_env']}`", ""]
    for name, title in (("small", "Many small messages"), ("large", "Large messages")):
        if name not in scenarios:
            continue
        corpus = " + ".join(_describe(s) for s in scenarios[name]["specs"])
        lines += [f"## {title}: {corpus}", ""]
        lines += [*_runs_table(results, name), ""]
        by_bytes = name == "large"
        lines += [
            f"Ours against the peers (end to end) and the limits (in-process), by "
            f"{'MB/s' if by_bytes else 'messages/s'}. *Warm* compares our in-process rate "
            "(a warm Lambda: no interpreter start, no imports) with the peer's end-to-end one.",
            "",
        ]
        lines += [*_ratios(results, name, by_bytes=by_bytes), ""]
        requests = _requests(results, name)
        if requests:
            lines += [*requests, ""]
    lines += ["## Memory floor", "", *_memory(results), ""]
    memory_runs = [r for r in results["runs"] if r["scenario"].startswith("memory-")]
    if memory_runs:
        rows = [
            [
                f"{int(r['expected_bytes']):,}",
                _fmt(r.get("wall_s"), 2),
                _fmt(r.get("max_rss_mb"), 0),
                "ok" if r.get("ok") else f"**FAILED**: {r.get('note', '')}",
            ]
            for r in memory_runs
        ]
        lines += [*_table(["message bytes", "wall s", "peak RSS MB", "result"], rows), ""]
    lines += [
        "## Cost model (our handler, small messages)",
        "",
        *_cost_model(results),
        "",
        "Requests are counted by the moto endpoint (what the handler really sent, including "
        "Secrets Manager). Lambda time is the in-process handler time, scaled to 1,000 "
        "messages, at 512 MB. Prices: us-east-1 list prices (Lambda x86 "
        "$0.0000166667/GB-s, S3 PUT $0.005/1,000, SQS $0.40/million), for scale only.",
        "",
    ]
    return "\n".join(lines)


def write_markdown(results: dict[str, Any], path: Path) -> None:
    path.write_text(render_markdown(results))


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Messages/s (small) and MB/s (large) by RTT, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    index = _index(results)
    panels = [
        (s, t, f)
        for s, t, f in (("small", "messages/s", rate), ("large", "MB/s", mb_rate))
        if _rtts(results, s)
    ] or [("small", "messages/s", rate)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for ax, (scenario, unit, metric) in zip(axes[0], panels, strict=True):
        rtts = _rtts(results, scenario)
        for contender, label in LABELS.items():
            points = [
                (rtt, metric(index[(scenario, rtt, contender)]))
                for rtt in rtts
                if (scenario, rtt, contender) in index and done(index[(scenario, rtt, contender)])
            ]
            points = [(x, y) for x, y in points if y > 0]
            if not points:
                continue
            ax.plot(
                [x for x, _ in points],
                [y for _, y in points],
                marker="o",
                linestyle="--" if contender in ("bare", "sink") else "-",
                linewidth=2.5 if contender == "ours" else 1.5,
                color=COLORS.get(contender),
                label=label,
            )
        ax.set_yscale("log")
        ax.set_xticks(rtts)
        ax.set_xlabel("added POP3 round-trip time (ms)")
        ax.set_ylabel(f"{unit} (log scale, end to end)")
        ax.set_title(f"{scenario} messages")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    latency = results.get("meta", {}).get("aws_latency_ms", 15)
    fig.suptitle(f"pop3-ingest vs getmail6 and fetchmail (every S3/SQS call +{latency:g} ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
