"""What a mailbox's runs remember between invocations.

One small JSON document per mailbox: UIDLs already announced in keep-on-server
mode, deletions already committed (to spot servers whose DELE does not delete),
consecutive failures per message (poison detection), the login/back-off
bookkeeping that keeps us from hammering an account into a lockout, and the
lease that lets only one run work a mailbox at a time. UIDLs are kept as
digests: server text is never stored as a key.

The document is memory, never proof: whatever it says, a message is deleted
only once its bytes in the current session are proven stored. A document that
does not validate field by field is damaged (``StateDamaged``) and the caller
sets it aside and starts from an empty state.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from pop3_ingest.errors import StateDamaged

STATE_VERSION = 3
DELETED_MEMORY_SECONDS = 30 * 24 * 3600  # how long a committed deletion is remembered
_MAX_DELETED = 100_000  # bound of each time-keyed table (deleted, seen_content)
MAX_ERROR_CHARS = 500  # a failure's remembered error text
# A lease runs to the end of the Lambda's remaining time plus this, so the
# hosts' clocks may disagree by a few seconds without two runs overlapping.
LEASE_MARGIN_SECONDS = 15.0
# No run lasts longer than Lambda's 15-minute maximum: a lease reaching further
# ahead than that (and some clock skew) was not written by a live run.
MAX_LEASE_SECONDS = 15 * 60 + 5 * 60

_DIGEST = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"[0-9a-f]{1,64}")
LEASE_OWNER = re.compile(r"[\x21-\x7e]{1,128}")
_MAX_COUNT = 2**53  # what every JSON reader keeps exact
_MAX_TIME = 2.0**33  # year 2242: a larger "timestamp" is damage, not a date


@dataclass(frozen=True)
class Seen:
    """A message announced (keep mode), or announced but not yet deleted."""

    size: int  # its LIST size
    sha256: str  # 64 lowercase hex: SHA-256 of the stored bytes


@dataclass(frozen=True)
class Deleted:
    """A committed deletion, remembered DELETED_MEMORY_SECONDS."""

    at: float
    size: int
    sha256: str  # 64 lowercase hex


@dataclass
class Failure:
    count: int
    error: str
    first_at: float
    last_at: float


@dataclass
class MailboxState:
    seen: dict[str, Seen] = field(default_factory=dict)  # uidl_digest -> what was announced
    deleted: dict[str, Deleted] = field(default_factory=dict)  # uidl_digest -> committed DELE
    # SHA-256 of a message announced in keep mode without a unique UIDL -> when.
    seen_content: dict[str, float] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)  # 40-hex digest (the core's)
    quarantined: dict[str, Failure] = field(default_factory=dict)
    auth_failures: int = 0
    auth_fingerprint: str | None = None
    busy_streak: int = 0
    backoff_until: float = 0.0
    last_attempt: float = 0.0
    last_completed: float = 0.0
    lease_owner: str | None = None
    lease_until: float = 0.0

    # -- messages -------------------------------------------------------------

    def record_failure(self, digest: str, error: str, threshold: int, now: float) -> bool:
        """Count one more failure in a row; True when the message is now quarantined."""
        entry = self.failures.get(digest)
        if entry is None:
            entry = self.failures[digest] = Failure(0, "", now, now)
        entry.count += 1
        entry.error = error[:MAX_ERROR_CHARS]
        entry.last_at = now
        if threshold and entry.count >= threshold:
            self.quarantined[digest] = self.failures.pop(digest)
            return True
        return False

    def record_success(self, digest: str) -> None:
        self.failures.pop(digest, None)

    def release(self, digest: str) -> bool:
        """An operator lets a quarantined message be tried again."""
        return self.quarantined.pop(digest, None) is not None

    def forget_absent(self, present: set[str], now: float, *, complete: bool) -> None:
        """Drop what no longer applies: messages gone from the server, old memories.

        Only a complete listing proves a message gone: a capped one (Gmail
        offers about 250) says nothing about the rest of the mailbox.
        """
        if complete:
            for table in (self.seen, self.failures, self.quarantined):
                for digest in [d for d in table if d not in present]:
                    del table[digest]
        cutoff = now - DELETED_MEMORY_SECONDS
        _expire(self.deleted, lambda entry: entry.at, cutoff)
        _expire(self.seen_content, lambda at: at, cutoff)

    # -- one run per mailbox ---------------------------------------------------

    def lease_holder(self, now: float) -> str | None:
        """The run holding the mailbox now, if any.

        A lease reaching further ahead than any run can last is not honoured:
        a damaged or skewed writer must not lock the mailbox for good.
        """
        if self.lease_owner is None or not now < self.lease_until <= now + MAX_LEASE_SECONDS:
            return None
        return self.lease_owner

    def copy(self) -> MailboxState:
        return copy.deepcopy(self)

    @classmethod
    def merge(cls, base: MailboxState, mine: MailboxState, theirs: MailboxState) -> MailboxState:
        """My changes since ``base``, applied onto ``theirs`` (written meanwhile).

        Entries I added, changed or removed are added, changed or removed;
        everything else is theirs, so an operator's release or another run's
        deletions survive. A field both changed takes my value, except the
        lease: if someone else took it meanwhile, it stays theirs.
        """
        result = theirs.copy()
        for name in _TABLES:
            _apply_changes(getattr(base, name), getattr(mine, name), getattr(result, name))
        lease_theirs = (theirs.lease_owner, theirs.lease_until) != (
            base.lease_owner,
            base.lease_until,
        )
        for name in _SCALARS:
            if name in _LEASE and lease_theirs:
                continue
            if getattr(mine, name) != getattr(base, name):
                setattr(result, name, getattr(mine, name))
        return result

    # -- serialisation ------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = STATE_VERSION
        return data

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> MailboxState:
        """Parse a stored document; anything but a valid state raises StateDamaged."""
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise StateDamaged(f"run state is not JSON ({type(exc).__name__})") from exc
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: object) -> MailboxState:
        """Validate field by field; a version 2 document keeps what is still sound."""
        if not isinstance(data, dict):
            raise StateDamaged("run state is not a JSON object")
        version = data.get("version")
        if version == 2:
            return _from_v2(data)
        if version != STATE_VERSION or isinstance(version, bool):
            raise StateDamaged(f"run state has unsupported version {version!r:.20}")
        unknown = sorted(set(data) - _FIELD_NAMES - {"version"})
        if unknown:
            names = ", ".join(name[:40] for name in unknown[:5])
            raise StateDamaged(f"run state has unknown fields: {names}")
        return cls(
            seen=_table(data, "seen", _DIGEST, _seen),
            deleted=_table(data, "deleted", _DIGEST, _deleted),
            seen_content=_table(data, "seen_content", _SHA256, _time),
            failures=_table(data, "failures", _DIGEST, _failure),
            quarantined=_table(data, "quarantined", _DIGEST, _failure),
            **_scalars(data),
        )


_TABLES = ("seen", "deleted", "seen_content", "failures", "quarantined")
_LEASE = ("lease_owner", "lease_until")
_FIELD_NAMES = frozenset(f.name for f in fields(MailboxState))
_SCALARS = tuple(name for name in (f.name for f in fields(MailboxState)) if name not in _TABLES)

V = TypeVar("V")


def _expire(table: dict[str, V], when: Callable[[V], float], cutoff: float) -> None:
    for key in [k for k, entry in table.items() if when(entry) < cutoff]:
        del table[key]
    if len(table) > _MAX_DELETED:
        oldest = sorted(table, key=lambda k: when(table[k]))[: len(table) - _MAX_DELETED]
        for key in oldest:
            del table[key]


_ABSENT = object()


def _apply_changes(base: Mapping[str, V], mine: Mapping[str, V], target: dict[str, V]) -> None:
    for key in base.keys() - mine.keys():
        target.pop(key, None)
    for key, value in mine.items():
        if base.get(key, _ABSENT) != value:
            target[key] = copy.deepcopy(value)


# -- validation ------------------------------------------------------------------


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNT:
        raise StateDamaged(f"run state field {where}: not a whole number from 0 to 2^53")
    return value


def _time(value: object, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= _MAX_TIME
    ):
        raise StateDamaged(f"run state field {where}: not a finite time from 0 to 2^33")
    return float(value)


def _sha256(value: object, where: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise StateDamaged(f"run state field {where}: not 64 lowercase hex characters (SHA-256)")
    return value


def _error_text(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_ERROR_CHARS:
        raise StateDamaged(f"run state field {where}: not a text of at most {MAX_ERROR_CHARS}")
    return value


def _optional(pattern: re.Pattern[str], what: str) -> Callable[[object, str], str | None]:
    def parse(value: object, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise StateDamaged(f"run state field {where}: not null or {what}")
        return value

    return parse


def _fields(value: object, where: str, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StateDamaged(f"run state field {where}: not an object")
    if set(value) != set(names):
        raise StateDamaged(f"run state field {where}: fields must be exactly {', '.join(names)}")
    return value


def _seen(value: object, where: str) -> Seen:
    raw = _fields(value, where, ("size", "sha256"))
    return Seen(_count(raw["size"], f"{where}.size"), _sha256(raw["sha256"], f"{where}.sha256"))


def _deleted(value: object, where: str) -> Deleted:
    raw = _fields(value, where, ("at", "size", "sha256"))
    return Deleted(
        _time(raw["at"], f"{where}.at"),
        _count(raw["size"], f"{where}.size"),
        _sha256(raw["sha256"], f"{where}.sha256"),
    )


def _failure(value: object, where: str) -> Failure:
    raw = _fields(value, where, ("count", "error", "first_at", "last_at"))
    return Failure(
        _count(raw["count"], f"{where}.count"),
        _error_text(raw["error"], f"{where}.error"),
        _time(raw["first_at"], f"{where}.first_at"),
        _time(raw["last_at"], f"{where}.last_at"),
    )


def _table(
    data: Mapping[str, object],
    name: str,
    key_pattern: re.Pattern[str],
    parse: Callable[[object, str], V],
) -> dict[str, V]:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise StateDamaged(f"run state field {name}: not an object")
    table: dict[str, V] = {}
    for key, value in raw.items():
        if not key_pattern.fullmatch(key):
            raise StateDamaged(
                f"run state field {name}: a key of {len(key)} characters is not a "
                f"{key_pattern.pattern} digest"
            )
        table[key] = parse(value, f"{name}[{key}]")
    return table


_SCALAR_PARSERS: dict[str, Callable[[object, str], Any]] = {
    "auth_failures": _count,
    "auth_fingerprint": _optional(_FINGERPRINT, "1-64 lowercase hex characters"),
    "busy_streak": _count,
    "backoff_until": _time,
    "last_attempt": _time,
    "last_completed": _time,
    "lease_owner": _optional(LEASE_OWNER, "1-128 printable ASCII characters"),
    "lease_until": _time,
}


def _scalars(data: Mapping[str, object], names: tuple[str, ...] = _SCALARS) -> dict[str, Any]:
    return {name: _SCALAR_PARSERS[name](data[name], name) for name in names if name in data}


def _from_v2(data: Mapping[str, object]) -> MailboxState:
    """Version 2 kept "size:digest-prefix" strings and bare deletion times.

    Neither is proof of anything, so both are dropped: at worst kept messages
    are announced once more. Failures, quarantine and login bookkeeping stay.
    """
    v2_scalars = tuple(name for name in _SCALARS if name not in _LEASE)
    return MailboxState(
        failures=_table(data, "failures", _DIGEST, _failure),
        quarantined=_table(data, "quarantined", _DIGEST, _failure),
        **_scalars(data, v2_scalars),
    )
