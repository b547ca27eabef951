"""One POP3 session of a run: its plan, the command window, the uploads, and its end.

The session lists the mailbox, plans against the state (:mod:`.plan`), keeps
RETRs and DELEs in flight (:mod:`.pipeline`) while uploads and pointer batches
run (:mod:`.uploads`), and decides how it ends. What happens to each message
it retrieves is the :class:`Custody`'s.

The rules enforced here (README "Never losing mail"):

- **Proof before DELE.** A message is deleted only when the bytes retrieved
  *in this session* hash to the SHA-256 of an object we stored and announced:
  just stored, or stored before and remembered in the state.
- **No QUIT with anything unconfirmed.** Some servers (Gmail) stop offering
  any message retrieved in a session that ends with QUIT, deleted or not. So a
  session ends with QUIT only when every message retrieved in it is stored and
  announced (or proven so); otherwise the connection is dropped, the server
  forgets its DELEs, and a short new session re-proves and deletes.
- **The deadline bounds every wait.** Past the soft deadline nothing new is
  taken; at the hard cut-off the session is dropped and uploads are abandoned
  (their multipart uploads aborted), leaving time to save the state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.ledger import RunLedger
from pop3_ingest.domain.message import ServerMessage, failure_key, uidl_digest
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.pipeline import Buffers, CommandWindow, Download, receive
from pop3_ingest.domain.plan import SessionPlan, first_look, plan_session
from pop3_ingest.domain.ports import Announcer, Session
from pop3_ingest.domain.state import MailboxState, Seen
from pop3_ingest.domain.summary import RunSummary, StopReason
from pop3_ingest.domain.uploads import ObjectWriter, Stored, UploadPools, UploadStage
from pop3_ingest.errors import AnnounceError, ConnectionLost, Pop3IngestError, ProtocolError

logger = logging.getLogger(__name__)

# A read cut off this close to the cut-off was stopped by the run's clock.
_CUTOFF_SLACK_SECONDS = 1.0


@dataclass(frozen=True)
class RunContext:
    """What the sessions of one run share (the run builds it once)."""

    options: IngestOptions
    state: MailboxState
    summary: RunSummary
    deadline: Deadline
    ledger: RunLedger
    pools: UploadPools
    writer: ObjectWriter
    announcer: Announcer


@dataclass
class SessionOutcome:
    # DELEs answered +OK, with the digest that proved each: committed only by QUIT.
    marked: list[tuple[ServerMessage, str]] = field(default_factory=list)
    stop: StopReason | None = None
    commit_and_continue: bool = False
    look_for_more: bool = False
    may_quit: bool = True


class ContentTwins:
    """Copies of one content (no unique UIDL) retrieved while the first copy is still
    being stored and announced: they wait for its pointer, which proves them, instead
    of sending one of their own (the same content is announced once)."""

    def __init__(self) -> None:
        # sha256 of a first copy in flight -> the twins waiting for it.
        self._waiting: dict[str, list[Download]] = {}
        # message number of a first copy -> its sha256.
        self._first: dict[int, str] = {}

    def hold(self, download: Download) -> bool:
        """True if ``download`` is a twin of a first copy in flight (it now waits)."""
        twins = self._waiting.get(download.sha256)
        if twins is not None:
            twins.append(download)
            return True
        self._waiting[download.sha256] = []
        self._first[download.message.number] = download.sha256
        return False

    def decided(self, first: ServerMessage) -> list[Download]:
        """The first copy is announced, or failed: the twins that waited for it."""
        sha256 = self._first.pop(first.number, None)
        return self._waiting.pop(sha256, []) if sha256 is not None else []


class Custody:
    """Each message retrieved in a session, from its RETR answer until it is confirmed.

    Confirmed: stored and announced, or proven by digest to be the bytes of an
    object stored and announced before. A confirmed message's DELE is queued;
    a message that cannot be confirmed keeps the session from its QUIT.
    Failures are counted against the message (``RunLedger.fail``) unless they
    are not its fault. It is the upload stage's listener.
    """

    def __init__(self, run: RunContext, window: CommandWindow, buffers: Buffers) -> None:
        self._run = run
        self._window = window
        self._buffers = buffers
        # UIDL -> the digest of the object stored and announced for it before.
        self._prove: dict[str, str] = {}
        # Of those, the UIDLs whose deletion was committed before (reappearing).
        self._reappearing: set[str] = set()
        # Messages retrieved in this session, and those of them confirmed:
        # QUIT only when the two agree.
        self._retrieved: set[int] = set()
        self._confirmed: set[int] = set()
        self._no_quit_reason = ""
        self._twins = ContentTwins()
        # The line broke while a message was being read (counted against it).
        self.lost_on_a_message = False

    def expect(self, prove: Mapping[str, str], reappearing: Iterable[str]) -> None:
        """The plan's proofs: UIDL -> the digest its bytes must hash to."""
        self._prove.update(prove)
        self._reappearing.update(reappearing)

    def refuse_quit(self, reason: str) -> None:
        """Something retrieved cannot be confirmed: stop taking more; no QUIT."""
        if not self._no_quit_reason:
            self._no_quit_reason = reason
        self._window.void_deletes()

    def quit_blocker(self) -> str:
        """Why the session must not QUIT; empty when it may."""
        unconfirmed = self._retrieved - self._confirmed
        if unconfirmed and not self._no_quit_reason:
            return f"{len(unconfirmed)} retrieved message(s) not confirmed"
        return self._no_quit_reason

    # -- answers ----------------------------------------------------------------

    def receive(self, message: ServerMessage) -> Download | None:
        """RETR's answer: the download to store, or None (proven, or failed)."""
        download = self._download(message)
        if download is None:
            return None
        state = self._run.state
        expected = self._prove.pop(message.uidl, None) if message.unique else None
        if expected is not None:
            if download.sha256 == expected:
                self._proven(download)
                return None
            logger.warning("UIDL reused for other content; treating it as a new message")
            state.seen.pop(uidl_digest(message.uidl), None)
            self._reappearing.discard(message.uidl)
        if not message.unique and download.sha256 in state.seen_content:
            # Announced before under its content digest (no unique UIDL).
            state.remember_content(download.sha256, time.time())
            self._proven(download)
            return None
        if not message.unique and self._twins.hold(download):
            return None  # proven by its first copy's pointer, or left with it
        return download

    def _download(self, message: ServerMessage) -> Download | None:
        """RETR's answer, hashed; None when the server refused it. Any failure
        while reading counts against the message, whatever it was."""
        fail = self._run.ledger.fail
        try:
            stream = self._window.read_retr(message)
        except ProtocolError as exc:  # -ERR: nothing was retrieved
            fail(message, str(exc))
            return None
        except ConnectionLost as exc:
            # A message whose first line looks like a status line lands here
            # on every run: counted, it is quarantined in time.
            self._failed_download(message, exc)
            raise
        self._retrieved.add(message.number)
        started = time.monotonic()
        try:
            download = receive(message, stream, self._run.options.stream_threshold, self._buffers)
        except ConnectionLost as exc:
            self._failed_download(message, exc)
            raise
        except ProtocolError as exc:  # grew far past its LIST size: out of step
            fail(message, str(exc))
            raise ConnectionLost("session abandoned after an oversized answer") from exc
        except OSError as exc:  # the spool file: /tmp full
            fail(message, f"cannot spool the message: {exc}")
            if not stream.finished:
                raise ConnectionLost("session abandoned: message could not be spooled") from exc
            self.refuse_quit("a retrieved message could not be kept")
            return None
        self._run.deadline.observe(download.size, time.monotonic() - started)
        return download

    def _failed_download(self, message: ServerMessage, exc: Exception) -> None:
        # Cut off by the run's own deadline is not the message's fault.
        near_cutoff = self._run.deadline.seconds_to_cutoff() <= _CUTOFF_SLACK_SECONDS
        self._run.ledger.fail(message, str(exc), poison=not near_cutoff)
        self.lost_on_a_message = not near_cutoff

    def _proven(self, download: Download) -> None:
        """The bytes just retrieved are those of a stored, announced object."""
        message, delete = download.message, self._run.options.delete
        self._buffers.release(download)
        self._confirmed.add(message.number)
        self._run.state.record_success(failure_key(message))
        if message.uidl in self._reappearing:
            self._run.summary.reappeared += 1
        elif delete:
            self._run.summary.redeleted += 1
        if delete:
            self._window.queue_delete(message, download.sha256)

    # -- completions (UploadListener) ---------------------------------------------

    def stored(self, stored: Stored) -> None:
        summary = self._run.summary
        if stored.new:
            summary.stored += 1
            summary.bytes_stored += stored.record.size
        else:
            summary.already_stored += 1

    def store_failed(self, message: ServerMessage, error: Pop3IngestError) -> None:
        self._run.ledger.fail(message, str(error))
        self._release_twins(message)
        self.refuse_quit("a retrieved message could not be stored")

    def batch_failed(self, batch: list[Stored], error: AnnounceError) -> None:
        ledger = self._run.ledger
        ledger.queue_failed()
        for stored in batch:
            # The queue failing is not the message's fault: no poison count.
            ledger.fail(stored.message, str(error), poison=False)
            self._release_twins(stored.message)
        self.refuse_quit("a pointer could not be sent")

    def batch_sent(self, batch: list[Stored], rejected: set[int]) -> None:
        self._run.ledger.queue_answered()
        for index, stored in enumerate(batch):
            if index in rejected:
                self._run.ledger.fail(stored.message, "SQS rejected the pointer")
                self._release_twins(stored.message)
                self.refuse_quit("a pointer was rejected")
            else:
                self._announced(stored)

    def _announced(self, stored: Stored) -> None:
        message, sha256, state = stored.message, stored.record.sha256, self._run.state
        self._run.summary.announced += 1
        self._confirmed.add(message.number)
        state.record_success(failure_key(message))
        state.release(failure_key(message))  # stored after all: no longer quarantined
        if message.unique:
            state.seen[uidl_digest(message.uidl)] = Seen(size=message.size, sha256=sha256)
        else:
            state.remember_content(sha256, time.time())
        if self._run.options.deletes_when_stored(message):
            self._window.queue_delete(message, sha256)
        for twin in self._twins.decided(message):
            self._proven(twin)

    def _release_twins(self, first: ServerMessage) -> None:
        """The first copy failed: its twins stay unconfirmed (no QUIT), and on the server."""
        for twin in self._twins.decided(first):
            self._buffers.release(twin)


