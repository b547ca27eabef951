"""The first deploy: it goes through on a new account, and the placeholder it creates is
recognised as "not configured yet", never polled as a mailbox."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.support.cfn_template import Template

from pop3_ingest.config import MailboxConfig

# New accounts often get a Lambda concurrency quota of 10, and Lambda refuses any
# reservation that leaves fewer than 10 unreserved: the deploy rolls back with
# "decreases account's UnreservedConcurrentExecution below its minimum value of [10]".
NEW_ACCOUNT_QUOTA = 10
UNRESERVED_MINIMUM = 10
# What stacks deployed so far hold: CloudFormation generates the secret's value
# again when SecretStringTemplate changes, wiping the settings an operator wrote.
DEPLOYED_PLACEHOLDER = {"host": "pop3.example.invalid", "username": "CHANGE-ME", "tls": "implicit"}


def _reserved(template: Template, params: dict[str, str]) -> int:
    """Concurrency the stack's functions reserve with these parameter values."""
    total = 0
    for name in template.functions():
        if not template.exists(name, params):
            continue
        value = template.resolve(template.props(name).get("ReservedConcurrentExecutions"), params)
        total += int(value or 0)
    return total


def _fits_a_new_account(template: Template, params: dict[str, str]) -> bool:
    return NEW_ACCOUNT_QUOTA - _reserved(template, params) >= UNRESERVED_MINIMUM


def test_the_default_reserved_concurrency_deploys_on_an_account_whose_quota_is_10(
    template: Template,
) -> None:
    default = template.params()["ReservedConcurrency"]
    checked = 0
    for params in template.cases():
        if params["ReservedConcurrency"] != default:
            continue  # the operator asked for a reservation: their quota, their call
        assert _fits_a_new_account(template, params), params
        checked += 1
    assert checked >= 2, "both Modes, with the default"
    # The rule bites: a reservation of any size does not fit such an account.
    assert not _fits_a_new_account(template, template.params(ReservedConcurrency=1))
    assert not _fits_a_new_account(template, template.params(Mode="fleet", ReservedConcurrency=5))


def _placeholder_template(template: Template) -> dict[str, Any]:
    generated = template.props("MailboxSecret")["GenerateSecretString"]
    text = generated["SecretStringTemplate"]
    assert isinstance(text, str)
    placeholder: dict[str, Any] = json.loads(text)
    return placeholder


def test_the_placeholder_secret_is_valid_and_reads_as_not_configured(template: Template) -> None:
    generated = template.props("MailboxSecret")["GenerateSecretString"]
    # As Secrets Manager fills it in: the template plus a generated password.
    secret = _placeholder_template(template) | {generated["GenerateStringKey"]: "x" * 32}
    config = MailboxConfig.from_secret(secret)
    assert config.configured is False
    # The same settings with a real host are a mailbox to poll.
    assert MailboxConfig.from_secret(secret | {"host": "pop.example.com"}).configured is True


def test_the_placeholder_secret_never_changes_under_a_deployed_stack(template: Template) -> None:
    assert _placeholder_template(template) == DEPLOYED_PLACEHOLDER


@pytest.mark.parametrize(
    ("host", "configured"),
    [
        ("pop3.example.invalid", False),
        ("POP3.Example.INVALID.", False),
        ("invalid", False),
        ("pop.example.com", True),
        ("invalid.example.com", True),  # a real domain that merely starts so
        ("pop.invalid-host.net", True),
    ],
)
def test_only_a_host_under_the_reserved_invalid_domain_is_a_placeholder(
    host: str, configured: bool
) -> None:
    secret = {"host": host, "username": "u", "password": "p"}
    assert MailboxConfig.from_secret(secret).configured is configured
