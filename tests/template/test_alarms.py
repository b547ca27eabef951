"""Alarms: everything that can go wrong is watched, and someone is told (docs/security.md)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from tests.support.cfn_template import MODES, Template

# Metrics Insights alarms evaluate at most the latest 3 hours; plain metric alarms 7 days.
INSIGHTS_WINDOW_S = 3 * 3600
ALARM_WINDOW_S = 7 * 86400
COMPARISONS = {
    "GreaterThanOrEqualToThreshold": lambda value, threshold: value >= threshold,
    "GreaterThanThreshold": lambda value, threshold: value > threshold,
    "LessThanThreshold": lambda value, threshold: value < threshold,
    "LessThanOrEqualToThreshold": lambda value, threshold: value <= threshold,
}


def _alarms(template: Template) -> dict[str, dict[str, Any]]:
    return template.of_type("AWS::CloudWatch::Alarm")


def _fires_at(props: dict[str, Any], value: float) -> bool:
    """Whether a datapoint of ``value`` breaches the alarm's threshold."""
    return bool(COMPARISONS[props["ComparisonOperator"]](value, props["Threshold"]))


def _insights_query(props: dict[str, Any]) -> str:
    (metric,) = props["Metrics"]
    assert metric["ReturnData"] is True
    return str(metric["Expression"])


def _schema(template: Template) -> str:
    """What the function's EMF metrics carry in Mode single: its namespace, {mailbox, service}."""
    env = template.props("FetchFunction")["Environment"]["Variables"]
    return f'FROM SCHEMA("{env["POWERTOOLS_METRICS_NAMESPACE"]}", mailbox, service)'


def _alarm_on(
    template: Template, subject: str, namespace: str, metric: str, dimension: Any
) -> dict[str, Any]:
    """The properties of the one alarm on ``namespace``/``metric`` of ``dimension``,
    which exists exactly when ``subject`` does."""
    (name,) = [
        name
        for name, alarm in _alarms(template).items()
        if alarm["Properties"].get("Namespace") == namespace
        and alarm["Properties"].get("MetricName") == metric
        and [d["Value"] for d in alarm["Properties"]["Dimensions"]] == [dimension]
    ]
    alarm = template.resources[name]
    assert alarm.get("Condition") == template.resources[subject].get("Condition"), name
    # The first one is trouble: it fires at 1, not at 0.
    assert _fires_at(alarm["Properties"], 1), name
    assert not _fires_at(alarm["Properties"], 0), name
    properties: dict[str, Any] = alarm["Properties"]
    return properties


def test_every_alarm_notifies_the_topic_when_one_is_given(template: Template) -> None:
    pattern = re.compile(template.parameters["AlarmTopicArn"]["AllowedPattern"])
    assert pattern.fullmatch(template.params()["AlarmTopicArn"])
    assert pattern.fullmatch("arn:aws:sns:eu-west-1:123456789012:pop3-alarms")
    assert not pattern.fullmatch("arn:aws:sqs:eu-west-1:123456789012:pop3-alarms")
    for params in template.cases():
        topic = params["AlarmTopicArn"]
        for name, alarm in _alarms(template).items():
            props = template.resolve(alarm["Properties"], params)
            for actions in ("AlarmActions", "OKActions"):
                assert props.get(actions) == ([topic] if topic else None), (name, actions)
            assert props.get("ActionsEnabled", True) is True, name


def test_every_alarm_says_what_happened_and_how_to_read_silence(template: Template) -> None:
    for name, alarm in _alarms(template).items():
        props = alarm["Properties"]
        assert props["AlarmDescription"], name
        assert props["TreatMissingData"] in {"breaching", "notBreaching"}, name


def test_no_alarm_uses_search(template: Template) -> None:
    # SEARCH expressions cannot back an alarm; Metrics Insights queries can.
    for name, alarm in _alarms(template).items():
        for metric in alarm["Properties"].get("Metrics", []):
            assert "SEARCH(" not in str(metric.get("Expression", "")).upper(), name


@pytest.mark.parametrize("function", ["FetchFunction", "ReconcileFunction"])
def test_every_function_has_an_errors_alarm_that_fires_on_one_error(
    template: Template, function: str
) -> None:
    props = _alarm_on(template, function, "AWS/Lambda", "Errors", {"Ref": function})
    assert props["Statistic"] == "Sum"
    assert props["TreatMissingData"] == "notBreaching", "no invocation is no error"


def test_every_dead_letter_queue_has_an_alarm_that_fires_on_one_message(
    template: Template,
) -> None:
    dead_letter_queues = set(template.dead_letter_queues().values())
    assert dead_letter_queues
    for dlq in dead_letter_queues:
        queue_name = {"Fn::GetAtt": [dlq, "QueueName"]}
        visible = "ApproximateNumberOfMessagesVisible"
        props = _alarm_on(template, dlq, "AWS/SQS", visible, queue_name)
        assert props["Statistic"] == "Maximum"


