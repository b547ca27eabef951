"""The contenders: how each one is started, measured and checked.

Every contender runs as a child process of the harness, so ``os.wait4`` gives
its own wall time, CPU time and peak RSS (``ru_maxrss`` covers the process and
the children it reaped, e.g. getmail's delivery forks and fetchmail's MDA).

- ``ours``: ``benchmarks.run_handler`` invoking ``pop3_ingest.handlers.fetch.lambda_handler``.
- ``getmail6``: ``getmail`` with SimplePOP3SSLRetriever, ``delete = true``, into a
  local Maildir (destination ``user = nobody``: getmail refuses to deliver as root).
- ``fetchmail``: implicit TLS with ``sslcertck``, ``no keep``, MDA writing into a
  local Maildir.
- ``bare``: ``benchmarks.bare_pop3``, the pipelined download with no S3 (limit a).
- ``sink``: ``benchmarks.sink``, the S3 + SQS calls alone (limit b).

All POP3 contenders use implicit TLS against the same Dovecot (through the same
latency proxy) and verify its certificate with the same CA file.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.aws_server import REPO_ROOT, AwsProcess
from benchmarks.corpus import Corpus

CONTENDERS = ("ours", "getmail6", "fetchmail", "bare", "sink")
PEERS = {"getmail6": "getmail", "fetchmail": "fetchmail"}  # contender -> binary
BUCKET = "bench-mail"
QUEUE = "bench-pointers"
SECRET_ID = "pop3-ingest/bench"


@dataclass(frozen=True)
class ProcessResult:
    returncode: int | None  # None: killed at the timeout
    wall_s: float
    cpu_s: float  # user + system, the process and its reaped children
    max_rss_mb: float
    timed_out: bool
    rss_method: str


GNU_TIME = "/usr/bin/time"


def _gnu_time() -> str | None:
    return GNU_TIME if os.access(GNU_TIME, os.X_OK) else None


def run_measured(
    cmd: list[str],
    *,
    env: dict[str, str],
    log_path: Path,
    timeout_s: float,
    cwd: Path = REPO_ROOT,
) -> ProcessResult:
    """Run ``cmd`` to completion (or kill its process group at ``timeout_s``) and measure it.

    Peak RSS comes from GNU time when installed: Linux carries a process's
    ``maxrss`` across exec, so anything forked straight from this (large)
    Python process would report at least the harness's own RSS. GNU time is a
    small C program; the contender forked from it starts from almost nothing.
    Without it, wait4's figure is reported and marked as an upper bound.
    """
    gnu_time = _gnu_time()
    rss_file = log_path.with_suffix(".rss")
    full_cmd = [gnu_time, "-q", "-f", "%M", "-o", str(rss_file), *cmd] if gnu_time else cmd
    outcome: dict[str, Any] = {}
    with log_path.open("ab") as log:
        started = time.monotonic()
        proc = subprocess.Popen(
            full_cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a timeout kills its children too
        )

        def reap() -> None:
            # wait4, not Popen.wait: only wait4 returns this child's rusage.
            _, status, usage = os.wait4(proc.pid, 0)
            outcome.update(ended=time.monotonic(), status=status, usage=usage)

        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
        timed_out = True
        try:
            waiter.join(timeout=timeout_s)
            timed_out = waiter.is_alive()
        finally:
            # At the timeout, and also when the harness itself is interrupted
            # (Ctrl-C, SIGTERM): the contender's whole group goes with it.
            if waiter.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                waiter.join(timeout=30)
    if "status" not in outcome:
        raise RuntimeError(f"{cmd[0]} (pid {proc.pid}) could not be reaped")
    proc.returncode = os.waitstatus_to_exitcode(outcome["status"])  # Popen must not wait again
    usage = outcome["usage"]
    max_rss_kb, method = usage.ru_maxrss, "wait4 (upper bound: includes the harness at fork)"
    if gnu_time:
        with contextlib.suppress(OSError, ValueError, IndexError):
            max_rss_kb, method = int(rss_file.read_text().split()[-1]), "GNU time"
    return ProcessResult(
        returncode=None if timed_out else proc.returncode,
        wall_s=outcome["ended"] - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_mb=max_rss_kb / 1024,  # kilobytes on Linux
        timed_out=timed_out,
        rss_method=method,
    )


@dataclass
class Setup:
    """Everything a contender needs for one run."""

    work: Path  # a fresh directory for this run
    pop3_host: str
    pop3_port: int  # the latency proxy's port (or Dovecot's own at 0 ms)
    user: str
    password: str
    ca_file: Path
    ca_pem: str
    aws: AwsProcess
    corpus: Corpus
    corpus_dir: Path
    concurrency: int
    timeout_s: float
    ours_env: dict[str, str] = field(default_factory=dict)  # extra settings for the handler
    profile: bool = False
    # Puts the full corpus back on the server (for a contender that must start over).
    redeliver: Callable[[], None] = lambda: None


@dataclass
class Outcome:
    contender: str
    messages: int  # messages delivered/stored by this run
    bytes: int
    wall_s: float
    work_s: float | None  # time measured inside the process (no interpreter start-up)
    cpu_s: float
    max_rss_mb: float
    ok: bool
    note: str = ""
    requests: dict[str, int] = field(default_factory=dict)  # AWS calls seen by moto
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def available(contender: str) -> bool:
    binary = PEERS.get(contender)
    return binary is None or shutil.which(binary) is not None


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYENV_VERSION", "PYENV_ROOT")
    return {k: v for k, v in os.environ.items() if k in keep}


def _maildir_count(maildir: Path) -> tuple[int, int]:
    count = size = 0
    for sub in ("new", "cur"):
        for entry in (maildir / sub).iterdir():
            count += 1
            size += entry.stat().st_size
    return count, size


def _make_maildir(path: Path, owner: str | None = None) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    if owner is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(owner)
        for folder in (path, *(path / s for s in ("cur", "new", "tmp"))):
            os.chown(folder, entry.pw_uid, entry.pw_gid)
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _status_note(proc: ProcessResult, log_path: Path) -> str:
    if proc.timed_out:
        return "killed at the timeout"
    if proc.returncode:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        return f"exit {proc.returncode}: " + " | ".join(line[:160] for line in tail)
    return ""


# -- ours ----------------------------------------------------------------------


def run_ours(setup: Setup) -> Outcome:
    secret = {
        "host": setup.pop3_host,
        "port": setup.pop3_port,
        "tls": "implicit",
        "username": setup.user,
        "password": setup.password,
        "ca_cert": setup.ca_pem,
        "mailbox": "bench",
    }
    queue_url = setup.aws.fresh(BUCKET, QUEUE, {SECRET_ID: json.dumps(secret)})
    env = {
        **_base_env(),
        **setup.aws.env(),
        "SECRET_ID": SECRET_ID,
        "BUCKET_NAME": BUCKET,
        "QUEUE_URL": queue_url,
        "ALLOW_PRIVATE_HOSTS": "true",  # the benchmark's servers listen on 127.0.0.1
        "MAX_MESSAGES_PER_RUN": "0",
        "POP3_TIMEOUT_SECONDS": "60",
        "POWERTOOLS_SERVICE_NAME": "pop3-ingest",
        "POWERTOOLS_METRICS_NAMESPACE": "Pop3IngestBench",
        "POWERTOOLS_TRACE_DISABLED": "true",
        # The handler's upload threads: the same concurrency the sink gets.
        "UPLOAD_WORKERS": str(setup.concurrency),
        **setup.ours_env,
    }
    result_path = setup.work / "ours.json"
    log_path = setup.work / "ours.log"
    cmd = [sys.executable, "-m", "benchmarks.run_handler", "--result", str(result_path)]
    if setup.profile:
        cmd += ["--profile", str(setup.work / "ours.pstats")]
    proc = run_measured(cmd, env=env, log_path=log_path, timeout_s=setup.timeout_s)
    data = _read_json(result_path)
    requests = setup.aws.stats()  # before our own checking calls add to them
    stored, stored_bytes = setup.aws.object_count(BUCKET)
    depth = setup.aws.queue_depth(queue_url)
    note = _status_note(proc, log_path) or str(data.get("error") or "")
    if depth != stored:
        note = (note + f"; {depth} pointers for {stored} objects").strip("; ")
    return Outcome(
        contender="ours",
        messages=stored,
        bytes=stored_bytes,
        wall_s=proc.wall_s,
        work_s=data.get("handler_s"),
        cpu_s=proc.cpu_s,
        max_rss_mb=proc.max_rss_mb,
        ok=proc.returncode == 0 and not data.get("error"),
        note=note,
        requests=requests,
        extra={k: data.get(k) for k in ("import_s", "invocations", "stopped", "failed", "deleted")},
    )


# -- getmail6 ------------------------------------------------------------------


# getmail6 (6.18 in Debian) installs its SIGCHLD handler only after fork(): a
# delivery child that exits first is never noticed, and getmail waits out its
# timeout, then gives up ("waiting child pid N timed out"; upstream issue #226).
# On these busy 2 cores that hits about one run in ten. Such an attempt is not a
# measurement of getmail's speed, so it is started over (at most twice) and
# the note says so.
_GETMAIL_RACE = "waiting child pid"
_GETMAIL_ATTEMPTS = 3


def run_getmail(setup: Setup) -> Outcome:
    notes: list[str] = []
    for attempt in range(1, _GETMAIL_ATTEMPTS + 1):
        outcome, raced = _getmail_once(setup, attempt)
        if not raced or attempt == _GETMAIL_ATTEMPTS:
            break
        notes.append(f"attempt {attempt} hit getmail's child-wait race, started over")
        setup.redeliver()
    outcome.note = "; ".join([*notes, outcome.note] if outcome.note else notes)
    return outcome


def _getmail_once(setup: Setup, attempt: int) -> tuple[Outcome, bool]:
    home = setup.work / f"getmail-{attempt}"
    home.mkdir()
    home.chmod(0o755)  # the delivering child runs as nobody and must reach the Maildir
    maildir = _make_maildir(home / "Maildir", owner="nobody")
    rc = home / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        f"server = {setup.pop3_host}\n"
        f"port = {setup.pop3_port}\n"
        f"username = {setup.user}\n"
        f"password = {setup.password}\n"
        f"ca_certs = {setup.ca_file}\n"
        # Socket timeout, and also how long getmail waits for a delivery child.
        "timeout = 30\n"
        "\n[destination]\n"
        "type = Maildir\n"
        f"path = {maildir}/\n"
        "user = nobody\n"
        "\n[options]\n"
        "delete = true\n"
        "read_all = true\n"
        "verbose = 0\n"
        "message_log_syslog = false\n"
    )
    rc.chmod(0o600)
    log_path = setup.work / f"getmail-{attempt}.log"
    cmd = ["getmail", "--rcfile", str(rc), "--getmaildir", str(home)]
    proc = run_measured(cmd, env=_base_env(), log_path=log_path, timeout_s=setup.timeout_s)
    count, size = _maildir_count(maildir)
    raced = proc.returncode != 0 and _GETMAIL_RACE in log_path.read_text(errors="replace")
    outcome = Outcome(
        contender="getmail6",
        messages=count,
        bytes=size,
        wall_s=proc.wall_s,
        work_s=None,
        cpu_s=proc.cpu_s,
        max_rss_mb=proc.max_rss_mb,
        ok=proc.returncode == 0,
        note=_status_note(proc, log_path),
        extra={"attempts": attempt},
    )
    return outcome, raced


# -- fetchmail -----------------------------------------------------------------


def run_fetchmail(setup: Setup) -> Outcome:
    home = setup.work / "fetchmail"
    home.mkdir()
    maildir = _make_maildir(home / "Maildir")
    # The lightest MDA a shell allows: one process per message (sh execs cat),
    # written straight into new/ (nothing reads this Maildir during the run).
    # $$ cannot repeat within one run: that needs the whole pid space to cycle.
    mda = f"set -C; exec cat > {maildir}/new/fetchmail.$$"
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        "set no syslog\n"
        f"poll {setup.pop3_host} with protocol POP3 service {setup.pop3_port} timeout 120\n"
        f'  user "{setup.user}" there with password "{setup.password}" is "root" here\n'
        # fetchmail matches DNS names only; the certificate names localhost too.
        f'  ssl sslcertck sslcertfile "{setup.ca_file}" sslcommonname "localhost"\n'
        "  no keep fetchall\n"
        f'  mda "{mda}"\n'
    )
    rc.chmod(0o600)  # fetchmail refuses a readable rc file
    log_path = setup.work / "fetchmail.log"
    cmd = [
        "fetchmail",
        "--fetchmailrc",
        str(rc),
        "--idfile",
        str(home / "fetchids"),
        "--pidfile",
        str(home / "fetchmail.pid"),
        "--nosyslog",
    ]
    env = {**_base_env(), "FETCHMAILHOME": str(home), "HOME": str(home)}
    proc = run_measured(cmd, env=env, log_path=log_path, timeout_s=setup.timeout_s)
    count, size = _maildir_count(maildir)
    # fetchmail exits 1 for "no mail"; with mail fetched 0 is success.
    return Outcome(
        contender="fetchmail",
        messages=count,
        bytes=size,
        wall_s=proc.wall_s,
        work_s=None,
        cpu_s=proc.cpu_s,
        max_rss_mb=proc.max_rss_mb,
        ok=proc.returncode == 0,
        note=_status_note(proc, log_path),
    )


# -- the limits ----------------------------------------------------------------


def run_bare(setup: Setup) -> Outcome:
    result_path = setup.work / "bare.json"
    log_path = setup.work / "bare.log"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bare_pop3",
        "--host",
        setup.pop3_host,
        "--port",
        str(setup.pop3_port),
        "--user",
        setup.user,
        "--ca-file",
        str(setup.ca_file),
        "--result",
        str(result_path),
    ]
    env = {**_base_env(), "BENCH_POP3_PASSWORD": setup.password}
    proc = run_measured(cmd, env=env, log_path=log_path, timeout_s=setup.timeout_s)
    data = _read_json(result_path)
    return Outcome(
        contender="bare",
        messages=int(data.get("messages", 0)),
        bytes=int(data.get("bytes", 0)),
        wall_s=proc.wall_s,
        work_s=data.get("work_s"),
        cpu_s=proc.cpu_s,
        max_rss_mb=proc.max_rss_mb,
        ok=proc.returncode == 0,
        note=_status_note(proc, log_path),
        extra={"window": data.get("window")},
    )


def run_sink(setup: Setup) -> Outcome:
    queue_url = setup.aws.fresh(BUCKET, QUEUE)
    result_path = setup.work / "sink.json"
    log_path = setup.work / "sink.log"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.sink",
        "--corpus-dir",
        str(setup.corpus_dir),
        "--bucket",
        BUCKET,
        "--queue-url",
        queue_url,
        "--concurrency",
        str(setup.concurrency),
        "--result",
        str(result_path),
    ]
    env = {**_base_env(), **setup.aws.env()}
    proc = run_measured(cmd, env=env, log_path=log_path, timeout_s=setup.timeout_s)
    data = _read_json(result_path)
    requests = setup.aws.stats()
    stored, stored_bytes = setup.aws.object_count(BUCKET)
    return Outcome(
        contender="sink",
        messages=stored,
        bytes=stored_bytes,
        wall_s=proc.wall_s,
        work_s=data.get("work_s"),
        cpu_s=proc.cpu_s,
        max_rss_mb=proc.max_rss_mb,
        ok=proc.returncode == 0,
        note=_status_note(proc, log_path),
        requests=requests,
        extra={k: data.get(k) for k in ("concurrency", "sqs_batch", "sqs_sends")},
    )


RUNNERS: dict[str, Callable[[Setup], Outcome]] = {
    "ours": run_ours,
    "getmail6": run_getmail,
    "fetchmail": run_fetchmail,
    "bare": run_bare,
    "sink": run_sink,
}
