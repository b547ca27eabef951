"""popa3d, a second real POP3 server for tests, reachable only on 127.0.0.1.

popa3d is what many small mail hosts run: plain RFC 1939, no CAPA (it answers
``-ERR``), no PIPELINING, STLS or RESP-CODES, system users authenticated
through PAM, and mail in ``/var/mail/<user>`` (mbox).
Its UIDL is an MD5 of the Date, Message-ID and Received headers (checked here:
From, To, Subject, the body and the envelope line do not count), so duplicate
deliveries and look-alike messages without those headers share one UIDL.

``popa3d -D`` would listen on port 110 on every address. Without ``-D`` it is
inetd-style: it speaks POP3 on stdin/stdout and serves one session. So
``Popa3dServer`` is the inetd: it listens on 127.0.0.1 port 0 and hands each
accepted socket to a fresh ``popa3d`` as its stdin and stdout.

Its Debian package conflicts with dovecot-pop3d (both provide pop3-server), so
``scripts/install_popa3d.sh`` (run by ``make deps-system``) unpacks it instead:
the binary in /usr/local/sbin, its PAM service, the ``popa3d`` user and
/var/lib/popa3d.

``Popa3dMailbox`` is one throwaway system user (random name and password,
``useradd`` + ``chpasswd``) with its mbox, removed again by ``remove()``.
Both need root: useradd, and popa3d's own privilege switches (it drops to the
``popa3d`` user for the login dialogue and to the mail user afterwards).

mbox as popa3d reads it (checked against the binary):
- a message starts at a ``From `` line at the top of the file or after an
  empty line; a ``From `` line anywhere else is body text;
- the empty line before the next ``From `` line (or at the end of the file)
  is the separator, not message text, unless the header never ended;
- ``>From `` lines are served as they are: popa3d does not unquote.
So delivery quotes every ``From `` line at a line start (``>From ``, as exim's
appendfile and procmail do), and what RETR serves is the LF-normalised message
with those quotes, in CRLF, ending with CRLF (``served_form``).
"""

from __future__ import annotations

import contextlib
import grp
import os
import poplib
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.background import ThreadedTcpServer, clean_up_at_exit, cleaned_up

MAIL_SPOOL = Path("/var/mail")
# Debian's popa3d binary and the shadow tools live in sbin, often not on PATH.
_SBIN_PATH = "/usr/sbin:/usr/local/sbin:/sbin"
# The envelope line of every delivered message (asctime format, as MTAs write it).
DEFAULT_ENVELOPE_SENDER = "MAILER-DAEMON"
DEFAULT_ENVELOPE_DATE = "Wed May  1 08:00:00 2024"

SESSION_TIMEOUT_S = 15.0  # waiting for popa3d sessions to end
CLIENT_TIMEOUT_S = 10.0  # plain poplib clients of the helpers
_TOOL_ATTEMPTS = 5  # useradd/userdel fail while another process holds /etc/passwd's lock

_FROM_LINE = re.compile(rb"^From ", re.MULTILINE)


class Popa3dError(RuntimeError):
    """popa3d or the system user around it could not be set up or torn down."""


def popa3d_binary() -> str | None:
    """Path of the ``popa3d`` binary, or None."""
    return shutil.which("popa3d") or shutil.which("popa3d", path=_SBIN_PATH)


def missing_requirements() -> str | None:
    """Why popa3d tests cannot run here, or None when they can."""
    if popa3d_binary() is None:
        return "popa3d is not installed (`make deps-system` runs scripts/install_popa3d.sh)"
    if os.geteuid() != 0:
        return "the popa3d tests need root (useradd, and popa3d's own privilege switches)"
    for tool in ("useradd", "userdel", "chpasswd"):
        if _tool(tool) is None:
            return f"{tool} is missing (Debian package passwd)"
    try:
        pwd.getpwnam("popa3d")  # the user it drops to for the login dialogue
    except KeyError:
        return "the popa3d system user is missing (scripts/install_popa3d.sh creates it)"
    return None


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=_SBIN_PATH)


