"""The CLI's exit codes, which error gets which, and the one line an error is shown as.

Exit codes (every command): 0 ok, 1 failed (protocol error, lost connection,
an AWS call failed, pointers not sent, a state could not be read), 2 usage,
configuration or secret error (also: a name that matches nothing), 3 TLS or
connection error, 4 login rejected (or suspended), 5 mailbox busy (try later),
6 some mailbox unhealthy (``status``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from botocore.exceptions import (
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from pop3_ingest.errors import (
    AnnounceError,
    AuthError,
    ConfigError,
    ConnectError,
    MailboxBusy,
    SecretError,
    TlsError,
)
from pop3_ingest.redaction import Redactor

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_CONNECT = 3
EXIT_AUTH = 4
EXIT_BUSY = 5
EXIT_UNHEALTHY = 6  # status: everything was read, and some mailbox needs attention
EXIT_INTERRUPTED = 130  # what a shell reports for Ctrl-C

# The word an error line and a JSON document's "error_kind" give for each failure code.
ERROR_KINDS = {
    EXIT_FAILED: "failed",
    EXIT_CONFIG: "config",
    EXIT_CONNECT: "connect",
    EXIT_AUTH: "auth",
    EXIT_BUSY: "busy",
}

# AWS error codes that mean "the bucket, queue, secret or schedule group named on
# the command line is wrong".
_MISSING_RESOURCE_CODES = frozenset(
    {
        "NoSuchBucket",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "InvalidAddress",
        "ResourceNotFoundException",
    }
)
MAX_ERROR_CHARS = 500
# A Redactor masks a secret shorter than its min_run only where it occurs whole.
_WHOLE_SECRET = sys.maxsize
# boto3 reads AWS_DEFAULT_REGION or the profile's region; AWS_REGION is not enough.
_REGION_HINT = " (use --region, set AWS_DEFAULT_REGION, or a region in your AWS profile)"
_CREDENTIALS_HINT = " (use --profile, or set up credentials: aws configure)"
_CONFIG_ERRORS = (NoRegionError, NoCredentialsError, PartialCredentialsError, ProfileNotFound)


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error."""
    if isinstance(exc, ConfigError | SecretError):
        return EXIT_CONFIG
    if isinstance(exc, _CONFIG_ERRORS):
        return EXIT_CONFIG
    if isinstance(exc, AnnounceError) and isinstance(exc.__cause__, ClientError):
        return exit_code_for(exc.__cause__)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return EXIT_CONFIG if code in _MISSING_RESOURCE_CODES else EXIT_FAILED
    if isinstance(exc, TlsError | ConnectError):
        return EXIT_CONNECT
    if isinstance(exc, AuthError):
        return EXIT_AUTH
    if isinstance(exc, MailboxBusy):
        return EXIT_BUSY
    return EXIT_FAILED


def error_line(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One printable line for an error: no line breaks, bounded, secrets masked.

    The text is ours; what of it came from a server or token endpoint was
    already masked run by run where it was read (:mod:`pop3_ingest.redaction`).
    Here :class:`~pop3_ingest.redaction.Redactor` masks each secret where it
    occurs whole, as a last guard: runs of a few characters would garble our
    own words ("connect" shares "ect " with "correct horse").
    """
    text = " ".join((str(exc) or type(exc).__name__).split())
    hint = _REGION_HINT if isinstance(exc, NoRegionError) else ""
    if isinstance(exc, NoCredentialsError):
        hint = _CREDENTIALS_HINT
    redactor = Redactor(secrets, min_run=_WHOLE_SECRET)
    return redactor.mask(text, limit=MAX_ERROR_CHARS - len(hint)) + hint