class SessionRun:
    """One POP3 session of a run: pipelined RETRs, overlapped uploads, DELEs."""

    def __init__(self, run: RunContext, mailbox: Session, first: bool) -> None:
        self._run = run
        self._mailbox = mailbox
        self._first = first
        self._options = run.options
        self._deadline = run.deadline
        self.outcome = SessionOutcome()
        self._started = time.monotonic()
        self._listed = 0
        buffers = Buffers()
        size = run.options.pipeline_window if mailbox.pipelining else 1
        self._window = CommandWindow(mailbox, size, run.options, buffers)
        self._custody = Custody(run, self._window, buffers)
        self._uploads = UploadStage(run, buffers, self._custody)

    def run(self) -> SessionOutcome:
        try:
            self._open()
            self._pump()
        except ConnectionLost as exc:
            logger.error(
                "connection lost; no deletion of this session counts", extra={"error": str(exc)}
            )
            if not self._custody.lost_on_a_message:
                self.outcome.stop = StopReason.CONNECTION_LOST
            # Else the message that broke the line was counted against it and
            # is not taken again this run: a new session goes on behind it.
            for unread in self._window.lose_line():
                self._run.ledger.give_back(unread)  # never read: a later session takes it
            self._settle()
        return self._finish()

    def _open(self) -> None:
        """List the mailbox and plan against the state; load the plan."""
        plan, self._listed = _list_and_plan(self._run, self._mailbox, self._first)
        self._window.load(plan.to_fetch, plan.retry_alone)
        self._custody.expect(plan.prove, plan.reappearing)
        if plan.prove_only:
            # Deletions proven first, in a short session of their own that
            # QUITs before new mail is taken.
            self.outcome.commit_and_continue = True

    # -- the loop -------------------------------------------------------------------

    def _pump(self) -> None:
        window, uploads = self._window, self._uploads
        while True:
            if self._deadline.cut_off():
                self._cut_off()
                return
            if window.fetching and self._deadline.seconds_left() <= 0:
                self._stop_fetching(StopReason.DEADLINE)
            self._harvest(block=False)
            window.send(self)
            if window.answers_due:
                if window.must_wait_before_reading(uploads.uploading):
                    self._harvest(block=True)
                    continue
                self._read_one()
            elif window.deletes_waiting:
                continue  # send() writes them on the next turn
            elif uploads.busy:
                self._harvest(block=True)
            elif uploads.pending:
                uploads.flush()
            else:
                return

    def _harvest(self, *, block: bool) -> None:
        self._uploads.harvest(block=block, line_idle=not self._window.answers_due)

    def _read_one(self) -> None:
        kind, message = self._window.next_answer()
        if kind == "DELE":
            sha256 = self._window.read_dele(message)
            if sha256 is not None:
                self.outcome.marked.append((message, sha256))
            return
        download = self._custody.receive(message)
        if download is not None:
            self._uploads.submit(download)

    # -- the gate (pipeline.Gate) -----------------------------------------------------

    def admit(self, message: ServerMessage) -> bool:
        stop = self._may_take(message)
        if stop is None:
            return True
        self._stop_fetching(stop)
        return False

    def took(self, message: ServerMessage) -> None:
        # Taken: later sessions of this run do not take it again.
        self._run.ledger.take(message)

    def _may_take(self, message: ServerMessage) -> StopReason | Literal["commit"] | None:
        opts, ledger, window = self._options, self._run.ledger, self._window
        if opts.max_messages and ledger.taken >= opts.max_messages:
            return StopReason.MESSAGE_CAP
        if ledger.queue_down:
            return StopReason.QUEUE_UNAVAILABLE
        retrs, retr_bytes = window.retrs_in_flight()
        uploads, upload_bytes = self._uploads.in_flight()
        in_flight = retr_bytes + upload_bytes + message.size
        if not self._deadline.allows(in_flight, retrs + uploads, opts.upload_workers):
            return StopReason.DEADLINE
        if (
            window.sent_retr
            and not self._mailbox.login_delay
            and (
                window.sent_retr >= opts.commit_every_messages
                or window.sent_bytes + message.size > opts.commit_every_bytes
                or time.monotonic() - self._started > opts.commit_every_seconds
            )
        ):
            return "commit"
        return None

    def _stop_fetching(self, reason: StopReason | Literal["commit"]) -> None:
        self._window.stop_fetching()
        if reason == "commit":
            self.outcome.commit_and_continue = True
        elif self.outcome.stop is None:
            self.outcome.stop = reason
            if reason is StopReason.DEADLINE:
                logger.warning("deadline near; taking no more messages")

    # -- the end ------------------------------------------------------------------------

    def _settle(self) -> None:
        """The line is gone: let what is stored be announced, until the cut-off.

        Announced messages are remembered with their digest, so the next
        session proves and deletes them without a second pointer.
        """
        uploads = self._uploads
        while uploads.pending and not self._deadline.cut_off():
            if uploads.busy:
                self._harvest(block=True)
            else:
                uploads.flush()
        if uploads.busy:
            self._cut_off()

    def _cut_off(self) -> None:
        """Out of time: drop the line, abandon uploads, wait for nothing."""
        logger.warning("run cut off at its deadline; unfinished work is left for the next run")
        if self.outcome.stop is None:
            self.outcome.stop = StopReason.DEADLINE
        self._custody.refuse_quit("cut off at the deadline")
        self._window.hang_up()
        self._uploads.abandon(self._deadline)

    def _finish(self) -> SessionOutcome:
        outcome = self.outcome
        reason = self._custody.quit_blocker()
        line_up = self._window.line_up
        if reason or not line_up:
            outcome.may_quit = False
            outcome.marked = []
            if line_up:
                logger.warning(
                    "session ends without QUIT, so nothing unconfirmed counts as retrieved",
                    extra={"reason": reason},
                )
            if outcome.stop is None:
                # The confirmed messages are proven and deleted in a new session.
                outcome.commit_and_continue = True
            return outcome
        if (
            outcome.stop is None
            and not outcome.commit_and_continue
            and self._listed >= self._options.capped_listing
            and outcome.marked
        ):
            # Some providers (Gmail: about 250) list only part of a big
            # mailbox per session; look again while there is time.
            outcome.look_for_more = True
        return outcome


