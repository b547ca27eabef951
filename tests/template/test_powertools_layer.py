"""The Powertools layer the functions run with is the release the tests ran with."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from scripts.check_powertools_layer import locked_release, problems
from tests.support.cfn_template import REPO_ROOT, Template

LOCK = (REPO_ROOT / "requirements.lock").read_text(encoding="utf-8")


def _other_release(release: str) -> str:
    major, minor, patch = release.split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def _with_layers(document: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A copy of the template with ``old`` replaced by ``new`` in every function's layers."""
    changed = copy.deepcopy(document)
    for resource in changed["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            layers = json.dumps(resource["Properties"]["Layers"]).replace(old, new)
            resource["Properties"]["Layers"] = json.loads(layers)
    return changed


def test_the_template_resolves_the_layer_of_the_locked_release(template: Template) -> None:
    assert problems(template.document, LOCK) == []
    assert f"aws-lambda-powertools=={locked_release(LOCK)}" in LOCK


def test_a_lock_moved_to_another_release_fails_until_the_template_follows(
    template: Template,
) -> None:
    release = locked_release(LOCK)
    newer = _other_release(release)
    moved = LOCK.replace(f"aws-lambda-powertools=={release}", f"aws-lambda-powertools=={newer}")
    found = problems(template.document, moved)
    assert len(found) == len(template.functions())
    assert all(release in problem and newer in problem for problem in found), found
    # ... and passes once the template names the same release.
    assert problems(_with_layers(template.document, f"/{release}}}", f"/{newer}}}"), moved) == []


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("/arm64/", "/x86_64/", "x86_64/python3.12"),  # another platform's layer
        ("/python3.12/", "/python3.13/", "arm64/python3.13"),
        ("{{resolve:ssm:", "{{resolve:ssm-secure:", "no Powertools layer resolved"),
    ],
)
def test_a_layer_for_another_platform_or_none_at_all_is_refused(
    template: Template, old: str, new: str, says: str
) -> None:
    (problem,) = problems(_with_layers(template.document, old, new), LOCK)
    assert says in problem


def test_a_lock_without_one_pinned_powertools_is_refused(template: Template) -> None:
    (problem,) = problems(template.document, "boto3==1.44.8\n")
    assert "aws-lambda-powertools" in problem


def test_by_default_the_resolved_layer_runs_and_a_number_pins_another(template: Template) -> None:
    default = template.params()
    assert default["PowertoolsLayerVersion"] == "0"
    for function in template.functions():
        (layer,) = template.resolve(template.props(function)["Layers"], default)
        assert isinstance(layer, str), function
        assert layer.startswith("{{resolve:ssm:/aws/service/powertools/python/"), function
        (pinned,) = template.resolve(
            template.props(function)["Layers"], template.params(PowertoolsLayerVersion=34)
        )
        assert pinned["Fn::Sub"].endswith(":${PowertoolsLayerVersion}"), function
    changed = copy.deepcopy(template.document)
    changed["Parameters"]["PowertoolsLayerVersion"]["Default"] = 34
    (problem,) = problems(changed, LOCK)
    assert "PowertoolsLayerVersion" in problem


def test_make_template_runs_the_check() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\ntemplate: ", 1)[1].split("\n\n", 1)[0]
    assert "scripts/check_powertools_layer.py" in recipe