def test_a_fleet_wide_alarm_sees_mail_stop_flowing(template: Template) -> None:
    alarm = template.resources["NoCompletedRunsAlarm"]
    props = alarm["Properties"]
    # One aggregate series: grouped by mailbox, a mailbox that never completes
    # would have no series at all and could never breach.
    assert _insights_query(props) == f"SELECT SUM(RunsCompleted) {_schema(template)}"
    assert props["TreatMissingData"] == "breaching"
    assert _fires_at(props, 0)
    assert not _fires_at(props, 1)
    assert props["EvaluationPeriods"] == props["DatapointsToAlarm"] == {"Ref": "StaleAfterHours"}
    period = props["Metrics"][0]["Period"]
    hours = template.parameters["StaleAfterHours"]
    for stale_after in range(hours["MinValue"], hours["MaxValue"] + 1):
        for schedule, mode in itertools.product(("true", "false"), MODES):
            params = template.params(
                StaleAfterHours=stale_after, ScheduleEnabled=schedule, Mode=mode
            )
            fits = stale_after * period <= INSIGHTS_WINDOW_S
            # Only while the schedule runs, only where Metrics Insights can look
            # back, and only where metrics carry the mailbox (Mode fleet has its own).
            expected = fits and schedule == "true" and mode == "single"
            assert template.exists("NoCompletedRunsAlarm", params) == expected, params


def test_a_named_mailbox_gets_its_own_staleness_alarm(template: Template) -> None:
    alarm = template.resources["MailboxStaleAlarm"]
    for params in template.cases():
        # Mode fleet has no per-mailbox metric to watch.
        expected = bool(params["MonitoredMailbox"]) and params["Mode"] == "single"
        assert template.exists("MailboxStaleAlarm", params) == expected
    props = alarm["Properties"]
    env = template.props("FetchFunction")["Environment"]["Variables"]
    assert props["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert props["MetricName"] == "RunsCompleted"
    # A plain metric alarm must name every dimension the metric carries.
    assert sorted(props["Dimensions"], key=lambda d: d["Name"]) == [
        {"Name": "mailbox", "Value": {"Ref": "MonitoredMailbox"}},
        {"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]},
    ]
    assert props["TreatMissingData"] == "breaching"
    assert _fires_at(props, 0)
    assert not _fires_at(props, 1)
    assert props["EvaluationPeriods"] == props["DatapointsToAlarm"] == {"Ref": "StaleAfterHours"}
    assert template.parameters["StaleAfterHours"]["MaxValue"] * props["Period"] <= ALARM_WINDOW_S
    mailbox = re.compile(template.parameters["MonitoredMailbox"]["AllowedPattern"])
    assert mailbox.fullmatch("")
    assert mailbox.fullmatch("support@example.com")
    assert not mailbox.fullmatch("a b")


@pytest.mark.parametrize(
    ("alarm", "metric", "tolerated"),
    [
        # A failed login or two can be a blip; the third in an hour is a pattern,
        # and repeated failures get accounts locked.
        ("LoginFailuresAlarm", "LoginFailed", 2),
        ("OversizedMessagesAlarm", "MessagesOversized", 0),
        ("QuarantinedMessagesAlarm", "MessagesQuarantined", 0),
    ],
)
def test_mailbox_events_alarm_per_mailbox(
    template: Template, alarm: str, metric: str, tolerated: int
) -> None:
    # Mode fleet has no mailbox dimension: the unhealthy mailboxes alarm counts these.
    assert template.resources[alarm]["Condition"] == "SingleMode"
    props = template.props(alarm)
    # One contributor per mailbox: the alarm says which mailbox.
    query = _insights_query(props)
    assert query == f"SELECT SUM({metric}) {_schema(template)} GROUP BY mailbox"
    assert props["TreatMissingData"] == "notBreaching", "no event is no trouble"
    assert not _fires_at(props, tolerated)
    assert _fires_at(props, tolerated + 1)


def test_conditions_compare_strings(template: Template) -> None:
    """``Ref`` gives a Number parameter as a string: a number in Fn::Equals never matches."""

    def equals(expr: Any) -> list[list[Any]]:
        if isinstance(expr, dict):
            found = [expr["Fn::Equals"]] if "Fn::Equals" in expr else []
            return found + [e for value in expr.values() for e in equals(value)]
        if isinstance(expr, list):
            return [e for value in expr for e in equals(value)]
        return []

    for name, condition in template.conditions.items():
        for operands in equals(condition):
            assert all(isinstance(o, str | dict) for o in operands), (name, operands)