def _list_and_plan(run: RunContext, mailbox: Session, first: bool) -> tuple[SessionPlan, int]:
    """The session's plan and the listing's length; the plan's edits applied to
    the state, the run's ledger and (first session) the summary."""
    listing = mailbox.list_messages()
    if first:
        # Listing entries that cannot be fetched safely stay on the server.
        look = first_look(listing, len(getattr(mailbox, "skipped", ())), run.options)
        run.summary.messages_on_server = look.messages_on_server
        run.summary.unlisted = look.unlisted
        run.state.forget_absent(set(look.present), time.time(), complete=look.complete)
    plan = plan_session(
        listing, run.state, run.options, run.ledger.so_far(), login_delay=mailbox.login_delay
    )
    for digest in plan.drop_seen:
        run.state.seen.pop(digest, None)  # a reused UIDL: the new message it is
    run.ledger.remember(handled=plan.handled, reproved=plan.reproved, retried=plan.retried)
    if first:
        run.summary.in_quarantine += len(plan.quarantined)
        run.summary.oversized += len(plan.oversized)
    for message in plan.oversized:
        logger.warning(
            "message larger than max_message_size left on server",
            extra={"size": message.size, "limit": run.options.max_message_size},
        )
    if plan.retry_alone:
        logger.warning(
            "every message of a capped listing is skipped; taking them anyway so the "
            "mail behind them is reached",
            extra={"listed": len(listing), "taken": len(plan.retry_alone)},
        )
    return plan, len(listing)
