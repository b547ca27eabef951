"""Every alarm says what to do next, with commands that work, and has a runbook."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
from tests.support.cfn_template import REPO_ROOT, Template

from pop3_ingest_cli.main import build_parser

OPERATIONS = REPO_ROOT / "docs" / "operations.md"
README = REPO_ROOT / "README.md"
DESCRIPTION_LIMIT = 1024  # CloudWatch's AlarmDescription
LONGEST_STACK_NAME = "s" * 128
# Values that stand in for the placeholders an operator fills in.
FILLED = {
    "<mailbox>": "support",
    "<secret>": "pop3/support",
    "<digest>": "3f2a" * 16,
    "<uidl>": "000001a2b3c4",
    "<time>": "2026-11-26T08:00:00Z",
}


def _alarms(template: Template) -> dict[str, dict[str, Any]]:
    return template.of_type("AWS::CloudWatch::Alarm")


def _text(value: Any) -> str:
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    assert isinstance(text, str), value
    return text


def _slug(template: Template, alarm: str) -> str:
    """The alarm's name without the stack's prefix or a parameter's suffix: its runbook."""
    name = _text(template.props(alarm)["AlarmName"])
    return re.sub(r"-?\$\{[^}]+\}-?", "", name.replace("${AWS::StackName}-", "", 1))


def _runbooks() -> str:
    text = OPERATIONS.read_text(encoding="utf-8")
    assert "\n## Runbooks\n" in text, "docs/operations.md has a Runbooks section"
    return text.split("\n## Runbooks\n", 1)[1].split("\n## ", 1)[0]


def _commands(text: str) -> list[str]:
    """Every `pop3-ingest ...` command in ``text``: quoted inline, or a line of a code block."""
    quoted = re.findall(r"`(pop3-ingest [^`]+)`", text)
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    lines = [line.split(" #", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return quoted + [line for line in lines if line.startswith("pop3-ingest ")]


def _parses(command: str) -> None:
    for placeholder, value in FILLED.items():
        command = command.replace(placeholder, value)
    command = re.sub(r"\$\{[^}]+\}", "stack", command).replace("<stack>", "stack")
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"the CLI refuses: {command}") from exc


def test_every_alarm_says_what_to_do_next_and_where_its_runbook_is(template: Template) -> None:
    for name in _alarms(template):
        description = _text(template.props(name)["AlarmDescription"])
        assert "Next: " in description, name
        next_step = description.split("Next: ", 1)[1]
        assert re.search(r"`(pop3-ingest|aws) [^`]+`", next_step), f"{name}: no command"
        assert f"Runbook: docs/operations.md#{_slug(template, name)}" in description, name


def test_every_alarm_has_a_runbook(template: Template) -> None:
    headings = set(re.findall(r"^### (\S+)$", _runbooks(), re.MULTILINE))
    wanted = {_slug(template, name) for name in _alarms(template)}
    assert wanted <= headings, wanted - headings
    assert headings <= wanted, f"runbooks for no alarm: {headings - wanted}"


def test_the_login_failure_alarm_says_how_to_resume(template: Template) -> None:
    description = _text(template.props("LoginFailuresAlarm")["AlarmDescription"])
    assert "pop3-ingest resume --stack-name ${AWS::StackName} --mailbox <mailbox>" in description


def test_every_description_fits_cloudwatch_with_the_longest_stack_name(
    template: Template,
) -> None:
    long_values = {name: "x" * 128 for name in template.parameters}
    for name in _alarms(template):
        text = _text(template.props(name)["AlarmDescription"])
        filled = text.replace("${AWS::StackName}", LONGEST_STACK_NAME)
        # A resource's name or ARN stands in at the longest a queue's ARN gets (about 130).
        filled = re.sub(r"\$\{[^}]+\}", lambda m: long_values.get(m[0][2:-1], "y" * 130), filled)
        assert len(filled) <= DESCRIPTION_LIMIT, (name, len(filled))


@pytest.mark.parametrize("source", ["alarms", "runbooks", "readme"])
def test_every_quoted_cli_command_is_one_the_cli_accepts(template: Template, source: str) -> None:
    if source == "alarms":
        text = " ".join(
            _text(template.props(name)["AlarmDescription"]) for name in _alarms(template)
        )
    elif source == "runbooks":
        text = _runbooks()
    else:  # the deploy steps
        text = README.read_text(encoding="utf-8").split("\n## Deploy", 1)[1].split("\n## ", 1)[0]
    commands = _commands(text)
    assert commands, source
    for command in commands:
        _parses(command)
