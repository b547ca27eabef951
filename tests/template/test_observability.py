"""Mode fleet's observability: the same few metrics and alarms at any fleet size.

No alarm or graph reads a metric by mailbox (Mode fleet emits none); the one
alarm on unhealthy mailboxes counts the mailboxes of the "run finished" lines
the code marks unhealthy; the dashboard graphs every outcome the code counts.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.support.cfn_template import Template, refs

from pop3_ingest.handlers.outcomes import UNHEALTHY, Outcome

# The longest polling interval a mailbox may have (issue 10: 1-60 minutes): a
# period this long sees every mailbox run at least once.
LONGEST_INTERVAL_S = 3600
# Plain metric alarms look back at most 7 days.
ALARM_WINDOW_S = 7 * 86400
COMPARISONS = {
    "GreaterThanThreshold": lambda value, threshold: value > threshold,
    "LessThanThreshold": lambda value, threshold: value < threshold,
}


def _fleet(template: Template, **values: Any) -> dict[str, str]:
    return template.params(Mode="fleet", **values)


def _env(template: Template) -> dict[str, Any]:
    variables: dict[str, Any] = template.props("FetchFunction")["Environment"]["Variables"]
    return variables


def _subbed(value: Any) -> str:
    """An ``Fn::Sub`` string with each ``${Name}`` or ``${Name.Attribute}`` left as its name."""
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    assert isinstance(text, str), value
    return re.sub(r"\$\{([^}!]+)\}", lambda match: match.group(1), text)


def _fires_at(props: dict[str, Any], value: float, threshold: float) -> bool:
    return bool(COMPARISONS[props["ComparisonOperator"]](value, threshold))


def _dashboard_metrics(body: dict[str, Any]) -> list[list[Any]]:
    return [
        metric for widget in body["widgets"] for metric in widget["properties"].get("metrics", [])
    ]


def test_the_function_knows_its_mode(template: Template) -> None:
    assert _env(template)["MODE"] == {"Ref": "Mode"}


def test_in_fleet_mode_no_alarm_reads_a_metric_by_mailbox(template: Template) -> None:
    env = _env(template)
    for params in template.cases():
        if params["Mode"] != "fleet":
            continue
        for name in template.existing(params):
            if template.resources[name]["Type"] != "AWS::CloudWatch::Alarm":
                continue
            props = template.resolve(template.props(name), params)
            expressions = [str(m.get("Expression", "")) for m in props.get("Metrics", [])]
            assert not [e for e in expressions if "mailbox" in e], name
            if props.get("Namespace") == env["POWERTOOLS_METRICS_NAMESPACE"]:
                # What the function emits in Mode fleet: the service dimension only.
                assert props["Dimensions"] == [
                    {"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}
                ], name


def test_a_fleet_alarm_sees_mail_stop_flowing_for_any_stale_window(template: Template) -> None:
    name = "FleetNoCompletedRunsAlarm"
    props = template.props(name)
    assert props["MetricName"] == "RunsCompleted" == Outcome.COMPLETED.metric
    assert props["Statistic"] == "Sum"
    # A fleet that stops completing runs has no datapoints at all.
    assert props["TreatMissingData"] == "breaching"
    assert _fires_at(props, 0, props["Threshold"])
    assert not _fires_at(props, 1, props["Threshold"])
    assert props["EvaluationPeriods"] == props["DatapointsToAlarm"] == {"Ref": "StaleAfterHours"}
    hours = template.parameters["StaleAfterHours"]
    assert hours["MaxValue"] * props["Period"] <= ALARM_WINDOW_S
    for params in template.cases():
        expected = params["Mode"] == "fleet" and params["ScheduleEnabled"] == "true"
        assert template.exists(name, params) == expected, params
    for stale_after in range(hours["MinValue"], hours["MaxValue"] + 1):
        assert template.exists(name, _fleet(template, StaleAfterHours=stale_after))


def test_one_alarm_counts_unhealthy_mailboxes_at_any_size(template: Template) -> None:
    props = template.props("UnhealthyMailboxesAlarm")
    for params in template.cases():
        expected = params["Mode"] == "fleet"
        assert template.exists("UnhealthyMailboxesAlarm", params) == expected
        assert template.exists("UnhealthyMailboxesRule", params) == expected
    (metric,) = props["Metrics"]
    assert metric["ReturnData"] is True
    # How many distinct mailboxes, not a series per mailbox.
    expression = _subbed(metric["Expression"])
    assert (
        expression == 'INSIGHT_RULE_METRIC("UnhealthyMailboxesRule.RuleName", "UniqueContributors")'
    )
    assert metric["Period"] >= LONGEST_INTERVAL_S, "a mailbox polled hourly must not flicker"
    assert props["Threshold"] == {"Ref": "UnhealthyMailboxThreshold"}
    threshold = template.parameters["UnhealthyMailboxThreshold"]
    assert threshold["Type"] == "Number"
    assert threshold["MinValue"] == 0
    for tolerated in (0, 1, 50):
        assert not _fires_at(props, tolerated, tolerated)
        assert _fires_at(props, tolerated + 1, tolerated)
    assert props["TreatMissingData"] == "notBreaching", "no unhealthy run is no trouble"


def test_the_rule_counts_the_mailboxes_the_code_marks_unhealthy(template: Template) -> None:
    props = template.props("UnhealthyMailboxesRule")
    assert props["RuleState"] == "ENABLED"
    body = json.loads(_subbed(props["RuleBody"]))
    assert body["Schema"] == {"Name": "CloudWatchLogRule", "Version": 1}
    # The function's own log group, and no other (the rule bills every matching line).
    logging_config = template.props("FetchFunction")["LoggingConfig"]
    assert logging_config["LogGroup"] == {"Ref": "FetchLogGroup"}
    assert body["LogGroupNames"] == ["FetchLogGroup"]
    assert body["LogFormat"] == "JSON"
    contribution = body["Contribution"]
    assert contribution["Keys"] == ["$.mailbox"], "one contributor per mailbox"
    filters = {f["Match"]: f for f in contribution["Filters"]}
    assert filters["$.message"] == {"Match": "$.message", "In": ["run finished"]}
    assert sorted(filters["$.health"]["In"]) == sorted(UNHEALTHY)
    assert body["AggregateOn"] == "Count"


def test_saved_queries_read_the_run_finished_lines(template: Template) -> None:
    queries = template.of_type("AWS::Logs::QueryDefinition")
    assert len(queries) >= 2
    for name, query in queries.items():
        assert "Condition" not in query, "Mode single has the same log lines"
        props = query["Properties"]
        assert props["LogGroupNames"] == [{"Ref": "FetchLogGroup"}], name
        assert _subbed(props["Name"]).startswith("AWS::StackName/"), name
    texts = [props["Properties"]["QueryString"] for props in queries.values()]
    unhealthy = [text for text in texts if '"run finished"' in text and "health" in text]
    assert unhealthy, "a query lists the unhealthy mailboxes"
    assert [text for text in texts if "by outcome" in text], "a query counts runs by outcome"


def test_the_dashboard_graphs_every_outcome_without_a_mailbox(template: Template) -> None:
    dashboard = template.resources["FleetDashboard"]
    assert dashboard["Condition"] == "FleetMode"
    body = json.loads(_subbed(dashboard["Properties"]["DashboardBody"]))
    env = _env(template)
    namespace, service = env["POWERTOOLS_METRICS_NAMESPACE"], env["POWERTOOLS_SERVICE_NAME"]
    ours = [m for m in _dashboard_metrics(body) if m[0] == namespace]
    for metric in ours:
        assert metric[2:] == ["service", service], metric
    graphed = {metric[1] for metric in ours}
    assert {outcome.metric for outcome in Outcome} <= graphed
    insight = [
        w["properties"]["insightRule"]
        for w in body["widgets"]
        if "insightRule" in w.get("properties", {})
    ]
    assert [rule["ruleName"] for rule in insight] == ["UnhealthyMailboxesRule.RuleName"]
    alarms = [a for w in body["widgets"] if w["type"] == "alarm" for a in w["properties"]["alarms"]]
    assert "UnhealthyMailboxesAlarm.Arn" in alarms
    # Everything it names exists whenever the dashboard does.
    for params in template.cases():
        if template.exists("FleetDashboard", params):
            named = set(refs(dashboard["Properties"]))
            assert named <= template.existing(params) | {"AWS::Region", "AWS::StackName"}
