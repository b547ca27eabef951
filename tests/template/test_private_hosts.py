"""Tenant-written secrets: private hosts stay refused unless the operator allows them."""

from __future__ import annotations

from tests.support.cfn_template import Template

from pop3_ingest.config import DEFAULT_ALLOW_PRIVATE_HOSTS, Settings


def test_private_hosts_are_refused_by_default_and_allowed_by_one_parameter(
    template: Template,
) -> None:
    param = template.parameters["AllowPrivateHosts"]
    assert sorted(param["AllowedValues"]) == ["false", "true"]
    assert param["Default"] == "false"
    # The function itself refuses them when the variable is missing.
    assert DEFAULT_ALLOW_PRIVATE_HOSTS is False
    for value in param["AllowedValues"]:
        env = {"BUCKET_NAME": "b", "QUEUE_URL": "q", "ALLOW_PRIVATE_HOSTS": value}
        assert Settings.from_env(env).allow_private_hosts is (value == "true")


def test_every_function_is_told_the_deployments_choice(template: Template) -> None:
    for function in template.functions():
        variables = template.props(function)["Environment"]["Variables"]
        assert variables.get("ALLOW_PRIVATE_HOSTS") == {"Ref": "AllowPrivateHosts"}, function
