"""The run state: validated field by field, compact and bounded, forgotten only on proof,
merged not overwritten."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.memory_s3 import FakeS3

from pop3_ingest.domain.message import uidl_digest
from pop3_ingest.domain.state import (
    CONTENT_MEMORY_SECONDS,
    DELETED_MEMORY_ENTRIES,
    DELETED_MEMORY_SECONDS,
    FORGET_STEP_SECONDS,
    MAX_ERROR_CHARS,
    MAX_LEASE_SECONDS,
    REWRITE_AFTER_SECONDS,
    RUN_TIMES,
    STATE_VERSION,
    Deleted,
    Failure,
    MailboxState,
    Seen,
)
from pop3_ingest.errors import StateDamaged, StoreError
from pop3_ingest.integrations.s3_state import STATE_CLIENT_CONFIG, S3StateStore, Snapshot

D1, D2, D3 = "1" * 40, "2" * 40, "3" * 40
SHA = "a" * 64
NOW = 1_800_000_000.0
DAY = 24 * 3600


def b64(hex_digest: str) -> str:
    """A digest as the stored document spells it: base64url, no padding."""
    return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).rstrip(b"=").decode()


K1, B_SHA = b64(D1), b64(SHA)


# -- strategies ------------------------------------------------------------------

digests = st.sampled_from([f"{i:x}" * 40 for i in range(6)])  # few keys: overlaps are likely
shas = st.sampled_from([f"{i:x}" * 64 for i in range(10, 14)])
times = st.floats(min_value=0, max_value=2e9, allow_nan=False)
whole_times = st.integers(min_value=0, max_value=2_000_000_000).map(float)  # stored to the second
counts = st.integers(min_value=0, max_value=1000)
failure = st.builds(Failure, counts, st.text(max_size=20), times, times)
states = st.builds(
    MailboxState,
    seen=st.dictionaries(digests, st.builds(Seen, counts, shas), max_size=4),
    deleted=st.dictionaries(digests, st.builds(Deleted, whole_times, counts, shas), max_size=4),
    seen_content=st.dictionaries(shas, whole_times, max_size=3),
    failures=st.dictionaries(digests, failure, max_size=3),
    quarantined=st.dictionaries(digests, failure, max_size=3),
    baseline=st.dictionaries(digests, counts, max_size=3),
    auth_failures=st.integers(0, 3),
    auth_fingerprint=st.none() | st.sampled_from(["0123456789abcdef", "fedcba9876543210"]),
    busy_streak=st.integers(0, 3),
    backoff_until=st.sampled_from([0.0, NOW]),
    last_attempt=st.sampled_from([0.0, NOW]),
    last_completed=st.sampled_from([0.0, NOW]),
    lease_owner=st.none() | st.sampled_from(["run-a", "run-b"]),
    lease_until=st.sampled_from([0.0, NOW + 60]),
)
TABLES = ("seen", "deleted", "seen_content", "failures", "quarantined", "baseline")
SCALARS = tuple(f.name for f in fields(MailboxState) if f.name not in TABLES)


def full_state() -> MailboxState:
    """Every field away from its default, so a field the codec forgets shows up."""
    state = MailboxState(
        seen={D1: Seen(100, SHA, NOW - 60)},
        deleted={D2: Deleted(NOW, 200, "b" * 64)},
        seen_content={"c" * 64: NOW},
        failures={D3: Failure(1, "boom", NOW, NOW)},
        quarantined={D1: Failure(3, "bad", NOW - 10, NOW)},
        baseline={D3: 300},
        last_error="login failed: -ERR [AUTH]",
        auth_failures=2,
        auth_fingerprint="0123456789abcdef",
        backoff_until=NOW + 30,
        last_attempt=NOW,
        last_completed=NOW - 5,
        lease_owner="8a5c3f1e-0000-4000-8000-000000000001",
        lease_until=NOW + 300,
    )
    for name in SCALARS:  # counters added later count too
        if getattr(state, name) == getattr(MailboxState(), name):
            setattr(state, name, 1)
    return state


def document(**changes: Any) -> dict[str, Any]:
    data = full_state().to_json()
    data.update(changes)
    return data


def v3_document(**changes: Any) -> dict[str, Any]:
    """full_state() as version 3 wrote it: hex digests, entries as objects."""
    data = asdict(full_state())
    data["version"] = 3
    for entry in data["seen"].values():
        del entry["at"]  # version 3 did not keep it
    data.update(changes)
    return data


# -- round trip ------------------------------------------------------------------


def test_every_field_round_trips() -> None:
    state = full_state()
    for f in fields(MailboxState):
        assert getattr(state, f.name) != getattr(MailboxState(), f.name), f.name
    assert MailboxState.from_bytes(state.to_bytes()) == state
    assert state.to_json()["version"] == STATE_VERSION


@given(states)
def test_any_state_round_trips(state: MailboxState) -> None:
    assert MailboxState.from_bytes(state.to_bytes()) == state


def test_the_tables_that_grow_with_mail_are_compact_and_keep_every_bit() -> None:
    data = full_state().to_json()
    assert data["seen"] == {K1: [100, B_SHA, round(NOW - 60)]}
    assert data["baseline"] == {b64(D3): 300}
    assert data["deleted"] == {b64(D2): [round(NOW), 200, b64("b" * 64)]}
    assert data["seen_content"] == {b64("c" * 64): round(NOW)}
    # 27 and 43 characters: the UIDL digest's 160 bits and the SHA-256's 256, whole.
    assert (len(K1), len(B_SHA)) == (27, 43)
    # Failures keep the names of their quarantine records (hex).
    assert set(data["quarantined"]) == {D1}


def test_times_of_deletions_and_content_are_kept_to_the_second() -> None:
    state = MailboxState(deleted={D1: Deleted(NOW + 0.4, 1, SHA)}, seen_content={SHA: NOW + 0.6})
    again = MailboxState.from_bytes(state.to_bytes())
    assert again.deleted[D1].at == NOW
    assert again.seen_content[SHA] == NOW + 1


def test_a_version_3_document_keeps_all_its_memory_and_is_written_as_version_5() -> None:
    state = MailboxState.from_json(v3_document())
    # Version 3 did not keep when a message was first announced (0: not known).
    assert state == replace(full_state(), seen={D1: Seen(100, SHA, 0.0)})
    assert state.to_json()["version"] == STATE_VERSION == 5


# -- validation ------------------------------------------------------------------


def entry(table: str, key: str, value: Any) -> dict[str, Any]:
    return {table: {key: value}}


def failure_entry(**changes: Any) -> dict[str, Any]:
    return {"count": 1, "error": "", "first_at": 0, "last_at": 0, **changes}


BAD_DOCUMENTS: list[tuple[str, Any, str]] = [
    ("not an object", [], "not a JSON object"),
    ("no version", {k: v for k, v in document().items() if k != "version"}, "version None"),
    ("version 1", document(version=1), "version 1"),
    ("future version", document(version=6), "version 6"),
    ("version as text", document(version="5"), "version '5'"),
    ("version as float", document(version=5.0), "version 5.0"),
    ("version as bool", document(version=True), "version True"),
    ("unknown field", document(surprise=1), "unknown fields: surprise"),
    ("seen not a table", document(seen=[]), "seen: not an object"),
    ("hex key", document(**entry("seen", D1, [1, B_SHA])), "a key of 40 characters is not a 160"),
    ("short key", document(**entry("seen", "abc", [1, B_SHA])), "a key of 3 characters"),
    ("padded key", document(**entry("seen", K1 + "=", [1, B_SHA])), "a key of 28 characters"),
    # The same bits spelled another way (trailing bits set): one spelling per digest.
    ("non-canonical key", document(**entry("seen", "A" * 26 + "B", [1, B_SHA])), "a key of 27"),
    ("seen as object", document(**entry("seen", K1, {"size": 1, "sha256": B_SHA})), "[size, "),
    ("seen short", document(**entry("seen", K1, [1, B_SHA])), "not an array [size, sha256, at]"),
    ("seen sha256 in hex", document(**entry("seen", K1, [1, SHA, 0])), ".sha256: not a SHA-256"),
    ("seen sha256 empty", document(**entry("seen", K1, [1, "", 0])), ".sha256: not a SHA-256"),
    # 128 bits are not proof of 256: no digest is shortened, none read shortened.
    ("seen sha256 halved", document(**entry("seen", K1, [1, b64("ab" * 16), 0])), "not a SHA"),
    ("negative size", document(**entry("seen", K1, [-1, B_SHA, 0])), ".size: not a whole"),
    ("bool size", document(**entry("seen", K1, [True, B_SHA, 0])), ".size: not a whole"),
    ("float size", document(**entry("seen", K1, [1.5, B_SHA, 0])), ".size: not a whole"),
    ("huge size", document(**entry("seen", K1, [2**60, B_SHA, 0])), ".size: not a whole"),
    ("seen time text", document(**entry("seen", K1, [1, B_SHA, "now"])), ".at: not a finite"),
    ("baseline hex key", document(baseline={D1: 1}), "baseline: a key of 40 characters"),
    ("baseline size text", document(baseline={K1: "1"}), f"baseline[{K1}]: not a whole"),
    ("last error long", document(last_error="x" * 201), "last_error: not a text of at most"),
    ("last error number", document(last_error=5), "last_error: not a text"),
    ("pending negative", document(pending=-1), "pending: not a whole"),
    ("baseline time text", document(baseline_at="x"), "baseline_at: not a finite"),
    ("deleted bare time", document(**entry("deleted", K1, NOW)), "not an array [at, size, sha256]"),
    ("deleted no digest", document(**entry("deleted", K1, [NOW, 1])), "[at, size, sha256]"),
    ("deleted negative time", document(**entry("deleted", K1, [-1, 1, B_SHA])), ".at: not a"),
    ("deleted time text", document(**entry("deleted", K1, ["now", 1, B_SHA])), ".at: not a"),
    ("deleted sha256 hex", document(**entry("deleted", K1, [NOW, 1, SHA])), ".sha256: not a"),
    ("content key a uidl digest", document(seen_content={K1: NOW}), "seen_content: a key of 27"),
    ("content key in hex", document(seen_content={SHA: NOW}), "seen_content: a key of 64"),
    ("content time text", document(seen_content={B_SHA: "x"}), "not a finite time"),
    ("failure key in base64", document(**entry("failures", K1, failure_entry())), "a key of 27"),
    ("quarantined as list", document(quarantined=[D1]), "quarantined: not an object"),
    ("quarantined entry list", document(**entry("quarantined", D1, [3, "x"])), "not an object"),
    (
        "failure negative count",
        document(**entry("failures", D1, failure_entry(count=-1))),
        ".count: not a whole number",
    ),
    (
        "failure long error",
        document(**entry("failures", D1, failure_entry(error="x" * (MAX_ERROR_CHARS + 1)))),
        ".error: not a text",
    ),
    (
        "failure error not text",
        document(**entry("failures", D1, failure_entry(error=5))),
        ".error: not a text",
    ),
    ("auth failures negative", document(auth_failures=-1), "auth_failures: not a whole"),
    ("auth failures bool", document(auth_failures=False), "auth_failures: not a whole"),
    ("fingerprint not hex", document(auth_fingerprint="zz"), "auth_fingerprint: not null"),
    ("fingerprint empty", document(auth_fingerprint=""), "auth_fingerprint: not null"),
    ("busy streak float", document(busy_streak=1.0), "busy_streak: not a whole"),
    ("backoff far future", document(backoff_until=1e300), "backoff_until: not a finite"),
    ("last attempt null", document(last_attempt=None), "last_attempt: not a finite"),
    ("lease owner empty", document(lease_owner=""), "lease_owner: not null"),
    ("lease owner spaces", document(lease_owner="a b"), "lease_owner: not null"),
    ("lease owner long", document(lease_owner="a" * 129), "lease_owner: not null"),
    ("lease owner number", document(lease_owner=7), "lease_owner: not null"),
    ("lease until text", document(lease_until="soon"), "lease_until: not a finite"),
    # Version 3 is read with the same care.
    ("v3 unknown field", v3_document(surprise=1), "unknown fields: surprise"),
    ("v3 short key", v3_document(**entry("seen", "abc", {"size": 1, "sha256": SHA})), "key of 3"),
    ("v3 uppercase key", v3_document(**entry("seen", "A" * 40, {"size": 1, "sha256": SHA})), "40"),
    ("v3 seen string", v3_document(**entry("seen", D1, "100:abcd")), f"seen[{D1}]: not an object"),
    ("v3 empty sha256", v3_document(**entry("seen", D1, {"size": 1, "sha256": ""})), "not 64"),
    ("v3 short sha256", v3_document(**entry("seen", D1, {"size": 1, "sha256": "ab" * 16})), "64"),
    ("v3 upper sha256", v3_document(**entry("seen", D1, {"size": 1, "sha256": "A" * 64})), "64"),
    ("v3 extra", v3_document(**entry("seen", D1, {"size": 1, "sha256": SHA, "x": 1})), "exactly"),
    ("v3 deleted bare time", v3_document(**entry("deleted", D1, NOW)), "not an object"),
    (
        "v3 deleted without digest",
        v3_document(**entry("deleted", D1, {"at": NOW, "size": 1})),
        "exactly at, size, sha256",
    ),
    ("v3 content key not sha256", v3_document(seen_content={D1: NOW}), "a key of 40"),
]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [(d, f) for _, d, f in BAD_DOCUMENTS],
    ids=[n for n, _, _ in BAD_DOCUMENTS],
)
def test_damaged_document_is_refused_with_a_clear_message(data: Any, fragment: str) -> None:
    with pytest.raises(StateDamaged) as caught:
        MailboxState.from_bytes(json.dumps(data).encode())
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("run state")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not JSON (JSONDecodeError)"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON (RecursionError)"),
        (b"", "not JSON"),
        (b"null", "not a JSON object"),
    ],
    ids=["truncated", "not utf-8", "nested too deep", "empty", "null"],
)
def test_unreadable_bytes_are_refused(body: bytes, fragment: str) -> None:
    with pytest.raises(StateDamaged, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        MailboxState.from_bytes(body)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_times_are_refused(value: str) -> None:
    body = json.dumps(document()).replace(f'"last_attempt": {NOW}', f'"last_attempt": {value}')
    assert value in body
    with pytest.raises(StateDamaged, match="last_attempt: not a finite time"):
        MailboxState.from_bytes(body.encode())


def test_missing_fields_take_their_defaults() -> None:
    assert MailboxState.from_json({"version": STATE_VERSION}) == MailboxState()


def test_version_2_keeps_failures_and_login_bookkeeping_but_no_proofless_memory() -> None:
    v2 = {
        "version": 2,
        "seen": {D1: "100:" + "a" * 32},
        "deleted": {D2: NOW},
        "failures": {D3: {"count": 1, "error": "boom", "first_at": NOW, "last_at": NOW}},
        "quarantined": {D1: {"count": 3, "error": "bad", "first_at": NOW, "last_at": NOW}},
        "auth_failures": 1,
        "auth_fingerprint": "0123456789abcdef",
        "busy_streak": 2,
        "backoff_until": NOW,
        "last_attempt": NOW,
        "last_completed": NOW,
    }
    state = MailboxState.from_json(v2)
    assert state.seen == {}
    assert state.deleted == {}
    assert state.failures == {D3: Failure(1, "boom", NOW, NOW)}
    assert set(state.quarantined) == {D1}
    assert (state.auth_failures, state.busy_streak, state.last_completed) == (1, 2, NOW)
    assert state.lease_owner is None
    with pytest.raises(StateDamaged, match="quarantined"):
        MailboxState.from_json(v2 | {"quarantined": {D1: "x"}})


# -- forgetting --------------------------------------------------------------------


def test_a_capped_listing_forgets_nothing_that_is_merely_unlisted() -> None:
    state = full_state()
    before = state.copy()
    state.forget_absent(set(), NOW, complete=False)
    assert state == before


def test_a_complete_listing_forgets_what_is_gone() -> None:
    state = full_state()
    state.forget_absent({D3}, NOW, complete=True)
    assert state.seen == {}
    assert state.quarantined == {}
    assert set(state.failures) == {D3}
    # Deletions and content memories are about messages no longer listed anyway.
    assert state.deleted == full_state().deleted
    assert state.seen_content == full_state().seen_content


def deletions(*ages: float) -> dict[str, Deleted]:
    """One deletion per age (seconds before NOW), keys in that order."""
    return {f"{i:040x}": Deleted(NOW - age, 1, SHA) for i, age in enumerate(ages)}


@pytest.mark.parametrize("complete", [True, False])
def test_old_deletions_and_content_memories_are_forgotten_a_day_at_a_time(complete: bool) -> None:
    memory, step = DELETED_MEMORY_SECONDS, FORGET_STEP_SECONDS
    state = MailboxState(deleted=deletions(memory + 1, memory - 1, 0))
    state.forget_absent(set(), NOW, complete=complete)
    assert len(state.deleted) == 3  # just past its time: forgotten with the next day's
    state = MailboxState(deleted=deletions(memory + step + 1, memory + 1, memory - 1, 0))
    state.forget_absent(set(), NOW, complete=complete)
    assert sorted(NOW - d.at for d in state.deleted.values()) == [0, memory - 1]

    content = CONTENT_MEMORY_SECONDS
    state = MailboxState(
        seen_content={"b" * 64: NOW - content - step - 1, "c" * 64: NOW - content + 1}
    )
    state.forget_absent(set(), NOW, complete=complete)
    assert set(state.seen_content) == {"c" * 64}


def test_a_deletion_whose_message_is_still_listed_is_never_forgotten() -> None:
    # A server that ignores DELE: forgotten, the message would be announced again.
    old = DELETED_MEMORY_SECONDS * 10
    state = MailboxState(deleted=deletions(old, old))
    listed = next(iter(state.deleted))
    state.forget_absent({listed}, NOW, complete=True)
    assert set(state.deleted) == {listed}


def test_deletions_beyond_the_count_are_forgotten_oldest_first_in_steps() -> None:
    many = DELETED_MEMORY_ENTRIES + DELETED_MEMORY_ENTRIES // 4
    state = MailboxState(deleted=deletions(*range(many)))
    state.forget_absent(set(), NOW, complete=True)
    assert len(state.deleted) == many  # not yet a step past the count
    state.deleted.update(deletions(*range(many + 1)))
    state.forget_absent(set(), NOW, complete=True)
    ages = sorted(NOW - d.at for d in state.deleted.values())
    assert ages == list(range(DELETED_MEMORY_ENTRIES))  # the newest


def test_time_keyed_memories_have_a_hard_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    import pop3_ingest.domain.state as state_module

    monkeypatch.setattr(state_module, "_MAX_ENTRIES", 2)
    state = MailboxState(
        deleted=deletions(2, 0, 1),
        seen_content={f"{i}" * 64: NOW - i for i in range(1, 4)},
    )
    state.forget_absent(set(state.deleted), NOW, complete=False)  # listed, and still bounded
    assert sorted(NOW - d.at for d in state.deleted.values()) == [0, 1]
    assert set(state.seen_content) == {"1" * 64, "2" * 64}


def test_content_seen_again_is_not_rewritten_more_than_once_a_step() -> None:
    state = MailboxState()
    state.remember_content(SHA, NOW)
    state.remember_content(SHA, NOW + FORGET_STEP_SECONDS - 1)
    assert state.seen_content == {SHA: NOW}
    state.remember_content(SHA, NOW + FORGET_STEP_SECONDS)
    assert state.seen_content == {SHA: NOW + FORGET_STEP_SECONDS}


def a_month_of_mail(per_day: int, days: int = 30) -> list[tuple[int, int]]:
    """A mailbox receiving ``per_day`` messages, polled every 5 minutes, each message
    stored, announced and deleted as the core changes the state (domain/ingest.py,
    domain/session.py): at the end of each day, the stored document's size in bytes
    and the deletions it remembers."""
    state, now, days_end, server = MailboxState(), NOW, [], {}
    runs_per_day, arrived = 288, 0
    for run in range(days * runs_per_day):
        now += DAY / runs_per_day
        while arrived < (run + 1) * per_day // runs_per_day:
            uidl = f"{arrived:08x}{hashlib.sha256(str(arrived).encode()).hexdigest()[:16]}"
            server[uidl] = 20_000 + (arrived * 7919) % 80_000  # sizes of real mail
            arrived += 1
        state.forget_absent({uidl_digest(u) for u in server}, now, complete=True)
        for uidl, size in server.items():
            digest, sha256 = uidl_digest(uidl), hashlib.sha256(uidl.encode()).hexdigest()
            state.seen[digest] = Seen(size, sha256)  # stored and announced
            del state.seen[digest]  # QUIT committed the DELE
            state.deleted[digest] = Deleted(now, size, sha256)
        server.clear()
        state.last_attempt = state.last_completed = now
        if (run + 1) % runs_per_day == 0:
            days_end.append((len(state.to_bytes()), len(state.deleted)))
    return days_end


def test_the_state_of_a_mailbox_receiving_100_messages_a_day_stays_small() -> None:
    sizes = [size for size, _ in a_month_of_mail(per_day=100)]
    assert max(sizes[-10:]) <= max(sizes[:10])  # it stops growing within days
    assert max(sizes) < 50 * 1024  # docs/configuration.md: about 38 KB at most


def test_however_much_mail_arrives_the_deletions_remembered_are_bounded() -> None:
    remembered = [count for _, count in a_month_of_mail(per_day=2_000, days=3)]
    assert max(remembered) <= DELETED_MEMORY_ENTRIES + DELETED_MEMORY_ENTRIES // 4


# -- worth a write -------------------------------------------------------------------


def test_only_the_run_times_changed_is_not_worth_a_write() -> None:
    base = full_state()
    mine = base.copy()
    for name in RUN_TIMES:
        setattr(mine, name, getattr(base, name) + 60)
    assert not mine.worth_saving_over(base)


@pytest.mark.parametrize("name", [n for n in TABLES + SCALARS if n not in RUN_TIMES])
def test_any_other_change_is_worth_a_write(name: str) -> None:
    base, changed = MailboxState(last_attempt=NOW), full_state()
    mine = replace(base, **{name: getattr(changed, name)})
    assert mine.worth_saving_over(base)


def test_an_unchanged_state_is_rewritten_twice_a_day() -> None:
    base = full_state()
    mine = replace(base, last_attempt=base.last_attempt + REWRITE_AFTER_SECONDS - 1)
    assert not mine.worth_saving_over(base)
    mine.last_attempt = base.last_attempt + REWRITE_AFTER_SECONDS
    assert mine.worth_saving_over(base)


# -- lease ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "until", "holder"),
    [
        (None, NOW + 60, None),
        ("run-a", NOW + 60, "run-a"),
        ("run-a", NOW, None),  # expired
        ("run-a", NOW + MAX_LEASE_SECONDS + 1, None),  # no run lasts that long
    ],
    ids=["free", "held", "expired", "implausible"],
)
def test_lease_holder(owner: str | None, until: float, holder: str | None) -> None:
    assert MailboxState(lease_owner=owner, lease_until=until).lease_holder(NOW) == holder


# -- merge -------------------------------------------------------------------------


@given(states, states)
def test_merge_without_changes_of_mine_is_theirs(base: MailboxState, theirs: MailboxState) -> None:
    assert MailboxState.merge(base, base.copy(), theirs) == theirs


@given(states, states)
def test_merge_without_changes_of_theirs_is_mine(base: MailboxState, mine: MailboxState) -> None:
    assert MailboxState.merge(base, mine, base.copy()) == mine


@settings(max_examples=300)
@given(states, states, states)
def test_merge_keeps_my_changes_and_their_independent_ones(
    base: MailboxState, mine: MailboxState, theirs: MailboxState
) -> None:
    inputs = (base.copy(), mine.copy(), theirs.copy())
    merged = MailboxState.merge(base, mine, theirs)
    assert (base, mine, theirs) == inputs  # the inputs are left alone
    missing = object()
    for name in TABLES:
        b, m, t, r = (getattr(s, name) for s in (base, mine, theirs, merged))
        for key in b.keys() | m.keys() | t.keys():
            mine_changed = b.get(key, missing) != m.get(key, missing)
            expected = (m if mine_changed else t).get(key, missing)
            assert r.get(key, missing) == expected, (name, key)
    lease_taken = (theirs.lease_owner, theirs.lease_until) != (base.lease_owner, base.lease_until)
    for name in SCALARS:
        mine_changed = getattr(mine, name) != getattr(base, name)
        if name.startswith("lease_") and lease_taken:
            mine_changed = False  # another run took the lease: it stays theirs
        assert getattr(merged, name) == getattr(mine if mine_changed else theirs, name), name
    # The result is its own: changing it changes none of the inputs.
    for failure_ in merged.failures.values():
        failure_.count += 1
    assert (base, mine, theirs) == inputs


def test_an_operator_release_during_a_run_is_not_undone() -> None:
    base = MailboxState(quarantined={D1: Failure(3, "bad", NOW, NOW)}, lease_owner="run-a")
    base.lease_until = NOW + 300
    mine = base.copy()  # the run stores a message and gives the lease back
    mine.seen[D2] = Seen(10, SHA)
    mine.lease_owner, mine.lease_until = None, 0.0
    theirs = base.copy()
    theirs.release(D1)
    merged = MailboxState.merge(base, mine, theirs)
    assert merged.quarantined == {}
    assert merged.seen == {D2: Seen(10, SHA)}
    assert merged.lease_owner is None


def test_two_runs_deletions_both_survive() -> None:
    base = MailboxState(seen={D1: Seen(1, SHA), D2: Seen(2, SHA)})
    mine, theirs = base.copy(), base.copy()
    mine.seen.pop(D1)
    mine.deleted[D1] = Deleted(NOW, 1, SHA)
    theirs.seen.pop(D2)
    theirs.deleted[D2] = Deleted(NOW, 2, SHA)
    merged = MailboxState.merge(base, mine, theirs)
    assert merged.seen == {}
    assert set(merged.deleted) == {D1, D2}


def test_giving_the_lease_back_never_releases_someone_elses() -> None:
    base = MailboxState(lease_owner="run-a", lease_until=NOW + 300)
    mine = replace(base, lease_owner=None, lease_until=0.0)
    theirs = replace(base, lease_owner="run-b", lease_until=NOW + 900)
    merged = MailboxState.merge(base, mine, theirs)
    assert (merged.lease_owner, merged.lease_until) == ("run-b", NOW + 900)


# -- the S3 store, against an in-memory S3 that honours conditions ---------------------


MAILBOX = "support"
KEY = "mail/_state/support.json"


def store_on(s3: FakeS3, **kw: Any) -> S3StateStore:
    return S3StateStore(s3, "bucket", "mail/", **kw)  # type: ignore[arg-type]


def test_first_write_creates_and_later_writes_are_conditional() -> None:
    s3 = FakeS3()
    store = store_on(s3)
    empty = store.read(MAILBOX)
    assert empty.etag is None
    written = store.write(MAILBOX, full_state(), empty)
    assert written.etag == s3.objects[KEY][1]
    assert store.read(MAILBOX).state == full_state()


def test_a_writer_that_lost_the_race_merges_instead_of_overwriting() -> None:
    s3 = FakeS3()
    store = store_on(s3)
    base_state = MailboxState(quarantined={D1: Failure(3, "bad", NOW, NOW)})
    store.write(MAILBOX, base_state, store.read(MAILBOX))
    base = store.read(MAILBOX)
    mine = base.state.copy()
    mine.deleted[D2] = Deleted(NOW, 5, SHA)

    def operator_releases() -> None:
        theirs = base.state.copy()
        theirs.release(D1)
        s3.write_state(KEY, theirs)

    s3.before_put.append(operator_releases)
    result = store.write(MAILBOX, mine, base)
    stored = store.read(MAILBOX).state
    assert stored == result.state
    assert stored.quarantined == {}  # their release stands
    assert set(stored.deleted) == {D2}  # and so does my deletion
    assert s3.calls.count("put") == 3  # base, lost race, merged


def test_409_conflicts_are_retried_and_a_key_deleted_meanwhile_is_recreated() -> None:
    s3 = FakeS3()
    store = store_on(s3)
    base = store.write(MAILBOX, MailboxState(), store.read(MAILBOX))
    s3.put_errors.append("ConditionalRequestConflict")
    s3.before_put += [lambda: None, lambda: s3.objects.pop(KEY)]
    store.write(MAILBOX, full_state(), base)
    assert store.read(MAILBOX).state == full_state()


def test_a_state_that_keeps_changing_is_given_up_on_not_overwritten() -> None:
    s3 = FakeS3()
    store = store_on(s3)
    base = store.write(MAILBOX, MailboxState(), store.read(MAILBOX))
    s3.before_put += [lambda: s3.write_state(KEY, MailboxState(busy_streak=7))] * 10
    with pytest.raises(StoreError, match="changed under every one"):
        store.write(MAILBOX, full_state(), base)
    assert store.read(MAILBOX).state.busy_streak == 7


def test_other_write_errors_are_store_errors() -> None:
    s3 = FakeS3()
    s3.put_errors.append("InternalError")
    store = store_on(s3)
    with pytest.raises(StoreError, match="cannot write run state"):
        store.write(MAILBOX, MailboxState(), store.read(MAILBOX))


def test_a_damaged_state_is_set_aside_counted_and_read_as_empty() -> None:
    s3 = FakeS3()
    s3.objects[KEY] = (b'{"version": 3, "seen": {"x": 1}}', '"7"')
    damaged: list[str] = []
    store = store_on(s3, on_damaged=damaged.append)
    snapshot = store.read(MAILBOX)
    assert snapshot.state == MailboxState()
    assert snapshot.etag == '"7"'  # the next write replaces exactly that version
    assert snapshot.damaged
    assert "seen" in snapshot.damaged
    assert damaged == [snapshot.damaged]
    (aside,) = [k for k in s3.objects if k != KEY]
    assert aside.startswith("mail/_state/damaged/support.")
    assert aside.endswith(".json")
    assert s3.objects[aside][0] == s3.objects[KEY][0]


def test_an_oversized_state_is_not_read_into_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import pop3_ingest.integrations.s3_state as module

    monkeypatch.setattr(module, "_MAX_STATE_BYTES", 10)
    s3 = FakeS3()
    s3.write_state(KEY, full_state())
    snapshot = store_on(s3).read(MAILBOX)
    assert snapshot.damaged
    assert "larger than 10 bytes" in snapshot.damaged


def test_a_lease_held_by_another_live_run_is_not_taken() -> None:
    s3 = FakeS3()
    s3.write_state(KEY, MailboxState(lease_owner="run-b", lease_until=NOW + 60))
    store = store_on(s3)
    current = store.read(MAILBOX)
    assert store.take_lease(MAILBOX, "run-a", NOW + 300, NOW, current) is None
    assert "put" not in s3.calls


def test_a_lease_is_taken_conditionally_and_lost_to_a_faster_run() -> None:
    s3 = FakeS3()
    store = store_on(s3)
    current = store.read(MAILBOX)
    s3.before_put.append(
        lambda: s3.write_state(KEY, MailboxState(lease_owner="run-b", lease_until=NOW + 60))
    )
    assert store.take_lease(MAILBOX, "run-a", NOW + 300, NOW, current) is None
    assert store.read(MAILBOX).state.lease_owner == "run-b"


def test_an_expired_lease_is_taken_over() -> None:
    s3 = FakeS3()
    s3.write_state(KEY, MailboxState(lease_owner="run-b", lease_until=NOW - 1, busy_streak=2))
    store = store_on(s3)
    lease = store.take_lease(MAILBOX, "run-a", NOW + 300, NOW, store.read(MAILBOX))
    assert lease is not None
    stored = store.read(MAILBOX).state
    assert (stored.lease_owner, stored.lease_until, stored.busy_streak) == ("run-a", NOW + 300, 2)
    assert lease.state == stored


def calls_on(store: S3StateStore, current: Snapshot) -> dict[str, Callable[[], object]]:
    return {
        "read": lambda: store.read(MAILBOX),
        "write": lambda: store.write(MAILBOX, MailboxState(), current),
        "lease": lambda: store.take_lease(MAILBOX, "run-a", NOW + 300, NOW, current),
        "quarantine": lambda: store.put_quarantine_record(MAILBOX, D1, {"size": 1}),
    }


@pytest.mark.parametrize("operation", ["read", "write", "lease", "quarantine"])
def test_no_call_is_started_once_the_deadline_has_come(operation: str) -> None:
    s3 = FakeS3()
    left = [100.0]
    store = store_on(s3, time_left=lambda: left[0])
    call = calls_on(store, store.read(MAILBOX))[operation]
    s3.calls.clear()
    left[0] = 0.0
    with pytest.raises(StoreError, match="no time left"):
        call()
    assert s3.calls == []


class HangingS3(FakeS3):
    """An S3 that accepts the connection and then never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = threading.Event()

    def get_object(self, **kw: Any) -> dict[str, Any]:
        self.answer.wait()
        return super().get_object(**kw)

    def put_object(self, **kw: Any) -> dict[str, Any]:
        self.answer.wait()
        return super().put_object(**kw)


