"""Secrets Manager: the mailbox settings, via Powertools Parameters (cached).

One mailbox reads its secret with GetSecretValue; a batch of jobs reads all of
its secrets with one BatchGetSecretValue (up to 20 per call). Both go through
one cache, Powertools' default secrets provider, so a secret read in a batch
costs no call when it is read again in this warm container.

A refresh token the token endpoint rotated is written back to the secrets that
hold the old one (:func:`write_back_refresh_token`): read again past the cache,
only ``auth.refresh_token`` replaced, PutSecretValue. Which secrets those are is
remembered here as they are read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
from aws_lambda_powertools.utilities.parameters.exceptions import (
    GetParameterError,
    TransformParameterError,
)
from botocore.exceptions import BotoCoreError, ClientError

from pop3_ingest.config import DEFAULT_REFRESH_TOKEN_WRITEBACK_SECONDS, MailboxConfig
from pop3_ingest.errors import SecretError
from pop3_ingest.integrations.oauth_tokens import Rotation
from pop3_ingest.redaction import Redactor

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

# Short enough that a rotated password is picked up within minutes.
SECRET_MAX_AGE_SECONDS = 300
# What one BatchGetSecretValue call takes by id (AWS's limit).
BATCH_LIMIT = 20
_REASON_CHARS = 300
# How many refresh tokens' holders a warm container remembers (a fleet's worth).
_HOLDERS_LIMIT = 10_000
# Names the write-back's PutSecretValue calls (idempotent: a retried call adds no version).
_WRITE_BACK_NAMESPACE = uuid.UUID("6f1c7a52-93a4-4a0e-9d43-2b8f4c1e7d15")


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
    config = MailboxConfig.from_secret(data)
    _remember_holder(secret_id, config)
    return config


def load_mailbox_configs(secret_ids: Iterable[str]) -> dict[str, MailboxConfig | SecretError]:
    """Each secret's mailbox settings, or why it cannot be used: one secret's problem
    is its own. Secrets not cached are read together, BATCH_LIMIT per call."""
    configs: dict[str, MailboxConfig | SecretError] = {}
    for secret_id, data in _provider().get_each(secret_ids).items():
        try:
            config = data if isinstance(data, SecretError) else MailboxConfig.from_secret(data)
        except SecretError as exc:
            config = exc
        if isinstance(config, MailboxConfig):
            _remember_holder(secret_id, config)
        configs[secret_id] = config
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

    def remember(self, name: str, value: Any) -> None:
        """Cache a secret's decoded JSON as if it had just been read."""
        key = self._build_cache_key(name=name, transform="json")
        self.add_to_cache(key=key, value=value, max_age=SECRET_MAX_AGE_SECONDS)

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
        self.remember(name, value)
        return value

    def _read_one(self, name: str) -> Any:
        try:
            return self.get(name, transform="json", max_age=SECRET_MAX_AGE_SECONDS)
        except TransformParameterError:
            return SecretError(f"secret {name!r} is not valid JSON")
        except GetParameterError as exc:
            return SecretError(f"cannot read secret {name!r}: {_reason(exc)}")


_PROVIDER_LOCK = threading.Lock()


def _provider() -> MailboxSecrets:
    """Powertools' default secrets provider, as :class:`MailboxSecrets`: one cache for
    single and batch reads, dropped by ``parameters.clear_caches()`` like any other."""
    with _PROVIDER_LOCK:  # the jobs of a batch ask at once: one client, not one each
        provider = DEFAULT_PROVIDERS.get("secrets")
        if not isinstance(provider, MailboxSecrets):
            provider = DEFAULT_PROVIDERS["secrets"] = MailboxSecrets()
        return provider


def _reason(exc: GetParameterError) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc)
    return text[:_REASON_CHARS]


# -- a rotated refresh token, written back -------------------------------------


class WriteBack(StrEnum):
    """What became of a rotated refresh token, for one secret that held the old one."""

    WRITTEN = "written back"
    RECENT = "not written: the secret changed recently; the token in it stays valid"
    CHANGED = "not written: the secret no longer holds the refresh token that was used"
    UNKNOWN = "not written: no secret read in this process holds the refresh token used"


# Refresh token (by digest) -> the secrets read with it, oldest first.
_holders: dict[str, set[str]] = {}
_holders_lock = threading.Lock()


