"""The AWS SDK the function needs from the Lambda runtime, checked once at import.

boto3 and botocore are not in the artifact: the function uses the ones the
python3.12 runtime ships, whose version AWS chooses and may vary by region.
An older botocore does not know a parameter the code sends and refuses the
call (``ParamValidationError``) in the middle of a run, where it would look
like a failing message. So the handlers check here, when they are imported,
and fail every invocation with one clear line instead (the Errors alarm's
runbook says what to do: docs/operations.md, "Runbooks").

:data:`SDK_FEATURES` is the one place that says which feature needs which
botocore: each is the first release whose service model has it, read from
the models of the released wheels. Features older than all of them
(SendMessageBatch, ChecksumSHA256 on PutObject) need nothing newer. boto3 X
requires botocore X, so the same number is boto3's minimum.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import botocore

from pop3_ingest.errors import ConfigError

__all__ = ["MINIMUM_BOTOCORE", "SDK_FEATURES", "SdkFeature", "check_botocore", "require_botocore"]


@dataclass(frozen=True)
class SdkFeature:
    """An API feature the code relies on, and the first botocore that has it."""

    service: str  # botocore's service name
    operation: str
    member: str | None  # a request member, or None: the operation itself
    since: tuple[int, int, int]
    used_for: str


SDK_FEATURES = (
    SdkFeature(
        "s3",
        "PutObject",
        "IfNoneMatch",
        (1, 35, 2),
        "mail objects and new run states are written only where nothing is (If-None-Match: *)",
    ),
    SdkFeature(
        "s3",
        "CompleteMultipartUpload",
        "IfNoneMatch",
        (1, 35, 2),
        "big messages (multipart uploads) are written only where nothing is",
    ),
    SdkFeature(
        "s3",
        "PutObject",
        "IfMatch",
        (1, 35, 69),
        "a run state is rewritten only over the version read (If-Match)",
    ),
    SdkFeature(
        "secretsmanager",
        "BatchGetSecretValue",
        None,
        (1, 32, 7),
        "Mode fleet: a batch of jobs, and the reconciler, read their secrets in one call",
    ),
    SdkFeature(
        "scheduler",
        "CreateSchedule",
        "Target",
        (1, 29, 7),
        "Mode fleet: one EventBridge Scheduler schedule per mailbox (SQS FIFO target)",
    ),
)
MINIMUM_BOTOCORE = max(feature.since for feature in SDK_FEATURES)

_RELEASE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def _dotted(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def check_botocore(version: str) -> None:
    """Raise a :class:`ConfigError` naming what is missing when ``version`` is too old."""
    release = _RELEASE.match(version)
    if release is None:
        raise ConfigError(f"pop3-ingest cannot read the runtime's botocore version {version!r}")
    found = (int(release[1]), int(release[2]), int(release[3]))
    missing = [feature for feature in SDK_FEATURES if found < feature.since]
    if not missing:
        return
    needs = "; ".join(
        f"{f.service} {f.operation}{'.' + f.member if f.member else ''} "
        f"(>= {_dotted(f.since)}: {f.used_for})"
        for f in missing
    )
    raise ConfigError(
        f"pop3-ingest needs botocore >= {_dotted(MINIMUM_BOTOCORE)} (boto3 the same), but the "
        f"Lambda runtime has {version}; missing: {needs}. Deploy in a region whose runtime is "
        "newer, or ship boto3 with the function (docs/operations.md, Runbooks)."
    )


def require_botocore() -> None:
    """The runtime's botocore is new enough, or the import that asked fails."""
    check_botocore(botocore.__version__)
