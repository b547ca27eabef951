"""A deterministic benchmark corpus, written straight into a Dovecot Maildir.

Messages are realistic enough for a POP3 server and the peers' parsers:
RFC 5322 headers, then either a text/plain body (lines of prose, at most 76
characters) or a multipart/mixed body with a short text part and a base64
attachment. Everything comes from ``random.Random(seed)``: the same arguments
give the same bytes on every machine.

Generation is fast (the 100 MB message takes well under a second): bodies are
sliced from a prose pool built once and from ``randbytes`` + base64. The corpus
is built once into a template directory (LF line endings, as an MDA writes
Maildir) and *delivered* by copying those files into ``Maildir/new`` before
each contender, named the way Dovecot's own LDA names them, with ``S=`` (file
size) and ``W=`` (CRLF size) so LIST does not have to read every message.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

KB = 1000
MB = 1000 * 1000

_WORDS = tuple(
    " ".join(
        [
            "the mailbox server message ticket customer invoice please attached reply thanks",
            "regards order delivery account support request update meeting schedule report",
            "question answer urgent follow up kindly confirm payment received shipment status",
            "contract review draft final version monday tuesday friday week month quarter",
            "and or but with from for into about after before under over between a an of to in",
        ]
    ).split(" ")
)
_BASE_DATE = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
_BOUNDARY = "==bench-boundary-{i:06d}=="


@dataclass(frozen=True)
class Spec:
    """``count`` messages of about ``size`` bytes each (± ``jitter`` as a fraction)."""

    count: int
    size: int
    jitter: float = 0.25


@dataclass(frozen=True)
class CorpusFile:
    path: Path  # the template file (LF line endings)
    size: int  # bytes on disk (LF)
    wire_size: int  # bytes as POP3 serves them and S3 stores them (CRLF)


@dataclass(frozen=True)
class Corpus:
    files: tuple[CorpusFile, ...]

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def wire_bytes(self) -> int:
        return sum(f.wire_size for f in self.files)

    @property
    def wire_sizes(self) -> list[int]:
        return [f.wire_size for f in self.files]


def _prose_pool(rng: random.Random, size: int = 512 * KB) -> bytes:
    """Lines of 50-76 characters of word salad, LF-terminated, about ``size`` bytes."""
    lines: list[str] = []
    total = 0
    while total < size:
        line: list[str] = []
        width = rng.randint(50, 76)
        length = 0
        while length < width:
            word = rng.choice(_WORDS)
            line.append(word)
            length += len(word) + 1
        text = " ".join(line)[:76]
        if text.startswith("."):
            text = text[1:]
        lines.append(text)
        total += len(text) + 1
    return ("\n".join(lines) + "\n").encode("ascii")


def _prose(rng: random.Random, pool: bytes, size: int) -> bytes:
    """At least ``size`` bytes of whole lines from ``pool``, from random line starts."""
    out = bytearray()
    while len(out) < size:
        start = pool.rfind(b"\n", 0, rng.randrange(len(pool))) + 1  # start of that line
        # The pool ends with LF, so a line end is always found.
        end = pool.find(b"\n", min(start + size - len(out), len(pool) - 1))
        out += pool[start : end + 1]
    return bytes(out)


def _headers(i: int, subject: str, content_type: str) -> bytes:
    lines = [
        f"Return-Path: <sender{i % 97}@example.org>",
        f"Received: from mx{i % 7}.example.org (mx{i % 7}.example.org [192.0.2.{i % 250 + 1}])",
        f"\tby pop.example.test with ESMTPS id bench{i:08d}; "
        f"{format_datetime(_BASE_DATE + timedelta(minutes=i))}",
        f"From: Sender {i % 97} <sender{i % 97}@example.org>",
        "To: Support <support@example.test>",
        f"Subject: {subject}",
        f"Date: {format_datetime(_BASE_DATE + timedelta(minutes=i))}",
        f"Message-ID: <bench-{i:08d}@example.org>",
        "MIME-Version: 1.0",
        f"Content-Type: {content_type}",
    ]
    return ("\n".join(lines) + "\n\n").encode("ascii")


def make_message(i: int, size: int, rng: random.Random, pool: bytes) -> bytes:
    """One message of about ``size`` bytes (LF endings): text for small, base64 for large.

    Messages up to 64 KB alternate text/plain and multipart with a base64
    attachment; larger ones are always attachments (as big mail is).
    """
    if size <= 64 * KB and i % 2 == 0:
        head = _headers(i, f"Ticket {i}: question about order {i * 7919 % 100000}", "text/plain")
        return head + _prose(rng, pool, size - len(head))
    boundary = _BOUNDARY.format(i=i)
    head = _headers(i, f"Ticket {i}: document attached", f'multipart/mixed; boundary="{boundary}"')
    text = _prose(rng, pool, min(2 * KB, size // 8))
    part_head = (
        f"This is a multi-part message in MIME format.\n--{boundary}\n"
        "Content-Type: text/plain; charset=us-ascii\n\n"
    ).encode() + text
    attach_head = (
        f'--{boundary}\nContent-Type: application/pdf; name="document-{i}.pdf"\n'
        f'Content-Disposition: attachment; filename="document-{i}.pdf"\n'
        "Content-Transfer-Encoding: base64\n\n"
    ).encode()
    tail = f"--{boundary}--\n".encode()
    encoded_room = max(size - len(head) - len(part_head) - len(attach_head) - len(tail), 4)
    # base64 at 76 characters + LF per line: 57 raw bytes make 77 encoded bytes.
    raw_len = max(encoded_room * 57 // 77, 1)
    encoded = base64.encodebytes(rng.randbytes(raw_len))
    return head + part_head + attach_head + encoded + tail


def build(directory: Path, specs: Iterable[Spec], *, seed: int = 20240501) -> Corpus:
    """Write the corpus templates (LF) into ``directory``; message order = spec order."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pool = _prose_pool(random.Random(seed + 1))
    files: list[CorpusFile] = []
    i = 0
    for spec in specs:
        for _ in range(spec.count):
            jitter = 1.0 + rng.uniform(-spec.jitter, spec.jitter) if spec.jitter else 1.0
            data = make_message(i, max(int(spec.size * jitter), 512), rng, pool)
            path = directory / f"{i:06d}.eml"
            path.write_bytes(data)
            # Dovecot serves every LF as CRLF.
            files.append(CorpusFile(path, len(data), len(data) + data.count(b"\n")))
            i += 1
    return Corpus(tuple(files))


def clear_maildir(maildir: Path) -> None:
    """Remove every message and Dovecot's index files: each contender starts alike."""
    for sub in ("new", "cur", "tmp"):
        folder = maildir / sub
        if folder.is_dir():
            for entry in folder.iterdir():
                entry.unlink()
    for entry in maildir.iterdir():
        if entry.is_file() and entry.name.startswith("dovecot"):
            entry.unlink()


def deliver(corpus: Corpus, maildir: Path, *, uid: int, gid: int, round_id: int) -> None:
    """Copy the corpus into ``maildir/new`` (after clearing it), owned by the mail user.

    Names follow Dovecot's LDA (``<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>,W=<vsize>``);
    the counter in the M field keeps Dovecot's order (and so message numbers)
    equal to corpus order, and ``round_id`` keeps names unique across rounds.
    """
    clear_maildir(maildir)
    stamp = int(time.time())
    pid = os.getpid()
    for n, item in enumerate(corpus.files):
        name = f"{stamp}.M{n:06d}P{pid}Q{round_id}.bench,S={item.size},W={item.wire_size}"
        target = maildir / "tmp" / name
        shutil.copyfile(item.path, target)
        os.chown(target, uid, gid)
        target.chmod(0o600)
        target.rename(maildir / "new" / name)
