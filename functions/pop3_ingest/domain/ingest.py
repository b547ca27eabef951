"""The core: drain one mailbox under the delete-after-store rule.

Per message: RETR, hash and store the exact bytes, announce a pointer, and
only then DELE; QUIT commits the deletions. To be bounded by the line rather
than by round trips, RETRs are pipelined (RFC 2449) in a bounded window,
uploads run on worker threads while the next message downloads, pointers go
out in SQS batches, and each DELE follows its confirmed message. The session
is committed (QUIT, reconnect) every so many messages, bytes or seconds.

Where each part lives:

- :mod:`.plan`: the listing weighed against the state (pure).
- :mod:`.pipeline`: the command window, answers read in order.
- :mod:`.uploads`: uploads and pointer batches, and giving them up at the cut-off.
- :mod:`.session`: one session, and whether it may QUIT.
- :mod:`.ledger`: what the sessions of a run share, and the failure policy.
- here: the run, session after session, and what a QUIT commits.

The run's own rules: a run that keeps ending sessions without QUIT stops
after ``ABANDONED_SESSIONS_LIMIT`` of them; a busy mailbox or a failed
reconnect after a commit ends the run (what was committed stays committed);
another login waits for the server's LOGIN-DELAY, i.e. for the next run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pop3_ingest.config import Start
from pop3_ingest.domain.deadline import Deadline
from pop3_ingest.domain.ledger import QuarantineHook, RunLedger
from pop3_ingest.domain.message import ServerMessage, uidl_digest
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.domain.plan import baseline
from pop3_ingest.domain.ports import Announcer, MessageStore, Session
from pop3_ingest.domain.session import RunContext, SessionOutcome, SessionRun
from pop3_ingest.domain.state import Deleted, MailboxState
from pop3_ingest.domain.summary import RunSummary, StopReason
from pop3_ingest.domain.uploads import ObjectWriter, UploadPools
from pop3_ingest.errors import MailboxBusy, Pop3Error

logger = logging.getLogger(__name__)

# After this many sessions in a row end without QUIT, the run stops.
ABANDONED_SESSIONS_LIMIT = 3


class MailboxIngest:
    """One run over one mailbox: session after session until done or stopped."""

    def __init__(
        self,
        mailbox_name: str,
        connect: Callable[[], Session],
        store: MessageStore,
        announcer: Announcer,
        deadline: Deadline,
        options: IngestOptions | None = None,
        state: MailboxState | None = None,
        on_quarantine: QuarantineHook | None = None,
    ) -> None:
        self.mailbox_name = mailbox_name
        self.state = state or MailboxState()
        self.options = options or IngestOptions()
        self.store = store
        self.announcer = announcer
        self.deadline = deadline
        self.login_delay = 0
        self.summary = RunSummary(mailbox=mailbox_name)
        self._connect = connect
        self._ledger = RunLedger(
            self.summary, self.state, self.options.poison_threshold, on_quarantine
        )

    def run(self) -> RunSummary:
        # Leaving the pools waits for nothing: past the cut-off running uploads
        # give up on their own, and their messages were not deleted.
        with UploadPools(self.options.upload_workers) as pools:
            writer = ObjectWriter(
                self.store,
                self.mailbox_name,
                self.options.key_prefix,
                self.deadline,
                pools.cancelled,
            )
            run = RunContext(
                options=self.options,
                state=self.state,
                summary=self.summary,
                deadline=self.deadline,
                ledger=self._ledger,
                pools=pools,
                writer=writer,
                announcer=self.announcer,
            )
            self._sessions(run)
        return self.summary

    def _sessions(self, run: RunContext) -> None:
        first = True
        abandoned_in_a_row = 0
        while True:
            outcome = self._one_session(run, first)
            if outcome is None:
                return  # busy on a reconnect; stopped says so
            first = False
            abandoned_in_a_row = 0 if outcome.may_quit else abandoned_in_a_row + 1
            if not self._another_session(outcome, abandoned_in_a_row):
                return
            if outcome.look_for_more:
                logger.info("large listing drained; reconnecting for more")

    def _another_session(self, outcome: SessionOutcome, abandoned_in_a_row: int) -> bool:
        """Whether the run logs in again; when not, ``summary.stopped`` says why."""
        summary = self.summary
        if outcome.stop is not None:
            summary.stopped = outcome.stop
            return False
        if abandoned_in_a_row >= ABANDONED_SESSIONS_LIMIT:
            logger.warning(
                "sessions keep ending without QUIT; the rest waits for the next run",
                extra={"sessions": abandoned_in_a_row},
            )
            summary.stopped = StopReason.REPEATED_FAILURES
            return False
        if not (outcome.commit_and_continue or outcome.look_for_more):
            return False
        if self.login_delay:
            # RFC 2449: every login honours the server's pause.
            logger.info(
                "more work needs another login; the server asks for a pause first",
                extra={"login_delay": self.login_delay},
            )
            summary.stopped = StopReason.LOGIN_DELAY
            return False
        if self.deadline.seconds_left() <= 0:
            summary.stopped = StopReason.DEADLINE
            return False
        return True

    def _one_session(self, run: RunContext, first: bool) -> SessionOutcome | None:
        try:
            session = self._connect()
            with session:
                self.summary.sessions += 1
                self.login_delay = session.login_delay
                try:
                    if first:
                        self._start(session)
                    outcome = SessionRun(run, session, first).run()
                except BaseException:
                    session.abandon()  # never QUIT on a path we did not plan for
                    raise
                if not outcome.may_quit:
                    self.summary.abandoned_sessions += 1
                    session.abandon()
        except MailboxBusy as exc:
            # Only login raises it. On a later session of this run (after a
            # commit) what was committed stays committed; the rest waits.
            if first:
                raise
            logger.warning("mailbox busy on reconnect", extra={"code": exc.code})
            self.summary.stopped = StopReason.BUSY
            return None
        except Pop3Error as exc:
            if first:
                raise
            # A reconnect that fails ends the run; nothing of it was deleted.
            logger.error("reconnect failed", extra={"error": str(exc)})
            self.summary.stopped = StopReason.CONNECTION_LOST
            return None
        if session.quit_ok:
            self._committed(outcome.marked)
        elif outcome.marked:
            logger.warning(
                "session not committed; its deletions are proven again next time",
                extra={"marked": len(outcome.marked)},
            )
        return outcome

    def _start(self, session: Session) -> None:
        """start "now": the mailbox's first listing is its baseline, left alone for good.

        Taken once, on the first run with start "now" (or the first after the
        state was lost); start "all" forgets it (domain/plan.py).
        """
        if self.options.start is not Start.NOW:
            self.state.forget_baseline()
        elif not self.state.baseline_at:
            entries = baseline(session.list_messages(), self.state)
            self.state.take_baseline(entries, time.time())
            logger.info(
                'start "now": the mail on the server is left alone; only later mail is taken',
                extra={"left_alone": len(entries)},
            )

    def _committed(self, marked: list[tuple[ServerMessage, str]]) -> None:
        """QUIT answered +OK: the marked messages are gone; remember their digests."""
        now = time.time()
        for message, sha256 in marked:
            if message.unique:
                digest = uidl_digest(message.uidl)
                self.state.seen.pop(digest, None)
                self.state.deleted[digest] = Deleted(at=now, size=message.size, sha256=sha256)
        self.summary.deleted += len(marked)
