"""The secret's start and delete_after_days: defaults, bad values named, the options they give."""

from __future__ import annotations

from typing import Any

import pytest

from pop3_ingest.config import MailboxConfig, Settings, Start
from pop3_ingest.domain.options import IngestOptions
from pop3_ingest.errors import SecretError

GOOD: dict[str, Any] = {"host": "pop.example.com", "username": "alice", "password": "s3cret!"}
ENV = {"BUCKET_NAME": "b", "QUEUE_URL": "https://sqs.example/q"}


def test_by_default_all_mail_is_taken_and_deleted_once_stored() -> None:
    config = MailboxConfig.from_secret(GOOD)
    assert config.start is Start.ALL
    assert config.delete_after_days == 0


def test_the_options_carry_start_and_delete_after_days() -> None:
    secret = {**GOOD, "start": "now", "delete_after_days": 14}
    options = IngestOptions.from_settings(Settings.from_env(ENV), MailboxConfig.from_secret(secret))
    assert options.start is Start.NOW
    assert options.delete_after_days == 14
    assert options.delete


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"start": "later"}, "start", 'must be "all" or "now"'),
        ({"start": "NOW "}, "start", 'must be "all" or "now"'),
        ({"start": 1}, "start", "must be a string"),
        ({"delete_after_days": -1}, "delete_after_days", "from 0 to 3650"),
        ({"delete_after_days": 3651}, "delete_after_days", "from 0 to 3650"),
        ({"delete_after_days": "7"}, "delete_after_days", "must be an integer"),
        ({"delete_after_days": 7.0}, "delete_after_days", "must be an integer"),
        (
            {"delete_after_days": 7, "delete": False},
            "delete_after_days",
            "cannot go with 'delete' false",
        ),
    ],
)
def test_bad_values_are_named_without_the_value(
    fields: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(SecretError) as caught:
        MailboxConfig.from_secret({**GOOD, **fields})
    assert caught.value.field == field
    assert fragment in str(caught.value)
    assert "later" not in str(caught.value)


def test_keeping_for_ever_is_still_delete_false_alone() -> None:
    config = MailboxConfig.from_secret({**GOOD, "delete": False, "delete_after_days": 0})
    assert not config.delete
