"""A real Dovecot POP3 server for tests, in a throwaway directory on 127.0.0.1.

Each ``DovecotServer`` has its own config file, its own CA (plus a second,
unrelated "other" CA for untrusted-certificate tests), free high ports and
passwd-file users with Maildirs. It runs ``dovecot -F`` as a child process so
we always know which process to stop; ``stop()`` asks politely (SIGTERM to
the master, as ``doveadm stop`` does) and falls back to SIGKILL; ``close()``
kills the tree at once. Servers still running at interpreter exit are killed,
and the master dies with its parent (PR_SET_PDEATHSIG).

Works as root (mail owned by an unprivileged uid, Dovecot refuses uid 0 for
mail) and rootless (everything runs as the current user, no chroot).
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, cast

from tests.support.background import HOST, BackgroundService, clean_up_at_exit, cleaned_up

# uid/gid that owns the mail when the tests run as root. Any unprivileged
# number works (it needs no passwd entry); it must be >= first_valid_uid.
ROOT_MODE_MAIL_UID = 10000
ROOT_MODE_MAIL_GID = 10000

# The user the `dovecot` fixture creates. The password has spaces on purpose:
# RFC 1939 PASS takes the rest of the line.
DEFAULT_USER = "alice"
DEFAULT_PASSWORD = "correct horse battery staple"

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0

TlsMode = Literal["implicit", "starttls", "none"]


def dovecot_binary() -> str | None:
    """Path of the ``dovecot`` binary, or None. It lives in /usr/sbin, often not on PATH."""
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")


def doveadm_binary() -> str | None:
    return shutil.which("doveadm") or shutil.which("doveadm", path="/usr/bin:/usr/local/bin")


class DovecotError(RuntimeError):
    """Dovecot did not start or stop as expected (message carries the log tail)."""


@dataclass(frozen=True)
class ServerCertificates:
    """PEM material of one server instance."""

    ca_pem: str  # the CA that signed the served certificate (unless untrusted_cert)
    other_ca_pem: str  # an unrelated CA: passing it as ca_cert must fail verification
    cert_path: Path
    key_path: Path


def _free_port() -> int:
    # Bind-and-release: a tiny race with other processes, acceptable on loopback;
    # start() retries with new ports if Dovecot reports the address in use.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise DovecotError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def _make_ca(directory: Path, name: str, common_name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    ext = directory / f"{name}.ext"
    # Extensions chosen to satisfy VERIFY_X509_STRICT (default since Python 3.13).
    ext.write_text(
        "[v3_ca]\n"
        "basicConstraints = critical, CA:TRUE\n"
        "keyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
    )
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "3",
        "-subj", f"/CN={common_name}", "-config", str(ext), "-extensions", "v3_ca",
        cwd=directory,
    )  # fmt: skip
    return key, cert


def _make_server_cert(
    directory: Path, ca_key: Path, ca_cert: Path, sans: Sequence[str]
) -> tuple[Path, Path]:
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n"
        f"subjectAltName = {', '.join(sans)}\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
        cwd=directory,
    )  # fmt: skip
    return key, cert


def _load_prctl() -> Callable[..., int] | None:
    try:
        return cast(Callable[..., int], ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):  # not Linux/glibc: no parent-death signal
        return None


# Looked up here, not in the child: after fork() only async-signal-safe work is
# safe (the moto server thread may hold locks), and a prepared ctypes call is.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:
    """In the child: die with the parent, so a killed test run leaves no Dovecot behind.

    Linux ties this to the forking *thread*; fixtures run in the main thread.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def descendant_pids(pid: int) -> list[int]:
    """All descendant pids of ``pid`` (Linux /proc walk)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the ppid; the command name in field 2 may contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _kill_and_wait(pids: list[int]) -> None:
    """SIGKILL and wait until they are really gone (a killed process is not dead yet)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pids, timeout=STOP_TIMEOUT_S):
        raise DovecotError(f"dovecot processes survived SIGKILL: {pids}")