@pytest.mark.parametrize("operation", ["read", "write", "lease", "quarantine"])
def test_a_call_that_hangs_is_given_up_at_the_deadline(operation: str) -> None:
    s3 = HangingS3()
    store = store_on(s3, time_left=lambda: 0.05)
    current = Snapshot(MailboxState(), None)
    try:
        with pytest.raises(StoreError, match="deadline came first"):
            calls_on(store, current)[operation]()
    finally:
        s3.answer.set()


def test_the_state_client_gives_up_within_the_default_deadline_margin() -> None:
    from pop3_ingest.config import Settings

    # Even uninterrupted by the deadline, a state call with all its attempts fails
    # (and is logged) within the margin left for the run's last save.
    config = STATE_CLIENT_CONFIG
    attempts = config.retries["total_max_attempts"]
    worst = attempts * (config.connect_timeout + config.read_timeout) + 2 ** (attempts - 1)
    assert worst < Settings.deadline_margin_seconds


def test_snapshot_state_is_a_base_the_caller_does_not_share() -> None:
    s3 = FakeS3()
    store = store_on(s3)
    written = store.write(MAILBOX, full_state(), Snapshot(MailboxState(), None))
    mine = full_state()
    written2 = store.write(MAILBOX, mine, written)
    mine.seen.clear()
    assert written2.state.seen == full_state().seen
