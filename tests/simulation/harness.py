"""The one place the simulation touches the core (``pop3_ingest``).

The models speak POP3 over a socket and keep S3/SQS as plain objects; this
module plugs them into the real code: :class:`~pop3_ingest.pop3.Pop3Mailbox`
for every session, the core's ports (``MessageStore`` and ``Announcer``,
the latter through the real :class:`~pop3_ingest.integrations.sqs_announcer.SqsAnnouncer`
over a model SQS client), and the state carried from run to run as JSON, as the
handler does. When the core's API moves, only this file follows it.
"""

from __future__ import annotations

import dataclasses
import gc
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from botocore.exceptions import ClientError
from tests.simulation.models import ModelBucket, ModelFault, ModelQueue, World
from tests.support.local_hosts import LOCAL_SERVERS

from pop3_ingest.config import MailboxConfig, TlsMode
from pop3_ingest.domain import ingest as core
from pop3_ingest.domain import message as message_module
from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.ingest import MailboxIngest
from pop3_ingest.domain.message import Readable, ServerMessage, StoredObject, uidl_digest
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.state import Failure, MailboxState
from pop3_ingest.domain.summary import RunSummary
from pop3_ingest.errors import Pop3IngestError, StoreError
from pop3_ingest.integrations.sqs_announcer import SqsAnnouncer
from pop3_ingest.pop3 import Pop3Mailbox

# Issue 8: a message without a unique UIDL is remembered by its UIDL text and size
# (None on the core before it, which remembers UIDLs only).
failure_key: Callable[[ServerMessage], str] | None = getattr(message_module, "failure_key", None)

MAILBOX = "sim"
QUEUE_URL = "https://sqs.invalid/000000000000/sim-queue"  # never contacted: the client is a model
# Small limits, so that a handful of small messages reach every path of the
# core: streaming (above STREAM_THRESHOLD), the memory budget, oversized
# messages, commits every few messages.
STREAM_THRESHOLD = 4096
MAX_MESSAGE_SIZE = 100_000
POISON_THRESHOLD = IngestOptions().poison_threshold
# A run ends at most this many sessions in a row without QUIT (each a message
# that breaks the line, counted against it); the rest waits for the next run.
SESSIONS_BROKEN_PER_RUN = getattr(core, "ABANDONED_SESSIONS_LIMIT", 1)
# The core's deadline margin and the POP3 read timeout, in simulated seconds.
DEADLINE_MARGIN = 20.0
POP3_TIMEOUT = 30.0


class StoreAdapter:
    """The core's ``MessageStore`` port over the model bucket (S3 errors as StoreError)."""

    def __init__(self, bucket: ModelBucket) -> None:
        self._bucket = bucket
        self.bucket = bucket.name

    def put_bytes(self, key: str, data: bytes, sha256_hex: str, metadata: dict[str, str]) -> bool:
        try:
            return self._bucket.put(key, data, {**metadata, "sha256": sha256_hex})
        except ModelFault as exc:
            raise StoreError(str(exc)) from exc

    def put_file(
        self,
        key: str,
        path: str,
        sha256_hex: str,
        metadata: dict[str, str],
        cancelled: Callable[[], bool],
    ) -> bool:
        """A big message from a spool file: a multipart upload the caller can give up."""
        with open(path, "rb") as body:
            try:
                return self._bucket.put_stream(
                    key, body.read, {**metadata, "sha256": sha256_hex}, cancelled
                )
            except ModelFault as exc:
                raise StoreError(str(exc)) from exc

    def put_stream(self, key: str, body: Readable, metadata: dict[str, str]) -> bool:
        """The streamed upload of the core before issue 8 (no digest known up front)."""
        try:
            return self._bucket.put_stream(key, body.read, metadata)
        except ModelFault as exc:
            raise StoreError(str(exc)) from exc

    def stored_object(self, key: str) -> StoredObject | None:
        try:
            blob = self._bucket.head(key)
        except ModelFault as exc:
            raise StoreError(str(exc)) from exc
        if blob is None:
            return None
        return StoredObject(size=len(blob.data), sha256=blob.metadata.get("sha256"))


class SqsClientModel:
    """Just enough of boto3's SQS client for SqsAnnouncer: ``send_message_batch``."""

    def __init__(self, queue: ModelQueue) -> None:
        self._queue = queue

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        try:
            failed = self._queue.send_batch([entry["MessageBody"] for entry in Entries])
        except ModelFault as exc:
            error = {"Error": {"Code": "InternalError", "Message": str(exc)}}
            raise ClientError(error, "SendMessageBatch") from exc  # type: ignore[arg-type]
        return {
            "Successful": [{"Id": e["Id"]} for i, e in enumerate(Entries) if i not in failed],
            "Failed": [
                {"Id": Entries[i]["Id"], "Code": code, "SenderFault": True}
                for i, code in failed.items()
            ],
        }


@dataclass(frozen=True)
class CoreSettings:
    delete: bool = True
    pipeline_window: int = 8
    upload_workers: int = 2
    commit_every_messages: int = 1000
    memory_budget: int = 32 * 1024
    capped_listing: int | None = None


