"""Secrets Manager: the mailbox settings, via Powertools Parameters (cached).

One mailbox reads its secret with GetSecretValue; a batch of jobs reads all of
its secrets with one BatchGetSecretValue (up to 20 per call). Both go through
one cache, Powertools' default secrets provider, so a secret read in a batch
costs no call when it is read again in this warm container.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
from aws_lambda_powertools.utilities.parameters.exceptions import (
    GetParameterError,
    TransformParameterError,
)
from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.config import MailboxConfig
from pop3_ingest.errors import SecretError

# Short enough that a rotated password is picked up within minutes.
SECRET_MAX_AGE_SECONDS = 300
# What one BatchGetSecretValue call takes by id (AWS's limit).
BATCH_LIMIT = 20
_REASON_CHARS = 300


def load_mailbox_config(secret_id: str, *, fresh: bool = False) -> MailboxConfig:
    """The mailbox settings; ``fresh`` bypasses the cache (after a failed login)."""
    try:
        data = _provider().get(
            secret_id, transform="json", max_age=SECRET_MAX_AGE_SECONDS, force_fetch=fresh
        )
    except TransformParameterError as exc:
        raise SecretError(f"secret {secret_id!r} is not valid JSON") from exc
    except GetParameterError as exc:
        raise SecretError(f"cannot read secret {secret_id!r}: {_reason(exc)}") from exc
    return MailboxConfig.from_secret(data)


def load_mailbox_configs(secret_ids: Iterable[str]) -> dict[str, MailboxConfig | SecretError]:
    """Each secret's mailbox settings, or why it cannot be used: one secret's problem
    is its own. Secrets not cached are read together, BATCH_LIMIT per call."""
    configs: dict[str, MailboxConfig | SecretError] = {}
    for secret_id, data in _provider().get_each(secret_ids).items():
        try:
            configs[secret_id] = (
                data if isinstance(data, SecretError) else MailboxConfig.from_secret(data)
            )
        except SecretError as exc:
            configs[secret_id] = exc
    return configs


class MailboxSecrets(parameters.SecretsProvider):
    """Powertools' secrets provider, plus many secrets in one call into the same cache."""

    def get_each(self, names: Iterable[str]) -> dict[str, Any]:
        """Each secret's decoded JSON, or a SecretError: from the cache, else read in batches."""
        wanted = list(dict.fromkeys(names))
        cached = {name: self.cached(name) for name in wanted}
        values = {name: value for name, value in cached.items() if value is not None}
        missing = [name for name in wanted if name not in values]
        for start in range(0, len(missing), BATCH_LIMIT):
            values.update(self._read_batch(missing[start : start + BATCH_LIMIT]))
        return values

    def cached(self, name: str) -> Any | None:
        key = self._build_cache_key(name=name, transform="json")
        return self.fetch_from_cache(key) if self.has_not_expired_in_cache(key) else None

    def _read_batch(self, names: Sequence[str]) -> dict[str, Any]:
        try:
            response = self.client.batch_get_secret_value(SecretIdList=list(names))
        except (ClientError, BotoCoreError) as exc:
            reason = str(exc)[:_REASON_CHARS]
            return {name: SecretError(f"cannot read secret {name!r}: {reason}") for name in names}
        values: dict[str, Any] = {}
        for entry in response.get("SecretValues", []):
            # Asked for by name or by ARN: answered with both.
            for name in {entry.get("Name", ""), entry.get("ARN", "")} & set(names):
                values[name] = self._decoded(name, entry.get("SecretString"))
        for error in response.get("Errors", []):
            name = error.get("SecretId", "")
            if name in names:
                why = f"{error.get('ErrorCode', 'error')}: {error.get('Message', '')}"
                values[name] = SecretError(f"cannot read secret {name!r}: {why[:_REASON_CHARS]}")
        # Neither answered nor refused (a partial ARN, say): read on its own.
        for name in names:
            if name not in values:
                values[name] = self._read_one(name)
        return values

    def _decoded(self, name: str, text: str | None) -> Any:
        try:
            value = json.loads(text or "")
        except ValueError:
            return SecretError(f"secret {name!r} is not valid JSON")
        key = self._build_cache_key(name=name, transform="json")
        self.add_to_cache(key=key, value=value, max_age=SECRET_MAX_AGE_SECONDS)
        return value

    def _read_one(self, name: str) -> Any:
        try:
            return self.get(name, transform="json", max_age=SECRET_MAX_AGE_SECONDS)
        except TransformParameterError:
            return SecretError(f"secret {name!r} is not valid JSON")
        except GetParameterError as exc:
            return SecretError(f"cannot read secret {name!r}: {_reason(exc)}")


def _provider() -> MailboxSecrets:
    """Powertools' default secrets provider, as :class:`MailboxSecrets`: one cache for
    single and batch reads, dropped by ``parameters.clear_caches()`` like any other."""
    provider = DEFAULT_PROVIDERS.get("secrets")
    if not isinstance(provider, MailboxSecrets):
        provider = DEFAULT_PROVIDERS["secrets"] = MailboxSecrets()
    return provider


def _reason(exc: GetParameterError) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc)
    return text[:_REASON_CHARS]