def _holder_key(token_url: str, client_id: str, refresh_token: str) -> str:
    material = "\x00".join((token_url, client_id, refresh_token))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _remember_holder(secret_id: str, config: MailboxConfig) -> None:
    oauth = config.oauth
    if oauth is None or not oauth.refresh_token:
        return
    key = _holder_key(oauth.token_url, oauth.client_id, oauth.refresh_token)
    with _holders_lock:
        secrets = _holders.pop(key, set())
        secrets.add(secret_id)
        _holders[key] = secrets  # the most recent last; the oldest go first
        while len(_holders) > _HOLDERS_LIMIT:
            del _holders[next(iter(_holders))]


def write_back_refresh_token(
    rotation: Rotation,
    *,
    min_age: float = DEFAULT_REFRESH_TOKEN_WRITEBACK_SECONDS,
    client: SecretsManagerClient | None = None,
) -> dict[str, WriteBack | SecretError]:
    """Put ``rotation.new`` into each secret read with ``rotation.old``; per secret, what
    became of it, or why it failed (a SecretError whose text holds neither token).

    A secret is written only if it still holds the old token and its current version
    is at least ``min_age`` seconds old (Secrets Manager asks for one PutSecretValue per
    secret per 10 minutes at most); only ``auth.refresh_token`` changes.
    """
    with _holders_lock:
        secret_ids = sorted(
            _holders.get(_holder_key(rotation.token_url, rotation.client_id, rotation.old), ())
        )
    if not secret_ids:
        return {"": WriteBack.UNKNOWN}
    redactor = Redactor((rotation.old, rotation.new))
    results: dict[str, WriteBack | SecretError] = {}
    for secret_id in secret_ids:
        try:
            writer = client or writer_client()
            results[secret_id] = _write_back(writer, secret_id, rotation, min_age)
        except (ClientError, BotoCoreError) as exc:
            reason = redactor.mask(str(exc), _REASON_CHARS)
            results[secret_id] = SecretError(
                f"cannot write the rotated refresh token to secret {secret_id!r}: {reason}"
            )
        except SecretError as exc:
            results[secret_id] = SecretError(redactor.mask(str(exc), _REASON_CHARS), exc.field)
    return results


def _write_back(
    client: SecretsManagerClient, secret_id: str, rotation: Rotation, min_age: float
) -> WriteBack:
    current = client.get_secret_value(SecretId=secret_id)
    text = current.get("SecretString") or ""
    try:
        data = json.loads(text)
    except ValueError:
        raise SecretError(f"secret {secret_id!r} is not valid JSON") from None
    auth = data.get("auth") if isinstance(data, dict) else None
    if not isinstance(auth, dict) or auth.get("refresh_token") != rotation.old:
        return WriteBack.CHANGED
    created = current.get("CreatedDate")
    if isinstance(created, datetime) and time.time() - created.timestamp() < min_age:
        return WriteBack.RECENT
    updated = with_refresh_token(text, rotation.new)
    config = MailboxConfig.from_secret(json.loads(updated))  # names a field, never a value
    digest = hashlib.sha256(rotation.new.encode("utf-8")).hexdigest()
    request = uuid.uuid5(_WRITE_BACK_NAMESPACE, f"{current.get('VersionId', '')}:{digest}")
    client.put_secret_value(
        SecretId=secret_id, SecretString=updated, ClientRequestToken=str(request)
    )
    _provider().remember(secret_id, json.loads(updated))
    _remember_holder(secret_id, config)
    return WriteBack.WRITTEN


def with_refresh_token(text: str, refresh_token: str) -> str:
    """The secret's JSON ``text`` with ``auth.refresh_token`` replaced and all else kept:
    key order and every other field, and the layout too where the old value occurs
    once (else the JSON is written anew, indented if it was)."""
    data = json.loads(text)
    old = data["auth"]["refresh_token"]
    data["auth"]["refresh_token"] = refresh_token
    for quoted in dict.fromkeys((json.dumps(old), json.dumps(old, ensure_ascii=False))):
        if text.count(quoted) == 1:
            replaced = text.replace(quoted, json.dumps(refresh_token))
            if json.loads(replaced) == data:
                return replaced
    return json.dumps(data, ensure_ascii=False, indent=2 if "\n" in text.strip() else None)


@functools.cache
def writer_client() -> SecretsManagerClient:
    """The client write-backs use, made once: short timeouts and one retry, so a
    write-back does not hold the run."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 2}
    )
    return boto3.session.Session().client("secretsmanager", config=config)