@dataclass
class RunRecord:
    """What one run did, as the invariants and the coverage report see it."""

    stop: str  # the StopReason, or "raised <ErrorType>"
    lambda_deadline: float  # simulated time at which Lambda would stop the run
    ended: float  # simulated time at which run() returned
    summary: dict[str, Any] = field(default_factory=dict)
    quarantined_now: list[str] = field(default_factory=list)  # UIDLs handed to on_quarantine

    @property
    def overrun(self) -> float:
        return self.ended - self.lambda_deadline


class CoreHarness:
    """Runs the real core against a :class:`World`, carrying its state as JSON."""

    def __init__(self, world: World, settings: CoreSettings) -> None:
        self.world = world
        self.settings = settings
        self.state_json: dict[str, Any] = MailboxState().to_json()
        self._store = StoreAdapter(world.bucket)
        # The real adapter, so its JSON encoding is what the model SQS checks.
        self._announcer = SqsAnnouncer(cast(Any, SqsClientModel(world.queue)), QUEUE_URL)
        self._config = MailboxConfig(
            host="127.0.0.1",
            port=world.server.port,
            tls=TlsMode.NONE,
            username="sim",
            password="sim-password",
            mailbox=MAILBOX,
            delete=settings.delete,
            max_message_size=MAX_MESSAGE_SIZE,
        )

    def options(self) -> IngestOptions:
        s = self.settings
        wanted: dict[str, Any] = {
            "delete": s.delete,
            "max_message_size": MAX_MESSAGE_SIZE,
            "pipeline_window": s.pipeline_window,
            "upload_workers": s.upload_workers,
            "memory_budget": s.memory_budget,
            "stream_threshold": STREAM_THRESHOLD,
            "commit_every_messages": s.commit_every_messages,
            "poison_threshold": POISON_THRESHOLD,
        }
        if s.capped_listing:
            # The provider's cap, so the core recognises a partial listing.
            wanted["capped_listing"] = s.capped_listing
        # Options this core does not have (an older or newer core) are left out.
        known = {f.name for f in dataclasses.fields(IngestOptions)}
        return IngestOptions(**{k: v for k, v in wanted.items() if k in known})

    def run(self, budget: float) -> RunRecord:
        """One invocation with ``budget`` simulated seconds before Lambda stops it."""
        # A long search grows Hypothesis's own heap until one full collection takes
        # ~0.4 s, i.e. 40 simulated seconds: enough to fail invariant 3 with no
        # fault of the core's (found with gc.callbacks). A Lambda's heap holds only
        # its run, so collections wait until the run has returned.
        gc.disable()
        try:
            return self._run(budget)
        finally:
            gc.enable()

    def _run(self, budget: float) -> RunRecord:
        clock = self.world.clock
        lambda_deadline = clock.now() + budget

        def remaining_ms() -> int:
            return int((lambda_deadline - clock.now()) * 1000)

        def time_left() -> float:
            # As the handler does: reads give up when half the margin is left.
            return clock.to_real(remaining_ms() / 1000 - DEADLINE_MARGIN / 2)

        quarantined: list[str] = []

        def on_quarantine(message: ServerMessage, failure: Failure) -> None:
            quarantined.append(message.uidl)

        state = MailboxState.from_json(json.loads(json.dumps(self.state_json)))
        ingest = MailboxIngest(
            mailbox_name=MAILBOX,
            connect=lambda: Pop3Mailbox(
                self._config,
                timeout=clock.to_real(POP3_TIMEOUT),
                time_left=time_left,
                address_policy=LOCAL_SERVERS,
            ),
            store=self._store,
            announcer=self._announcer,
            deadline=Deadline(remaining_ms, DEADLINE_MARGIN),
            options=self.options(),
            state=state,
            on_quarantine=on_quarantine,
        )
        summary: RunSummary | None = None
        try:
            summary = ingest.run()
            stop = str(summary.stopped.value)
        except Pop3IngestError as exc:
            # The handler logs these and saves the state as it stands.
            stop = f"raised {type(exc).__name__}"
        ended = clock.now()
        # Saved as the handler saves it, and read back next run.
        self.state_json = json.loads(json.dumps(ingest.state.to_json()))
        record = RunRecord(stop, lambda_deadline, ended, quarantined_now=quarantined)
        if summary is not None:
            record.summary = {
                k: v for k, v in vars(summary).items() if isinstance(v, int) and k != "stopped"
            }
        return record

    def is_quarantined(self, uidl: str | None, size: int) -> bool:
        """The saved state says this message is quarantined (left on the server on purpose).

        ``uidl`` is what the server lists (None: no UIDL); a message without a
        unique UIDL is remembered under its UIDL text and size.
        """
        quarantined = self.state_json.get("quarantined", {})
        keys = {uidl_digest(uidl or "")}
        if failure_key is not None:
            for text in {uidl or "", ""}:
                listed = ServerMessage(0, text, size, unique=False)  # type: ignore[call-arg,unused-ignore]
                keys.add(failure_key(listed))
        return any(key in quarantined for key in keys)


def pointer_key_and_digest(pointer: dict[str, Any]) -> tuple[str, str, str]:
    """(bucket, key, sha256) a pointer names (docs/pointer.md)."""
    return str(pointer.get("bucket")), str(pointer.get("key")), str(pointer.get("sha256"))
