"""Secret and environment validation: every bad field gets its own clear error."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pop3_ingest.config import MailboxConfig, Settings, TlsMode
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.errors import ConfigError, SecretError

GOOD: dict[str, Any] = {"host": "pop.example.com", "username": "alice", "password": "s3cret!"}


def test_defaults() -> None:
    cfg = MailboxConfig.from_secret(GOOD)
    assert cfg.tls is TlsMode.IMPLICIT
    assert cfg.port == 995
    assert cfg.delete is True
    assert cfg.mailbox == "alice@pop.example.com"


def test_starttls_and_none_default_to_port_110() -> None:
    assert MailboxConfig.from_secret({**GOOD, "tls": "starttls"}).port == 110
    assert MailboxConfig.from_secret({**GOOD, "tls": "none"}).port == 110


def test_derived_mailbox_name_is_key_safe() -> None:
    cfg = MailboxConfig.from_secret({**GOOD, "username": "A B/c"})
    assert cfg.mailbox == "a_b_c@pop.example.com"


@pytest.mark.parametrize(
    ("secret", "field", "fragment"),
    [
        ({k: v for k, v in GOOD.items() if k != "host"}, "host", "missing required field 'host'"),
        ({k: v for k, v in GOOD.items() if k != "username"}, "username", "'username'"),
        ({k: v for k, v in GOOD.items() if k != "password"}, "password", "'password'"),
        ({**GOOD, "host": ""}, "host", "must not be empty"),
        ({**GOOD, "host": 42}, "host", "must be a string"),
        ({**GOOD, "host": "pop.example.com/x"}, "host", "bare host name"),
        ({**GOOD, "port": "995"}, "port", "must be an integer"),
        ({**GOOD, "port": True}, "port", "must be an integer"),
        ({**GOOD, "port": 0}, "port", "1-65535"),
        ({**GOOD, "port": 70000}, "port", "1-65535"),
        ({**GOOD, "tls": "ssl"}, "tls", "implicit, starttls, none"),
        ({**GOOD, "tls": True}, "tls", "must be a string"),
        ({**GOOD, "delete": "yes"}, "delete", "true or false"),
        ({**GOOD, "ca_cert": "not a pem"}, "ca_cert", "PEM"),
        ({**GOOD, "mailbox": "../etc"}, "mailbox", "letters, digits"),
        ({**GOOD, "mailbox": ""}, "mailbox", "letters, digits"),
        ({**GOOD, "pasword": "x"}, "pasword", "unknown field"),
        ({**GOOD, "password": "a\r\nDELE 1"}, "password", "line breaks"),
        ({**GOOD, "username": "a\r\nDELE 1"}, "username", "single line"),
    ],
)
def test_bad_secret_names_the_field(secret: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(SecretError) as info:
        MailboxConfig.from_secret(secret)
    assert info.value.field == field
    assert fragment in str(info.value)
    assert "s3cret!" not in str(info.value)


@pytest.mark.parametrize("data", [[1, 2], "text", None, 5])
def test_secret_must_be_an_object(data: object) -> None:
    with pytest.raises(SecretError, match="JSON object"):
        MailboxConfig.from_secret(data)


def test_repr_hides_password() -> None:
    cfg = MailboxConfig.from_secret(GOOD)
    assert "s3cret!" not in repr(cfg)
    assert "s3cret!" not in str(cfg)


ENV = {"BUCKET_NAME": "b", "QUEUE_URL": "https://q", "SECRET_ID": "s"}


def test_settings_from_env() -> None:
    settings = Settings.from_env({**ENV, "KEY_PREFIX": "in", "MAX_MESSAGES_PER_RUN": "7"})
    assert settings.key_prefix == "in/"
    assert settings.max_messages_per_run == 7
    assert settings.secret_id == "s"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"QUEUE_URL": "q"}, "BUCKET_NAME"),
        ({"BUCKET_NAME": "b"}, "QUEUE_URL"),
        ({**ENV, "MAX_MESSAGES_PER_RUN": "many"}, "MAX_MESSAGES_PER_RUN must be an integer"),
        ({**ENV, "MAX_MESSAGES_PER_RUN": "-1"}, "MAX_MESSAGES_PER_RUN must be >= 0"),
        ({**ENV, "POP3_TIMEOUT_SECONDS": "0"}, "POP3_TIMEOUT_SECONDS"),
        ({**ENV, "DEADLINE_MARGIN_SECONDS": "x"}, "DEADLINE_MARGIN_SECONDS"),
        ({**ENV, "KEY_PREFIX": "../up"}, "KEY_PREFIX"),
    ],
)
def test_bad_environment(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env(env)


OAUTH = {
    "type": "oauth2",
    "token_url": "https://login.example.com/token",
    "client_id": "app",
    "client_secret": "cs-123",
    "scope": "https://outlook.office365.com/.default",
}


def test_oauth_secret_needs_no_password_and_defaults_to_two_step_xoauth2() -> None:
    secret = {k: v for k, v in GOOD.items() if k != "password"} | {"auth": OAUTH}
    cfg = MailboxConfig.from_secret(secret)
    assert cfg.sasl == "xoauth2"
    assert cfg.oauth is not None
    assert "cs-123" not in repr(cfg)


@pytest.mark.parametrize(
    ("secret", "field", "fragment"),
    [
        ({**GOOD, "sasl": "xoauth2"}, "auth", "'auth' is missing"),
        ({**GOOD, "sasl": "cram-md5"}, "sasl", "must be one of"),
        ({**GOOD, "auth": OAUTH, "sasl": "plain"}, "sasl", "must be xoauth2"),
        ({**GOOD, "auth": {**OAUTH, "token_url": "http://evil.example/t"}}, None, "https"),
        ({**GOOD, "interval_minutes": -1}, "interval_minutes", "0 to 10080"),
        ({**GOOD, "max_message_size": 10}, "max_message_size", "at least 1024"),
    ],
)
def test_bad_login_settings(secret: dict[str, Any], field: str | None, fragment: str) -> None:
    with pytest.raises(SecretError) as info:
        MailboxConfig.from_secret(secret)
    assert fragment in str(info.value)
    if field is not None:
        assert info.value.field == field
    assert "cs-123" not in str(info.value)


def test_fingerprint_changes_when_the_password_rotates() -> None:
    first = MailboxConfig.from_secret(GOOD)
    again = MailboxConfig.from_secret(dict(GOOD))
    rotated = MailboxConfig.from_secret({**GOOD, "password": "new"})
    assert first.fingerprint() == again.fingerprint() != rotated.fingerprint()
    assert "s3cret" not in first.fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"tls": "Sec-RET-value"},
        {"port": "Sec-RET-value"},
        {"mailbox": "Sec-RET-value/x"},
        {"sasl": "Sec-RET-value"},
        {"ca_cert": "Sec-RET-value"},
        {"host": "Sec-RET-value x"},
        {"auth": {**OAUTH, "token_url": "Sec-RET-value"}},
        {"auth": {**OAUTH, "type": "Sec-RET-value"}},
    ],
)
def test_a_bad_value_is_never_repeated(change: dict[str, Any]) -> None:
    # A secret pasted into the wrong field must not reach a log line.
    with pytest.raises(SecretError) as info:
        MailboxConfig.from_secret({**GOOD, **change})
    assert info.value.field is not None
    assert "RET-val" not in f"{info.value} {info.value!r} {info.value.__cause__}"


def test_unknown_fields_are_named_all_at_once_and_nested_ones_by_their_path() -> None:
    with pytest.raises(SecretError) as info:
        MailboxConfig.from_secret({**GOOD, "pasword": "x", "hostname": "y"})
    assert "hostname, pasword" in str(info.value)
    with pytest.raises(SecretError) as info:
        MailboxConfig.from_secret({**GOOD, "auth": {**OAUTH, "clientsecret": "x"}})
    assert info.value.field == "auth.clientsecret"


def test_the_secret_values_are_the_password_and_the_oauth2_secrets() -> None:
    plain = MailboxConfig.from_secret(GOOD)
    assert plain.secret_values() == ("s3cret!",)
    oauth = MailboxConfig.from_secret({**GOOD, "auth": {**OAUTH, "refresh_token": "rt-9"}})
    assert set(oauth.secret_values()) == {"s3cret!", "cs-123", "rt-9"}


def test_an_empty_variable_counts_as_not_set_but_key_prefix_is_taken_as_written() -> None:
    settings = Settings.from_env({**ENV, "PIPELINE_WINDOW": " ", "SECRET_ID": "", "KEY_PREFIX": ""})
    assert settings.pipeline_window == Settings.from_env(ENV).pipeline_window
    assert settings.secret_id is None
    assert settings.key_prefix == ""


def test_ingest_options_carry_the_settings_and_the_secrets_own_choices() -> None:
    env = {
        **ENV,
        "KEY_PREFIX": "in/",
        "MAX_MESSAGES_PER_RUN": "9",
        "PIPELINE_WINDOW": "5",
        "UPLOAD_WORKERS": "2",
        "COMMIT_EVERY_MESSAGES": "7",
        "COMMIT_EVERY_BYTES": "4096",
        "COMMIT_EVERY_SECONDS": "90",
        "POISON_THRESHOLD": "4",
    }
    secret = {**GOOD, "delete": False, "max_message_size": 2048}
    options = IngestOptions.from_settings(Settings.from_env(env), MailboxConfig.from_secret(secret))
    assert options == IngestOptions(
        key_prefix="in/",
        delete=False,
        max_messages=9,
        max_message_size=2048,
        pipeline_window=5,
        upload_workers=2,
        commit_every_messages=7,
        commit_every_bytes=4096,
        commit_every_seconds=90.0,
        poison_threshold=4,
    )


def test_a_default_run_uses_the_cores_own_defaults() -> None:
    # One value per default: what the function passes is what the core assumes.
    options = IngestOptions.from_settings(Settings.from_env(ENV), MailboxConfig.from_secret(GOOD))
    assert (
        dataclasses.replace(options, max_messages=IngestOptions().max_messages) == IngestOptions()
    )


def documented_defaults() -> dict[str, str]:
    """The default column of docs/configuration.md's tables, by variable or field name."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    defaults = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and cells[0].startswith("`"):
            defaults[cells[0].strip("`")] = cells[2]
    return defaults


def test_the_documented_environment_defaults_are_the_settings_defaults() -> None:
    documented = documented_defaults()
    settings = Settings.from_env(ENV)
    required = {"secret_id", "bucket", "queue_url"}
    for field in dataclasses.fields(Settings):
        if field.name in required:
            continue
        shown = documented[field.name.upper()].strip("`")
        value = getattr(settings, field.name)
        if isinstance(value, bool):  # before int: a bool is an int too
            assert shown == str(value).lower(), field.name
            continue
        assert (float(shown) if isinstance(value, int | float) else shown) == value, field.name


def test_the_documented_secret_defaults_are_the_schemas_defaults() -> None:
    documented = documented_defaults()
    config = MailboxConfig.from_secret(GOOD)
    checked = 0
    for field in dataclasses.fields(MailboxConfig):
        shown = documented.get(field.name, "")
        if shown.startswith("`"):  # a literal default, not a rule
            assert json.loads(shown.split("`")[1]) == getattr(config, field.name), field.name
            checked += 1
    assert checked >= 4