class DovecotServer(BackgroundService):
    """A private Dovecot instance serving POP3 on 127.0.0.1.

    Ports: ``pop3_port`` (plain, offers STLS unless ``offer_starttls=False``) and
    ``pop3s_port`` (implicit TLS; absent when ``offer_starttls=False``).
    """

    def __init__(
        self,
        *,
        offer_starttls: bool = True,
        lock_session: bool = False,
        untrusted_cert: bool = False,
        cert_sans: Sequence[str] = ("DNS:localhost", "IP:127.0.0.1"),
        auth_failure_delay_s: int = 0,
        extra_config: str = "",
        base_dir: Path | None = None,
    ) -> None:
        """
        offer_starttls: False sets ``ssl = no``: no STLS in CAPA and no pop3s listener.
        lock_session: ``pop3_lock_session = yes`` (a second session gets ``[IN-USE]``).
        untrusted_cert: serve a certificate signed by ``other_ca_pem`` instead of ``ca_pem``.
        cert_sans: subjectAltName entries of the served certificate (hostname-mismatch tests).
        auth_failure_delay_s: Dovecot's default is 2 s; 0 keeps bad-password tests fast.
        extra_config: appended verbatim to the generated dovecot.conf.
        """
        binary = dovecot_binary()
        if binary is None:
            raise DovecotError(
                "dovecot binary not found (apt-get install dovecot-core dovecot-pop3d)"
            )
        self._dovecot = binary
        self._doveadm = doveadm_binary() or "doveadm"
        self.offer_starttls = offer_starttls
        self.lock_session = lock_session
        self.untrusted_cert = untrusted_cert
        self.cert_sans = tuple(cert_sans)
        self.auth_failure_delay_s = auth_failure_delay_s
        self.extra_config = extra_config
        self.host = HOST

        self._owns_dir = base_dir is None
        self.dir = Path(base_dir or tempfile.mkdtemp(prefix="pop3-ingest-dovecot-"))
        # Dovecot's own users (dovecot, dovenull) must traverse and read it.
        self.dir.chmod(0o755)
        self.config_path = self.dir / "dovecot.conf"
        self.passwd_path = self.dir / "passwd"
        self.log_path = self.dir / "dovecot.log"
        self._stderr_path = self.dir / "master.stderr"
        self.home_root = self.dir / "home"
        self.home_root.mkdir(exist_ok=True)
        self.home_root.chmod(0o755)

        self.rootless = os.geteuid() != 0
        if self.rootless:
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()
        else:
            self.mail_uid, self.mail_gid = ROOT_MODE_MAIL_UID, ROOT_MODE_MAIL_GID

        self.users: dict[str, str] = {}
        self._deliveries = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._pop3_port = 0
        self._pop3s_port = 0
        self.certs = self._make_certs()
        self.passwd_path.write_text("")
        self.passwd_path.chmod(0o644)

    # -- certificates --------------------------------------------------------

    def _make_certs(self) -> ServerCertificates:
        tls_dir = self.dir / "tls"
        tls_dir.mkdir(exist_ok=True)
        ca_key, ca_cert = _make_ca(tls_dir, "ca", "pop3-ingest test CA")
        other_key, other_cert = _make_ca(tls_dir, "other-ca", "pop3-ingest untrusted CA")
        signer_key, signer_cert = (
            (other_key, other_cert) if self.untrusted_cert else (ca_key, ca_cert)
        )
        key, cert = _make_server_cert(tls_dir, signer_key, signer_cert, self.cert_sans)
        for path in tls_dir.iterdir():
            path.chmod(0o644)  # login processes read the key as non-root
        return ServerCertificates(
            ca_pem=ca_cert.read_text(),
            other_ca_pem=other_cert.read_text(),
            cert_path=cert,
            key_path=key,
        )

    @property
    def ca_pem(self) -> str:
        """PEM of the CA that signed the served certificate (the secret's ``ca_cert``)."""
        return self.certs.ca_pem

    @property
    def other_ca_pem(self) -> str:
        """PEM of an unrelated CA: trusting only this must fail verification."""
        return self.certs.other_ca_pem

    # -- ports ---------------------------------------------------------------

    @property
    def pop3_port(self) -> int:
        if not self._pop3_port:
            raise DovecotError("server not started")
        return self._pop3_port

    @property
    def pop3s_port(self) -> int:
        if not self.offer_starttls:
            raise DovecotError("offer_starttls=False runs with ssl = no: there is no pop3s port")
        if not self._pop3s_port:
            raise DovecotError("server not started")
        return self._pop3s_port

    def port_for(self, tls: TlsMode) -> int:
        return self.pop3s_port if tls == "implicit" else self.pop3_port

    # -- config --------------------------------------------------------------

    def _render_config(self) -> str:
        d = self.dir
        ssl = "yes" if self.offer_starttls else "no"
        pop3s_port = self._pop3s_port if self.offer_starttls else 0
        lines = [
            "# Generated by tests/support/dovecot.py",
            f"base_dir = {d}/run",
            f"state_dir = {d}/state",
            f"log_path = {self.log_path}",
            f"info_log_path = {self.log_path}",
            f"debug_log_path = {self.log_path}",
            "protocols = pop3",
            "listen = 127.0.0.1",
            f"ssl = {ssl}",
            f"ssl_cert = <{self.certs.cert_path}",
            f"ssl_key = <{self.certs.key_path}",
            "ssl_min_protocol = TLSv1.2",
            # Lets the plain listener (and tls "none") log in without STLS.
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain login",
            f"auth_failure_delay = {self.auth_failure_delay_s} secs",
            "auth_verbose = yes",
            "mail_location = maildir:~/Maildir",
            "pop3_uidl_format = %08Xu%08Xv",
            f"pop3_lock_session = {'yes' if self.lock_session else 'no'}",
            f"first_valid_uid = {min(self.mail_uid, 500)}",
            "first_valid_gid = 1" if self.mail_gid else "first_valid_gid = 0",
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {self.passwd_path}",
            "}",
            "userdb {",
            "  driver = passwd-file",
            f"  args = username_format=%u {self.passwd_path}",
            "}",
            "service pop3-login {",
            "  inet_listener pop3 {",
            f"    port = {self._pop3_port}",
            "  }",
            "  inet_listener pop3s {",
            f"    port = {pop3s_port}",
            "    ssl = yes",
            "  }",
            "}",
        ]
        if self.rootless:
            # Rootless Dovecot: no privilege drop and no chroot is possible.
            user = pwd.getpwuid(os.getuid()).pw_name
            group = grp.getgrgid(os.getgid()).gr_name
            lines += [
                f"default_login_user = {user}",
                f"default_internal_user = {user}",
                f"default_internal_group = {group}",
                "service anvil {",
                "  chroot =",
                "}",
                "service pop3-login {",
                "  chroot =",
                "}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    # -- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def pids(self) -> list[int]:
        """The master and all its descendants (empty when stopped)."""
        if self._proc is None or self._proc.poll() is not None:
            return []
        return [self._proc.pid, *descendant_pids(self._proc.pid)]

    def start(self) -> Self:
        if self.running:
            return self
        keep_ports = bool(self._pop3_port)  # restart() keeps the ports tests already know
        for attempt in range(3):
            if not keep_ports:
                self._pop3_port = _free_port()
                self._pop3s_port = _free_port() if self.offer_starttls else 0
            try:
                self._start_once()
            except DovecotError:
                self._terminate()
                in_use = "Address already in use" in self.log_text(tail=20) + self._stderr_text()
                if in_use and attempt < 2 and not keep_ports:
                    continue
                raise
            return self
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        for sub in ("run", "state"):
            (self.dir / sub).mkdir(exist_ok=True)
        self.config_path.write_text(self._render_config())
        with self._stderr_path.open("wb") as stderr:
            # -F keeps the master in the foreground as *our* child: no pid-file hunting.
            self._proc = subprocess.Popen(
                [self._dovecot, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                preexec_fn=_set_pdeathsig,
            )
        clean_up_at_exit(self, self.close)
        ports = [self._pop3_port] + ([self._pop3s_port] if self.offer_starttls else [])
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = list(ports)
        while pending:
            if self._proc.poll() is not None:
                raise DovecotError(
                    f"dovecot exited with {self._proc.returncode} during start-up\n"
                    + self._diagnostics()
                )
            if time.monotonic() > deadline:
                raise DovecotError(
                    f"dovecot did not accept connections on {pending} within "
                    f"{START_TIMEOUT_S:.0f}s\n" + self._diagnostics()
                )
            try:
                # A greeting proves the login process is up, not just the socket.
                with socket.create_connection((self.host, pending[0]), timeout=1) as sock:
                    if pending[0] == self._pop3s_port:
                        pending.pop(0)  # TLS listener: accepting is enough
                        continue
                    if sock.recv(512).startswith(b"+OK"):
                        pending.pop(0)
                        continue
            except OSError:
                pass
            time.sleep(0.02)

    def stop(self, *, graceful: bool = True) -> None:
        """Stop Dovecot and make sure none of its processes survive.

        graceful=True does what ``doveadm stop`` does (SIGTERM to the master),
        without doveadm's extra ~2 s of polling; the master still sleeps 1 s for
        its log process. graceful=False kills the whole process tree at once.
        Either way POP3 clients are cut off without reaching UPDATE.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None and graceful:
            family = descendant_pids(proc.pid)
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT_S)
            self._reap(family)
        if proc.poll() is None:
            self._kill_tree(proc)
        self._proc = None
        cleaned_up(self)

    @staticmethod
    def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
        # Freeze the master first so it cannot fork replacements while we kill.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGSTOP)
        family = descendant_pids(proc.pid)
        _kill_and_wait(family)
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)

    def _terminate(self) -> None:
        """Hard stop, used on a failed start."""
        if self._proc is not None and self._proc.poll() is None:
            self._kill_tree(self._proc)
        self._proc = None
        cleaned_up(self)

    @staticmethod
    def _reap(pids: list[int]) -> None:
        # Children normally exit with the master (shutdown_clients = yes), but a
        # pop3 process with a connected client can linger: SIGKILL stragglers.
        _wait_gone(pids, timeout=0.5)
        _kill_and_wait([pid for pid in pids if pid_alive(pid)])

    def restart(self, *, graceful: bool = False) -> None:
        """Stop and start again on the same ports (mail and users are kept)."""
        self.stop(graceful=graceful)
        self.start()

    def close(self) -> None:
        """Stop (fast: the instance is being thrown away) and delete the temp directory."""
        self.stop(graceful=False)
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- admin ---------------------------------------------------------------

    def doveadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self._doveadm, "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def kill_connections(self, user: str = "*") -> None:
        """Disconnect the user's (default: everyone's) logged-in sessions (doveadm kick).

        Sessions still in the login phase are not affected. Kicked sessions end
        without reaching UPDATE, so nothing marked with DELE is deleted.
        """
        self.doveadm("kick", user, check=False)

    # -- users and mail ------------------------------------------------------

    def add_user(self, name: str, password: str) -> Path:
        """Create a passwd-file user with an empty Maildir; returns the Maildir path.

        Dovecot looks at the passwd-file at most once a second: a user added in
        the same second as an earlier login may stay unknown until the next
        second. Add every user a test needs before its first run.
        """
        if not name or any(c in name for c in ":\n/") or any(c in password for c in ":\n"):
            raise ValueError("passwd-file cannot hold ':', newline (or '/' in names)")
        home = self.home_root / name
        maildir = home / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        for path in (home, maildir, *(maildir / s for s in ("cur", "new", "tmp"))):
            path.chmod(0o700)
            os.chown(path, self.mail_uid, self.mail_gid)
        with self.passwd_path.open("a") as fh:
            # passwd-file is re-read on change, so users can be added while running.
            fh.write(f"{name}:{{PLAIN}}{password}:{self.mail_uid}:{self.mail_gid}::{home}\n")
        self.users[name] = password
        return maildir

    def maildir(self, user: str) -> Path:
        return self.home_root / user / "Maildir"

    def deliver(self, user: str, raw: bytes, *, crlf_to_lf: bool = True) -> Path:
        """Drop one message into ``Maildir/new`` the way an MDA would.

        CRLF is turned into LF by default (Maildir stores LF; Dovecot serves
        CRLF). Messages get UIDs in delivery order. Returns the file path.
        """
        if user not in self.users:
            raise KeyError(f"unknown user {user!r}; add_user() first")
        if crlf_to_lf:
            raw = raw.replace(b"\r\n", b"\n")
        n = next(self._deliveries)
        # Dovecot orders new mail by the "<secs>.M<usecs>" prefix, so encode the
        # delivery counter there to keep UIDs (and message numbers) in delivery order.
        name = f"{int(time.time())}.M{n:06d}P{os.getpid()}Q{n}.pop3-ingest-test"
        maildir = self.maildir(user)
        tmp_path, new_path = maildir / "tmp" / name, maildir / "new" / name
        tmp_path.write_bytes(raw)
        tmp_path.chmod(0o600)
        os.chown(tmp_path, self.mail_uid, self.mail_gid)
        tmp_path.rename(new_path)
        return new_path

    def message_files(self, user: str) -> list[Path]:
        maildir = self.maildir(user)
        return sorted(p for sub in ("new", "cur") for p in (maildir / sub).iterdir())

    def message_count(self, user: str) -> int:
        """Messages still on the server (files in new/ and cur/)."""
        return len(self.message_files(user))

    def secret(self, user: str, *, tls: TlsMode = "implicit", **overrides: Any) -> dict[str, Any]:
        """A mailbox secret (docs/configuration.md) pointing at this server."""
        data: dict[str, Any] = {
            "host": self.host,
            "port": self.port_for(tls),
            "tls": tls,
            "username": user,
            "password": self.users[user],
        }
        if tls != "none":
            data["ca_cert"] = self.ca_pem
        data.update(overrides)
        return data

    # -- diagnostics ---------------------------------------------------------

    def log_text(self, tail: int | None = None) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-tail:]) if tail else text

    def _stderr_text(self) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _diagnostics(self) -> str:
        return (
            f"--- stderr ---\n{self._stderr_text()}\n"
            f"--- log tail ({self.log_path}) ---\n{self.log_text(tail=30)}"
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<DovecotServer {state} pop3={self._pop3_port} pop3s={self._pop3s_port} {self.dir}>"
