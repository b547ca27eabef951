"""What a mailbox's runs remember between invocations.

One small JSON document per mailbox: UIDLs already announced in keep-on-server
mode, deletions already committed (to spot servers whose DELE does not delete),
consecutive failures per message (poison detection), the login/back-off
bookkeeping that keeps us from hammering an account into a lockout, and the
lease that lets only one run work a mailbox at a time; with ``start: "now"``,
the baseline (what its first run listed, left alone), and for the operator's
``status`` the last error and the mail left pending. UIDLs are kept as
digests: server text is never stored as a key.

The document is memory, never proof: whatever it says, a message is deleted
only once its bytes in the current session are proven stored. A document that
does not validate field by field is damaged (``StateDamaged``) and the caller
sets it aside and starts from an empty state.

It stays small whatever the mail volume: the tables that grow with mail are
written compactly (digests in base64url, entries as arrays; version 5), and a
deletion is remembered only while it can still matter (see ``forget_absent``).
Forgetting can cost a pointer sent twice, never a message: proof before DELE
compares the bytes' full SHA-256 with the one remembered, and no entry is
shortened.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from pop3_ingest.errors import StateDamaged

STATE_VERSION = 5
_DAY = 24 * 3600
# A committed deletion of a message no longer listed is remembered at least
# this long, and at most this many of them (the newest). One still listed (a
# server that ignores DELE) is remembered as long as it is listed.
DELETED_MEMORY_SECONDS = 3 * _DAY
DELETED_MEMORY_ENTRIES = 1_000
# Content announced without a unique UIDL is what keep mode knows such a
# message by: remembered this long after it was last seen.
CONTENT_MEMORY_SECONDS = 30 * _DAY
# Memories are forgotten in steps (a day's worth, a quarter of the entries), so
# that a run with nothing new seldom has anything to write either.
FORGET_STEP_SECONDS = _DAY
_MAX_ENTRIES = 100_000  # bound of each time-keyed table (deleted, seen_content) whatever else
# A state left unchanged is still rewritten this often: RetentionDays expires
# every object under KEY_PREFIX some days after its last write, the state too,
# and its memory of kept messages must not go with it.
REWRITE_AFTER_SECONDS = 12 * 3600
MAX_ERROR_CHARS = 500  # a failure's remembered error text
LAST_ERROR_CHARS = 200  # the mailbox's last error, as ``status`` shows it
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


def _this_second() -> float:
    """Now, to the second as the document stores it (the one begun: never ahead)."""
    return float(math.floor(time.time()))


@dataclass(frozen=True)
class Seen:
    """A message announced (keep mode, or kept for ``delete_after_days``), or announced
    but not yet deleted."""

    size: int  # its LIST size
    sha256: str  # 64 lowercase hex: SHA-256 of the stored bytes
    # When it was first announced; 0: not known (remembered by a version 4
    # document), dated by the next run's ``forget_absent``.
    at: float = field(default_factory=_this_second)


@dataclass(frozen=True)
class Deleted:
    """A committed deletion (see ``MailboxState.forget_absent`` for how long)."""

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
    # SHA-256 of a message announced without a unique UIDL -> when last seen.
    seen_content: dict[str, float] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)  # 40-hex digest (the core's)
    quarantined: dict[str, Failure] = field(default_factory=dict)
    # start "now": listing key (domain/plan.py) -> LIST size of each message
    # listed when the baseline was taken (at ``baseline_at``; 0: not taken).
    baseline: dict[str, int] = field(default_factory=dict)
    baseline_at: float = 0.0
    auth_failures: int = 0
    auth_fingerprint: str | None = None
    busy_streak: int = 0
    unreachable_streak: int = 0  # runs in a row that could not connect (ConnectError)
    backoff_until: float = 0.0
    last_attempt: float = 0.0
    last_completed: float = 0.0
    lease_owner: str | None = None
    lease_until: float = 0.0
    # For the operator's status: the last error (redacted, at most
    # LAST_ERROR_CHARS) and when; messages left for a later run when the last
    # run that reached the mailbox stopped (0 when it completed).
    last_error: str = ""
    last_error_at: float = 0.0
    pending: int = 0

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

    def remember_content(self, sha256: str, now: float) -> None:
        """Content announced without a unique UIDL, or seen again, remembered as of ``now``.

        Seen again within FORGET_STEP_SECONDS of its remembered time, the time
        stays: a run that only saw known mail again has nothing to write.
        """
        last = self.seen_content.get(sha256)
        if last is None or now - last >= FORGET_STEP_SECONDS:
            self.seen_content[sha256] = now

    def take_baseline(self, entries: Mapping[str, int], now: float) -> None:
        """start "now": these listed messages (key -> size) are left alone for good."""
        self.baseline.update(entries)
        self.baseline_at = now

    def forget_baseline(self) -> None:
        """start "all" again: the baseline no longer holds anything back."""
        self.baseline.clear()
        self.baseline_at = 0.0

    def forget_absent(self, present: set[str], now: float, *, complete: bool) -> None:
        """Drop what no longer applies: messages gone from the server, old memories.

        Only a complete listing proves a message gone: a capped one (Gmail
        offers about 250) says nothing about the rest of the mailbox. A
        deletion whose message is still listed (a server that ignores DELE) is
        kept, or that message would be announced again on every run. Any other
        deletion only guards against its message coming back later, when a
        forgotten one costs a repeated pointer: the newest
        DELETED_MEMORY_ENTRIES of them are kept DELETED_MEMORY_SECONDS.

        Announced messages of unknown age (remembered before their time was
        kept) are dated ``now``: ``delete_after_days`` counts from there.
        """
        for digest, entry in self.seen.items():
            if not entry.at:
                self.seen[digest] = Seen(entry.size, entry.sha256, now)
        if complete:
            for table in (self.seen, self.failures, self.quarantined, self.baseline):
                for digest in [d for d in table if d not in present]:
                    del table[digest]
        gone = [digest for digest in self.deleted if digest not in present]
        _forget_oldest(
            self.deleted,
            gone,
            _deleted_at,
            now,
            seconds=DELETED_MEMORY_SECONDS,
            entries=DELETED_MEMORY_ENTRIES,
        )
        _forget_oldest(self.deleted, list(self.deleted), _deleted_at, now, entries=_MAX_ENTRIES)
        _forget_oldest(
            self.seen_content,
            list(self.seen_content),
            lambda at: at,
            now,
            seconds=CONTENT_MEMORY_SECONDS,
            entries=_MAX_ENTRIES,
        )

    def worth_saving_over(self, base: MailboxState) -> bool:
        """Whether writing this state over ``base`` is worth an S3 PUT: more than the
        run times changed, or ``base`` was written REWRITE_AFTER_SECONDS before this run."""
        if self.last_attempt - base.last_attempt >= REWRITE_AFTER_SECONDS:
            return True
        return any(getattr(self, name) != getattr(base, name) for name in _MEMORY_FIELDS)

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
        """The stored document (version 5; see "the stored document" below)."""
        data: dict[str, Any] = {
            "version": STATE_VERSION,
            "seen": {_b64(k): [v.size, _b64(v.sha256), round(v.at)] for k, v in self.seen.items()},
            "deleted": {
                _b64(k): [round(v.at), v.size, _b64(v.sha256)] for k, v in self.deleted.items()
            },
            "seen_content": {_b64(k): round(at) for k, at in self.seen_content.items()},
            "failures": {k: asdict(v) for k, v in self.failures.items()},
            "quarantined": {k: asdict(v) for k, v in self.quarantined.items()},
            "baseline": {_b64(k): size for k, size in self.baseline.items()},
        }
        data.update((name, getattr(self, name)) for name in _SCALARS)
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
        """Validate field by field. Versions 2 to 4 are read too (and written as 5)."""
        if not isinstance(data, dict):
            raise StateDamaged("run state is not a JSON object")
        version = data.get("version")
        reader = _READERS.get(version) if type(version) is int else None
        if reader is None:
            raise StateDamaged(f"run state has unsupported version {version!r:.20}")
        return reader(data)


_TABLES = ("seen", "deleted", "seen_content", "failures", "quarantined", "baseline")
_LEASE = ("lease_owner", "lease_until")
_FIELD_NAMES = frozenset(f.name for f in fields(MailboxState))
# When runs happened, not what they found: a run that changed nothing else
# does not write the state just for these (runs without a lease: domain/run.py).
RUN_TIMES = frozenset({"last_attempt", "last_completed"})
_MEMORY_FIELDS = tuple(f.name for f in fields(MailboxState) if f.name not in RUN_TIMES)
_SCALARS = tuple(name for name in (f.name for f in fields(MailboxState)) if name not in _TABLES)

V = TypeVar("V")


def _deleted_at(entry: Deleted) -> float:
    return entry.at


def _forget_oldest(
    table: dict[str, V],
    keys: list[str],
    when: Callable[[V], float],
    now: float,
    *,
    seconds: float = math.inf,
    entries: int,
) -> None:
    """Forget those of ``keys`` older than ``seconds`` or beyond the newest ``entries``.

    Only once a step past either bound (FORGET_STEP_SECONDS older, a quarter
    more entries), so the document changes once a day or so, not on every run.
    """
    if not keys:
        return
    overdue = now - min(when(table[key]) for key in keys) > seconds + FORGET_STEP_SECONDS
    crowded = len(keys) > entries + entries // 4
    if not (overdue or crowded):
        return
    excess, cutoff = len(keys) - entries, now - seconds
    for index, key in enumerate(sorted(keys, key=lambda k: when(table[k]))):
        if index >= excess and when(table[key]) >= cutoff:
            break  # oldest first: all the rest are newer and within the count
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


def _last_error(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) > LAST_ERROR_CHARS:
        raise StateDamaged(f"run state field {where}: not a text of at most {LAST_ERROR_CHARS}")
    return value


def _optional(pattern: re.Pattern[str], what: str) -> Callable[[object, str], str | None]:
    def parse(value: object, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise StateDamaged(f"run state field {where}: not null or {what}")
        return value

    return parse


def _b64(hex_digest: str) -> str:
    """A hex digest as base64url without padding: 27 characters for 160 bits, 43 for 256."""
    return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).rstrip(b"=").decode()


def _from_b64(text: object, size: int) -> str | None:
    """The hex digest of ``size`` bytes that ``text`` is the base64url (as _b64 writes) of."""
    if not isinstance(text, str) or len(text) != (size * 8 + 5) // 6:
        return None
    if not _BASE64URL.fullmatch(text):
        return None
    digest = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).hex()
    return digest if _b64(digest) == text else None  # one spelling per digest


def _sha256_b64(value: object, where: str) -> str:
    digest = _from_b64(value, _SHA256_BYTES)
    if digest is None:
        raise StateDamaged(f"run state field {where}: not a SHA-256 in base64url (43 characters)")
    return digest


def _array(value: object, where: str, names: tuple[str, ...]) -> list[Any]:
    if not isinstance(value, list) or len(value) != len(names):
        raise StateDamaged(f"run state field {where}: not an array [{', '.join(names)}]")
    return value


def _fields(value: object, where: str, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StateDamaged(f"run state field {where}: not an object")
    if set(value) != set(names):
        raise StateDamaged(f"run state field {where}: fields must be exactly {', '.join(names)}")
    return value


def _seen(value: object, where: str) -> Seen:
    raw = _fields(value, where, ("size", "sha256"))
    size, sha256 = _count(raw["size"], f"{where}.size"), _sha256(raw["sha256"], f"{where}.sha256")
    return Seen(size, sha256, at=0.0)  # when first announced was not kept


def _deleted(value: object, where: str) -> Deleted:
    raw = _fields(value, where, ("at", "size", "sha256"))
    return Deleted(
        _time(raw["at"], f"{where}.at"),
        _count(raw["size"], f"{where}.size"),
        _sha256(raw["sha256"], f"{where}.sha256"),
    )


def _seen_v4(value: object, where: str) -> Seen:
    size, sha256 = _array(value, where, ("size", "sha256"))
    return Seen(_count(size, f"{where}.size"), _sha256_b64(sha256, f"{where}.sha256"), at=0.0)


def _seen_v5(value: object, where: str) -> Seen:
    size, sha256, at = _array(value, where, ("size", "sha256", "at"))
    return Seen(
        _count(size, f"{where}.size"),
        _sha256_b64(sha256, f"{where}.sha256"),
        _time(at, f"{where}.at"),
    )


def _deleted_v4(value: object, where: str) -> Deleted:
    at, size, sha256 = _array(value, where, ("at", "size", "sha256"))
    return Deleted(
        _time(at, f"{where}.at"),
        _count(size, f"{where}.size"),
        _sha256_b64(sha256, f"{where}.sha256"),
    )


def _failure(value: object, where: str) -> Failure:
    raw = _fields(value, where, ("count", "error", "first_at", "last_at"))
    return Failure(
        _count(raw["count"], f"{where}.count"),
        _error_text(raw["error"], f"{where}.error"),
        _time(raw["first_at"], f"{where}.first_at"),
        _time(raw["last_at"], f"{where}.last_at"),
    )


_KeyParser = Callable[[str], str | None]  # a stored key -> its hex digest, None if it is none
_KeyRule = tuple[_KeyParser, str]  # the parser, and what a key must be (for the error)


def _hex_key(pattern: re.Pattern[str]) -> _KeyParser:
    return lambda key: key if pattern.fullmatch(key) else None


def _b64_key(size: int) -> _KeyParser:
    return lambda key: _from_b64(key, size)


def _table(
    data: Mapping[str, object],
    name: str,
    key: _KeyRule,
    parse: Callable[[object, str], V],
) -> dict[str, V]:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise StateDamaged(f"run state field {name}: not an object")
    to_digest, what = key
    table: dict[str, V] = {}
    for text, value in raw.items():
        digest = to_digest(text)
        if digest is None:
            raise StateDamaged(
                f"run state field {name}: a key of {len(text)} characters is not {what}"
            )
        table[digest] = parse(value, f"{name}[{text}]")
    return table


_SCALAR_PARSERS: dict[str, Callable[[object, str], Any]] = {
    "auth_failures": _count,
    "auth_fingerprint": _optional(_FINGERPRINT, "1-64 lowercase hex characters"),
    "busy_streak": _count,
    "unreachable_streak": _count,
    "backoff_until": _time,
    "last_attempt": _time,
    "last_completed": _time,
    "lease_owner": _optional(LEASE_OWNER, "1-128 printable ASCII characters"),
    "lease_until": _time,
    "baseline_at": _time,
    "last_error": _last_error,
    "last_error_at": _time,
    "pending": _count,
}


def _scalars(data: Mapping[str, object], names: tuple[str, ...] = _SCALARS) -> dict[str, Any]:
    return {name: _SCALAR_PARSERS[name](data[name], name) for name in names if name in data}


# -- the stored document ------------------------------------------------------------
#
# Version 5, the tables that grow with the mail compact:
#   "seen":         {uidl digest: [size, sha256, at]}      at: first announced
#   "deleted":      {uidl digest: [at, size, sha256]}      times in whole seconds
#   "seen_content": {sha256: at}
#   "baseline":     {listing key: size}                    start "now" only
# with every digest in base64url (the UIDL digest's 160 bits, the full SHA-256);
# "failures" and "quarantined" as in version 3 ({40-hex digest: {count, error,
# first_at, last_at}}: few, and named like the quarantine records), and the
# scalars by name. Version 4 was the same without "seen"'s "at" (and without
# the fields added with version 5: the baseline, last_error, pending).

_SHA256_BYTES, _DIGEST_BYTES = 32, 20
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_DIGEST_KEY_HEX = (_hex_key(_DIGEST), f"a {_DIGEST.pattern} digest")
_SHA256_KEY_HEX = (_hex_key(_SHA256), f"a {_SHA256.pattern} digest")
_DIGEST_KEY = (_b64_key(_DIGEST_BYTES), "a 160-bit digest in base64url (27 characters)")
_SHA256_KEY = (_b64_key(_SHA256_BYTES), "a SHA-256 in base64url (43 characters)")


_Reader = Callable[[Mapping[str, object]], MailboxState]


def _memory_reader(
    digest_key: _KeyRule,
    sha256_key: _KeyRule,
    seen: Callable[[object, str], Seen],
    deleted: Callable[[object, str], Deleted],
) -> _Reader:
    """A reader of version 3 or 4: they hold the same memory, spelled differently."""

    def read(data: Mapping[str, object]) -> MailboxState:
        unknown = sorted(set(data) - _FIELD_NAMES - {"version"})
        if unknown:
            names = ", ".join(name[:40] for name in unknown[:5])
            raise StateDamaged(f"run state has unknown fields: {names}")
        return MailboxState(
            seen=_table(data, "seen", digest_key, seen),
            deleted=_table(data, "deleted", digest_key, deleted),
            seen_content=_table(data, "seen_content", sha256_key, _time),
            failures=_table(data, "failures", _DIGEST_KEY_HEX, _failure),
            quarantined=_table(data, "quarantined", _DIGEST_KEY_HEX, _failure),
            baseline=_table(data, "baseline", digest_key, _count),
            **_scalars(data),
        )

    return read


def _from_v2(data: Mapping[str, object]) -> MailboxState:
    """Version 2 kept "size:digest-prefix" strings and bare deletion times.

    Neither is proof of anything, so both are dropped: at worst kept messages
    are announced once more. Failures, quarantine and login bookkeeping stay.
    """
    v2_scalars = tuple(name for name in _SCALARS if name not in _LEASE)
    return MailboxState(
        failures=_table(data, "failures", _DIGEST_KEY_HEX, _failure),
        quarantined=_table(data, "quarantined", _DIGEST_KEY_HEX, _failure),
        **_scalars(data, v2_scalars),
    )


_READERS: dict[int, _Reader] = {
    2: _from_v2,
    # Version 3: hex digests, entries as objects; all of its memory is kept.
    3: _memory_reader(_DIGEST_KEY_HEX, _SHA256_KEY_HEX, _seen, _deleted),
    # Version 4: as 5, but announced messages without the time they were first announced.
    4: _memory_reader(_DIGEST_KEY, _SHA256_KEY, _seen_v4, _deleted_v4),
    STATE_VERSION: _memory_reader(_DIGEST_KEY, _SHA256_KEY, _seen_v5, _deleted_v4),
}
