"""Secrets Manager: the mailbox settings, via Powertools Parameters (cached)."""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import (
    GetParameterError,
    TransformParameterError,
)

from pop3_ingest.config import MailboxConfig
from pop3_ingest.errors import SecretError

# Short enough that a rotated password is picked up within minutes.
SECRET_MAX_AGE_SECONDS = 300


def load_mailbox_config(secret_id: str, *, fresh: bool = False) -> MailboxConfig:
    """The mailbox settings; ``fresh`` bypasses the cache (after a failed login)."""
    try:
        data = parameters.get_secret(
            secret_id, transform="json", max_age=SECRET_MAX_AGE_SECONDS, force_fetch=fresh
        )
    except TransformParameterError as exc:
        raise SecretError(f"secret {secret_id!r} is not valid JSON") from exc
    except GetParameterError as exc:
        raise SecretError(f"cannot read secret {secret_id!r}: {_reason(exc)}") from exc
    return MailboxConfig.from_secret(data)


def _reason(exc: GetParameterError) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc)
    return text[:300]
