"""The SAM template as data, for tests that check its policy rather than its text.

:class:`Template` answers what CloudFormation would decide: which resources
exist for given parameter values, what a property resolves to, what an IAM
role is granted (and under which condition), and what a value refers to.
Loaded with cfn-lint's loader (it knows ``!Ref``, ``!Sub``, ...) as plain data.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfnlint.decode.cfn_yaml import load

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
NO_VALUE = {"Ref": "AWS::NoValue"}
# What the optional parameters are set to when a test turns a feature on.
FEATURE_VALUES = {
    "ExistingSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pop3/alice-AbCdEf",
    "ExtraSecretArnPattern": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pop3/*",
    "KmsKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "AlarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:pop3-alarms",
    "MonitoredMailbox": "support@example.com",
    "RetentionDays": "365",
    "ReservedConcurrency": "5",
    "ScheduleEnabled": "false",
    "StaleAfterHours": "24",
}
MODES = ("single", "fleet")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def branches(value: Any) -> Iterator[Any]:
    """Every concrete value an ``Fn::If`` may resolve to (``AWS::NoValue`` dropped)."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, when_true, when_false = value["Fn::If"]
        yield from branches(when_true)
        yield from branches(when_false)
    elif value != NO_VALUE:
        yield value


def refs(value: Any) -> Iterator[str]:
    """Names (resources, parameters, pseudo parameters) a value refers to."""
    if isinstance(value, list):
        for item in value:
            yield from refs(item)
    if not isinstance(value, dict):
        return
    for key, inner in value.items():
        if key == "Ref" and isinstance(inner, str):
            yield inner
        elif key == "Fn::GetAtt":
            yield (inner.split(".", 1) if isinstance(inner, str) else inner)[0]
        elif key == "Fn::Sub":
            text = inner if isinstance(inner, str) else inner[0]
            yield from (m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
            if not isinstance(inner, str):
                yield from refs(inner[1])
        else:
            yield from refs(inner)


def getatt(value: Any) -> tuple[str, str] | None:
    """(resource, attribute) of an ``Fn::GetAtt``, else None."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        att = value["Fn::GetAtt"]
        name, attribute = att.split(".", 1) if isinstance(att, str) else att
        return str(name), str(attribute)
    return None


@dataclass(frozen=True)
class Grant:
    """One IAM statement a role holds, and the condition of the policy holding it."""

    condition: str | None  # of the AWS::IAM::Policy; None for the role's own policies
    statement: dict[str, Any]

    @property
    def actions(self) -> list[str]:
        return [str(a) for a in as_list(self.statement["Action"])]

    @property
    def resources(self) -> list[Any]:
        """Every concrete resource value (each ``Fn::If`` branch)."""
        return [v for resource in as_list(self.statement["Resource"]) for v in branches(resource)]


class Template:
    """``template.yaml`` with CloudFormation's decisions made for given parameter values."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.parameters: dict[str, Any] = document["Parameters"]
        self.conditions: dict[str, Any] = document["Conditions"]
        self.resources: dict[str, Any] = document["Resources"]
        self.outputs: dict[str, Any] = document["Outputs"]

    # -- parameters and conditions -------------------------------------------------

    def params(self, **values: Any) -> dict[str, str]:
        """Parameter values as CloudFormation compares them (strings): defaults, then ``values``."""
        chosen = {name: str(p.get("Default", "")) for name, p in self.parameters.items()}
        chosen.update({name: str(value) for name, value in values.items()})
        return chosen

    def cases(self) -> Iterator[dict[str, str]]:
        """Parameter values worth checking: per Mode, the defaults, every optional
        feature alone, and all of them at once."""
        for mode in MODES:
            yield self.params(Mode=mode)
            for name, value in FEATURE_VALUES.items():
                yield self.params(Mode=mode, **{name: value})
            yield self.params(Mode=mode, **FEATURE_VALUES)

    def holds(self, condition: str, params: Mapping[str, str]) -> bool:
        return bool(self.evaluate({"Condition": condition}, params))

    def evaluate(self, expr: Any, params: Mapping[str, str]) -> Any:
        """A condition expression's value (Fn::Equals/Not/And/Or, Condition, Ref)."""
        if not isinstance(expr, dict) or len(expr) != 1:
            return expr
        ((fn, arg),) = expr.items()
        if fn == "Ref":
            return params[arg]
        if fn == "Condition":
            return self.evaluate(self.conditions[arg], params)
        values = [self.evaluate(a, params) for a in as_list(arg)]
        if fn == "Fn::Equals":
            return str(values[0]) == str(values[1])
        if fn == "Fn::Not":
            return not values[0]
        if fn == "Fn::And":
            return all(values)
        if fn == "Fn::Or":
            return any(values)
        raise AssertionError(f"cannot evaluate {fn}")

    def exists(self, name: str, params: Mapping[str, str]) -> bool:
        """Whether the resource (or output) is created with these parameter values."""
        item = self.resources.get(name) or self.outputs[name]
        condition = item.get("Condition")
        return condition is None or self.holds(condition, params)

    def existing(self, params: Mapping[str, str]) -> set[str]:
        return {name for name in self.resources if self.exists(name, params)}

    def resolve(self, value: Any, params: Mapping[str, str]) -> Any:
        """A property once every ``Fn::If`` is decided, parameter ``Ref``\\ s replaced
        (numbers as ints) and ``AWS::NoValue`` dropped (None at the top)."""
        if value == NO_VALUE:
            return None
        if isinstance(value, list):
            return [r for r in (self.resolve(v, params) for v in value) if r is not None]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return self.resolve(when_true if self.holds(name, params) else when_false, params)
        if set(value) == {"Ref"} and value["Ref"] in self.parameters:
            text = params[value["Ref"]]
            return int(text) if self.parameters[value["Ref"]]["Type"] == "Number" else text
        return {k: self.resolve(v, params) for k, v in value.items()}

    # -- resources -------------------------------------------------------------------

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {n: r for n, r in self.resources.items() if r["Type"] == resource_type}

    def props(self, name: str) -> dict[str, Any]:
        properties: dict[str, Any] = self.resources[name]["Properties"]
        return properties

    def dead_letter_queues(self) -> dict[str, str]:
        """queue -> its dead-letter queue, for every queue that redrives."""
        found = {}
        for name, queue in self.of_type("AWS::SQS::Queue").items():
            redrive = queue["Properties"].get("RedrivePolicy")
            if redrive is None:
                continue
            target = getatt(redrive["deadLetterTargetArn"])
            if target is None or target[1] != "Arn":
                raise AssertionError(f"{name} redrives to {redrive['deadLetterTargetArn']}")
            found[name] = target[0]
        return found

    def functions(self) -> list[str]:
        return list(self.of_type("AWS::Serverless::Function"))

    def role_of(self, function: str) -> str:
        """The logical ID of the function's role (its own, by ``Fn::GetAtt``)."""
        role = getatt(self.props(function)["Role"])
        if role is None or role[1] != "Arn":
            raise AssertionError(f"{function} must use a role of the stack, by its Arn")
        return role[0]

    def grants(self, function: str) -> list[Grant]:
        """Every statement the function's role may hold: the role's own policies and
        each AWS::IAM::Policy attached to it (with that policy's condition)."""
        return self.role_grants(self.role_of(function))

    def role_grants(self, role: str) -> list[Grant]:
        """Every statement a role of the stack may hold (see :meth:`grants`)."""
        documents = [
            (None, policy["PolicyDocument"]) for policy in self.props(role).get("Policies", [])
        ]
        for policy in self.of_type("AWS::IAM::Policy").values():
            if {"Ref": role} in as_list(policy["Properties"].get("Roles", [])):
                documents.append((policy.get("Condition"), policy["Properties"]["PolicyDocument"]))
        return [
            Grant(condition, statement)
            for condition, document in documents
            for statement in as_list(document["Statement"])
        ]

    def allowed(self, function: str) -> dict[str, list[tuple[str | None, Any]]]:
        """action -> [(policy condition, resource as written)] over the Allow statements."""
        by_action: dict[str, list[tuple[str | None, Any]]] = {}
        for grant in self.grants(function):
            if grant.statement["Effect"] != "Allow":
                continue
            for action in grant.actions:
                for resource in as_list(grant.statement["Resource"]):
                    by_action.setdefault(action, []).append((grant.condition, resource))
        return by_action

    def checkov_skips(self) -> list[tuple[str, str, str]]:
        """(resource, check id, reason) of every checkov skip."""
        return [
            (name, str(skip["id"]), str(skip.get("comment", "")))
            for name, resource in self.resources.items()
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
        ]

    def cfn_lint_skips(self) -> list[tuple[str, str]]:
        """(resource, or "template", rule id) of every cfn-lint rule ignored
        (``Metadata: cfn-lint: config: ignore_checks``)."""
        places = [("template", self.document), *self.resources.items()]
        return [
            (name, str(rule))
            for name, item in places
            for rule in item.get("Metadata", {})
            .get("cfn-lint", {})
            .get("config", {})
            .get("ignore_checks", [])
        ]


@functools.cache
def _document() -> str:
    # Round-trip through JSON: cfn-lint's node types become plain dicts, lists, strs.
    return json.dumps(load(str(TEMPLATE_PATH)))


def load_template() -> Template:
    """The template as it is on disk (parsed once per test run)."""
    return Template(json.loads(_document()))
