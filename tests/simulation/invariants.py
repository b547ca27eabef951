"""The simulation's specification: what must hold after every step, whatever the world did.

Each function raises AssertionError with a reader-facing explanation when its
rule is broken. They read only the models' records (and, through the harness,
the state the core saved), never the core's internals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from tests.simulation.harness import RunRecord, pointer_key_and_digest
from tests.simulation.models import ModelBucket, ModelMessage, ModelQueue, Pop3ServerModel


def is_safely_stored(message: ModelMessage, bucket: ModelBucket, queue: ModelQueue) -> bool:
    """True when an object holding exactly the message's bytes exists in the bucket
    and a pointer naming that object's key and SHA-256 was accepted by the queue."""
    digest = hashlib.sha256(message.served).hexdigest()
    for pointer in list(queue.sent):
        bucket_name, key, sha256 = pointer_key_and_digest(pointer)
        if sha256 != digest or bucket_name != bucket.name:
            continue
        blob = bucket.objects.get(key)
        if blob is not None and blob.data == message.served:
            return True
    return False


def nothing_is_deleted_or_popped_unless_stored_and_announced(server: Pop3ServerModel) -> None:
    """Invariant 1. A message may stop being offered by the server (deleted at QUIT,
    or "popped" by Gmail because it was retrieved in a session ending with QUIT)
    only if, at that moment, its exact bytes were in S3 and a pointer naming that
    key and its SHA-256 had been sent."""
    lost = [r for r in server.removals if not r.proven]
    assert not lost, "mail lost: " + "; ".join(
        f"message {r.message.ident} (UIDL {r.message.uidl!r}, {r.message.size} bytes) "
        f"{r.how} by the server before it was stored and announced"
        for r in lost
    )


def no_stored_object_is_ever_overwritten(bucket: ModelBucket) -> None:
    """Invariant 2. Every key was written at most once, and each object still holds
    the bytes of its first write (the model refuses overwrites as S3 does with
    If-None-Match; this checks the refusals held and no write slipped through)."""
    accepted: dict[str, str] = {}
    attempts, objects = bucket.snapshot()
    for attempt in attempts:
        if attempt.accepted:
            assert attempt.key not in accepted, f"{attempt.key} written twice"
            accepted[attempt.key] = attempt.sha256
    for key, blob in objects.items():
        assert hashlib.sha256(blob.data).hexdigest() == accepted.get(key), (
            f"{key} holds bytes other than those first written"
        )


def every_run_returns_before_its_deadline(runs: Iterable[RunRecord], slack: float) -> None:
    """Invariant 3. Each run returns (its state then saved) before the moment Lambda
    would stop it, whatever S3, SQS or the server do. ``slack`` (simulated seconds)
    absorbs the test machine's scheduling noise, not the core's waits."""
    late = [r for r in runs if r.overrun > slack]
    assert not late, "runs past their deadline: " + "; ".join(
        f"stopped {r.stop!r} {r.overrun:.1f} simulated s after Lambda's deadline" for r in late
    )


def pointers_are_valid_sqs_text(queue: ModelQueue) -> None:
    """Invariant 5 (issue 8, hole 8). Every pointer the core sends is a message body
    SQS accepts: no character outside #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD
    #x10000-#x10FFFF, so a header can never stall a mailbox."""
    refused = [r for r in queue.refused if r.code == "InvalidMessageContents"]
    assert not refused, f"SQS refused {len(refused)} pointer(s) for their characters: " + repr(
        refused[0].body[:300]
    )


def every_message_is_announced_or_quarantined(
    messages: Iterable[ModelMessage],
    bucket: ModelBucket,
    queue: ModelQueue,
    is_quarantined: dict[int, bool],
    oversized: dict[int, bool],
    runs: int,
) -> None:
    """Invariant 4. Once faults stop, within a bounded number of runs every message
    on the server is announced (its bytes stored with a pointer) or quarantined
    (left on the server on purpose after POISON_THRESHOLD failures), or larger than
    the size limit. Nothing is stranded, whatever precedes it in a capped listing."""
    stranded = [
        m
        for m in messages
        if not m.removed
        and not is_quarantined[m.ident]
        and not oversized[m.ident]
        and not is_safely_stored(m, bucket, queue)
    ]
    assert not stranded, f"after {runs} fault-free runs, stranded: " + "; ".join(
        f"message {m.ident} (UIDL {m.uidl!r}, {m.size} bytes, first line {_first_line(m)!r})"
        for m in stranded
    )


def _first_line(message: ModelMessage) -> bytes:
    return message.served.split(b"\r\n", 1)[0][:40]