def _run_tool(name: str, *args: str, stdin: str | None = None) -> None:
    """Run a shadow tool, retrying while another process holds the passwd lock.

    Its output is never echoed: chpasswd's stdin carries a password.
    """
    binary = _tool(name)
    if binary is None:
        raise Popa3dError(f"{name} not found")
    for attempt in range(_TOOL_ATTEMPTS):
        proc = subprocess.run(
            [binary, *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
        if proc.returncode == 0:
            return
        if attempt + 1 < _TOOL_ATTEMPTS and "lock" in proc.stderr.lower():
            time.sleep(0.2 * (attempt + 1))
            continue
        # The user name is in args; the password only ever goes through stdin.
        raise Popa3dError(f"{name} {' '.join(args)} exited with {proc.returncode}")


# -- mbox ------------------------------------------------------------------------


def _normalised(raw: bytes) -> bytes:
    """LF line endings, ending with a line break, ``From `` lines quoted."""
    if not raw:
        raise ValueError("an empty message cannot be delivered")
    lf = raw.replace(b"\r\n", b"\n")
    if not lf.endswith(b"\n"):
        lf += b"\n"
    if b"\n\n" not in lf:
        # popa3d would take the separator line as the end of the header and serve it.
        raise ValueError("the message needs an empty line after its header")
    return _FROM_LINE.sub(b">From ", lf)


def served_form(raw: bytes) -> bytes:
    """The bytes popa3d's RETR yields (after dot-unstuffing) for a delivered ``raw``."""
    return _normalised(raw).replace(b"\n", b"\r\n")


def mbox_entry(
    raw: bytes,
    *,
    sender: str = DEFAULT_ENVELOPE_SENDER,
    date: str = DEFAULT_ENVELOPE_DATE,
) -> bytes:
    """``raw`` (CRLF or LF) as one mbox entry: envelope line, quoted text, separator."""
    return f"From {sender} {date}\n".encode("ascii") + _normalised(raw) + b"\n"


def split_mbox(data: bytes) -> list[bytes]:
    """The messages of an mbox as popa3d delimits them (LF, quotes kept, no envelope)."""
    messages: list[bytes] = []
    current: list[bytes] | None = None
    previous_empty = True
    for line in data.splitlines(keepends=True):
        if previous_empty and line.startswith(b"From "):
            if current is not None:
                messages.append(_without_separator(current))
            current = []
        elif current is not None:
            current.append(line)
        previous_empty = line in (b"\n", b"\r\n")
    if current is not None:
        messages.append(_without_separator(current))
    return messages


def _without_separator(lines: list[bytes]) -> bytes:
    if lines and lines[-1] == b"\n":
        lines = lines[:-1]
    return b"".join(lines)


# -- the server ----------------------------------------------------------------


class Popa3dServer(ThreadedTcpServer):
    """An inetd of one service: each connection to ``port`` gets its own ``popa3d``."""

    thread_name = "popa3d-inetd"

    def __init__(self) -> None:
        super().__init__()
        binary = popa3d_binary()
        if binary is None:
            raise Popa3dError("popa3d binary not found (scripts/install_popa3d.sh)")
        self._binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="pop3-ingest-popa3d-"))
        self.stderr_path = self.dir / "popa3d.stderr"
        self._sessions: list[subprocess.Popen[bytes]] = []

    def accepted(self, conn: socket.socket, index: int) -> None:
        with conn, self.stderr_path.open("ab") as stderr:
            try:
                # Its own session (process group), so close() can kill the
                # session together with the children popa3d forks.
                proc = subprocess.Popen(
                    [self._binary],
                    stdin=conn.fileno(),
                    stdout=conn.fileno(),
                    stderr=stderr,
                    start_new_session=True,
                    env={"PATH": f"/usr/bin:/bin:{_SBIN_PATH}"},
                )
            except OSError as exc:
                stderr.write(f"spawning popa3d failed: {exc}\n".encode())
                return
        with self.lock:
            self._sessions.append(proc)

    def wait_idle(self, timeout: float = SESSION_TIMEOUT_S) -> None:
        """Wait until every session has ended (and so finished rewriting the mbox)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            sessions = list(self._sessions)
        for proc in sessions:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise Popa3dError(
                    f"popa3d session {proc.pid} still running after {timeout:.0f}s"
                ) from None
        with self.lock:
            self._sessions = [p for p in self._sessions if p.poll() is None]

    def close(self) -> None:
        """Stop listening and kill the sessions still running (with their children)."""
        super().close()
        with self.lock:
            sessions, self._sessions = self._sessions, []
        for proc in sessions:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=SESSION_TIMEOUT_S)
        shutil.rmtree(self.dir, ignore_errors=True)

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        state = "stopped" if self.stopping.is_set() else f"port={self._port or '-'}"
        return f"<Popa3dServer {state} connections={self.connections}>"


# -- one mailbox -------------------------------------------------------------------


@dataclass(frozen=True)
class ServedMessage:
    number: int
    uidl: str
    data: bytes  # as RETR yields it: CRLF, dot-unstuffing undone, final CRLF


@dataclass
class Popa3dMailbox:
    """A throwaway system user whose ``/var/mail`` mbox ``server`` serves."""

    server: Popa3dServer
    user: str
    password: str = field(repr=False)
    removed: bool = False

    @classmethod
    def create(cls, server: Popa3dServer) -> Popa3dMailbox:
        # Lower-case letters first, as useradd's default NAME_REGEX wants.
        user = f"p3t{secrets.token_hex(5)}"
        # No ':' (chpasswd's separator) and no spaces; popa3d refuses empty ones.
        password = secrets.token_urlsafe(18)
        _run_tool(
            "useradd",
            "--no-create-home", "--home-dir", "/nonexistent",
            "--shell", "/usr/sbin/nologin", "--no-user-group",
            "--comment", "pop3-ingest test mailbox",
            user,
        )  # fmt: skip
        mailbox = cls(server=server, user=user, password=password)
        # After the servers: userdel refuses a user whose session is still running.
        clean_up_at_exit(mailbox, mailbox.remove, order=1)
        try:
            MAIL_SPOOL.mkdir(mode=0o2775, exist_ok=True)  # base-files makes it; slim images may not
            _run_tool("chpasswd", stdin=f"{user}:{password}\n")
            mailbox._write(b"", append=False)
        except BaseException:
            mailbox.remove()
            raise
        return mailbox

    @property
    def path(self) -> Path:
        return MAIL_SPOOL / self.user

    def _write(self, data: bytes, *, append: bool) -> None:
        # popa3d refuses a mailbox that its user does not own; the mode is the
        # one MTAs create (0600, group mail where that group exists).
        entry = pwd.getpwnam(self.user)
        try:
            gid = grp.getgrnam("mail").gr_gid
        except KeyError:
            gid = entry.pw_gid
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        fd = os.open(self.path, flags | os.O_NOFOLLOW, 0o600)
        try:
            os.fchown(fd, entry.pw_uid, gid)
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def deliver(self, raw: bytes, **envelope: str) -> None:
        """Append one message, as an MTA would (``envelope``: see ``mbox_entry``)."""
        self.deliver_all([raw], **envelope)

    def deliver_all(self, messages: list[bytes], **envelope: str) -> None:
        # popa3d aborts a session whose mbox changed other than by new mail
        # arriving, and no session should see half an append: wait for quiet.
        self.server.wait_idle()
        self._write(b"".join(mbox_entry(raw, **envelope) for raw in messages), append=True)

    def remaining(self) -> list[bytes]:
        """What the mbox still holds, message by message (LF, quoted, no envelope)."""
        self.server.wait_idle()
        return split_mbox(self.path.read_bytes())

    def message_count(self) -> int:
        return len(self.remaining())

    def secret(self, **overrides: Any) -> dict[str, Any]:
        """A mailbox secret (docs/configuration.md) for this user; popa3d has no TLS."""
        return {
            "host": self.server.host,
            "port": self.server.port,
            "tls": "none",
            "username": self.user,
            "password": self.password,
            **overrides,
        }

    @contextlib.contextmanager
    def client(self) -> Iterator[poplib.POP3]:
        """A plain poplib session, logged in; QUIT at the end (commits any DELE)."""
        client = poplib.POP3(self.server.host, self.server.port, timeout=CLIENT_TIMEOUT_S)
        try:
            client.user(self.user)
            client.pass_(self.password)
            yield client
            client.quit()
        finally:
            client.close()

    def served(self) -> list[ServedMessage]:
        """Every message as a plain poplib RETR yields it; nothing deleted.

        poplib refuses lines over 2048 bytes: keep such messages out of
        mailboxes read this way.
        """
        with self.client() as client:
            uidls = dict(line.decode("ascii").split() for line in client.uidl()[1])
            served = []
            for number in sorted(int(n) for n in uidls):
                lines = client.retr(number)[1]
                data = b"".join(line + b"\r\n" for line in lines)
                served.append(ServedMessage(number, uidls[str(number)], data))
        return served

    def remove(self) -> None:
        """Delete the user and its mbox (after its sessions have ended)."""
        if self.removed:
            return
        self.removed = True
        with contextlib.suppress(Popa3dError):
            self.server.wait_idle()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(KeyError):
            pwd.getpwnam(self.user)
            _run_tool("userdel", self.user)
        cleaned_up(self)


@contextlib.contextmanager
def popa3d_mailbox() -> Iterator[Popa3dMailbox]:
    """``with popa3d_mailbox() as mailbox: ...``: a server and one user, both torn down."""
    with Popa3dServer() as server:
        mailbox = Popa3dMailbox.create(server)
        try:
            yield mailbox
        finally:
            server.close()  # first: userdel refuses a user with running processes
            mailbox.remove()
