"""A mailbox secret read from Secrets Manager with the command's own Session.

The secret is validated exactly as the function validates it
(:meth:`MailboxConfig.from_secret`); errors name the field, never a value.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pop3_ingest.config import MailboxConfig
from pop3_ingest.errors import SecretError
from pop3_ingest.redaction import secret_values

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


def read_secret(client: SecretsManagerClient, secret_id: str) -> tuple[MailboxConfig, set[str]]:
    """The secret's mailbox settings, and the values never to print."""
    text = client.get_secret_value(SecretId=secret_id).get("SecretString")
    if text is None:
        raise SecretError(f"secret {secret_id!r} holds no text (SecretString)")
    try:
        data = json.loads(text)
    except ValueError:
        raise SecretError(f"secret {secret_id!r} is not valid JSON") from None
    secrets = set(secret_values(data))
    return MailboxConfig.from_secret(data), secrets
