"""``pop3-ingest resume``: lift a mailbox's login suspension and back-off, so its next run logs in.

A mailbox whose logins failed ``AUTH_FAILURE_LIMIT`` times with one secret
is suspended until that secret changes. When the fix was made at the
provider instead (a permission that has propagated, "confirm it was you"),
``resume`` clears the count and the fingerprint of the failed secret, and any
back-off, with the state store's own conditional write: a run saving at the
same moment is merged with it, never overwritten.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.domain.state import MailboxState
from pop3_ingest.errors import ConfigError, Pop3IngestError, StoreError
from pop3_ingest_cli import render
from pop3_ingest_cli.aws import Aws, AwsFactory, mailbox_name
from pop3_ingest_cli.health import iso
from pop3_ingest_cli.stack import deployment
from pop3_ingest_cli.states import StateReader

# What resume sets back, and to what.
CLEARED: dict[str, Any] = {
    "auth_failures": 0,
    "auth_fingerprint": None,
    "backoff_until": 0.0,
    "busy_streak": 0,
    "unreachable_streak": 0,
}


@dataclass
class Resumed:
    mailbox: str
    state_key: str
    changes: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "state": self.state_key,
            "changed": bool(self.changes),
            "changes": self.changes,
            "before": self.before,
            "after": dict(CLEARED) if self.changes else self.before,
        }


def describe_changes(state: MailboxState, now: float) -> list[str]:
    """What resuming changes in ``state``, in words; empty when it is neither
    suspended nor backing off (nothing to resume)."""
    changes = []
    if state.auth_failures:
        changes.append(f"login failures {state.auth_failures} -> 0 (logins no longer suspended)")
    if state.backoff_until > now:
        why = "unreachable" if state.unreachable_streak else "busy" if state.busy_streak else None
        changes.append(
            f"back-off until {iso(state.backoff_until)} "
            f"({why or 'a pause the server asked for: LOGIN-DELAY'}) cleared"
        )
    return changes


def resumed(state: MailboxState) -> MailboxState:
    fresh = state.copy()
    for name, value in CLEARED.items():
        setattr(fresh, name, value)
    return fresh


def resume(reader: StateReader, mailbox: str, now: float) -> Resumed:
    stored = reader.read(mailbox)
    result = Resumed(mailbox, reader.location(mailbox))
    if stored.damaged is not None:
        raise StoreError(
            f"the run state of {mailbox} is damaged ({stored.damaged}): nothing to resume; "
            "its next run sets it aside and starts from an empty state, not suspended"
        )
    if stored.state is None:
        raise ConfigError(
            f"no mailbox {mailbox!r}: no run state at {result.state_key} "
            "(the name is the secret's 'mailbox' field; 'pop3-ingest status' lists them)"
        )
    result.before = {name: getattr(stored.state, name) for name in CLEARED}
    result.changes = describe_changes(stored.state, now)
    if result.changes:
        # Conditional on the version read; merged if a run wrote meanwhile.
        reader.store.write(mailbox, resumed(stored.state), stored.snapshot())
    return result


def print_resumed(result: Resumed) -> None:
    if not result.changes:
        print(f"mailbox {result.mailbox} is neither suspended nor backing off: nothing changed")
        return
    print(f"resumed mailbox {result.mailbox}:")
    for change in result.changes:
        print(f"  {change}")
    print(
        "its next scheduled run logs in again; to run it now: "
        f"pop3-ingest run --mailbox {result.mailbox}"
    )


def cmd_resume(args: argparse.Namespace, aws: AwsFactory = Aws.from_args) -> int:
    try:
        name = mailbox_name(args.mailbox)  # before any AWS client exists
        session = aws(args)
        where = deployment(args, session)
        reader = StateReader(session.s3, where.need("bucket"), where.prefix)
        result = resume(reader, name, time.time())
    except (ClientError, BotoCoreError, Pop3IngestError) as exc:
        outcome = render.Outcome("resume", {"mailbox": args.mailbox}, lambda: None, error=exc)
        return render.emit(outcome, as_json=args.json)
    outcome = render.Outcome("resume", result.document(), lambda: print_resumed(result))
    return render.emit(outcome, as_json=args.json)
