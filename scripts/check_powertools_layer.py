"""Check that the deployed Powertools layer is the Powertools the tests ran with.

The functions take Powertools from AWS's published Lambda layer, not from the
artifact. template.yaml resolves that layer from the public SSM parameter
AWS writes for each release,

    /aws/service/powertools/python/<architecture>/<python>/<release>

(docs: https://docs.aws.amazon.com/powertools/python/latest/getting-started/install/,
"Using SSM Parameter Store"), and requirements.lock pins the release the tests
installed. This check fails `make test` when the two disagree, or when a
parameter names another architecture or Python than its function runs.

Why the parameter rather than a layer number kept here in a table: AWS maps
each release to its layer version, and nothing in this repository could check a
hand-kept number (the layer numbers are not the release numbers and have
skipped). The cost: a deploy needs the parameter to exist in its region; the
PowertoolsLayerVersion parameter pins a number for a region where it does not
(docs/security.md, "The function").

Run: python scripts/check_powertools_layer.py [template.yaml [requirements.lock]];
exits 1 and says what to change.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "aws-lambda-powertools"
_PARAMETER = re.compile(
    r"\{\{resolve:ssm:/aws/service/powertools/python/"
    r"(?P<architecture>[^/]+)/(?P<python>[^/]+)/(?P<release>[^/}]+)\}\}"
)
_PINNED = re.compile(rf"^{re.escape(PACKAGE)}(?:\[[^\]]*\])?==(?P<release>\S+)", re.MULTILINE)


@dataclass(frozen=True)
class LayerReference:
    """One function's Powertools layer as the template resolves it by default."""

    function: str
    architecture: str
    python: str
    release: str


def locked_release(lock_text: str) -> str:
    """The Powertools release requirements.lock pins."""
    found = _PINNED.findall(lock_text)
    if len(found) != 1:
        raise ValueError(f"requirements.lock must pin {PACKAGE} exactly once (==X.Y.Z)")
    return str(found[0])


def layer_references(template: dict[str, Any]) -> list[LayerReference]:
    """Every function's default Powertools layer (the SSM parameter it resolves)."""
    references = []
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        found = _PARAMETER.search(json.dumps(props.get("Layers", [])))
        if found is None:
            raise ValueError(
                f"{name}: no Powertools layer resolved from "
                "/aws/service/powertools/python/<architecture>/<python>/<release>"
            )
        (architecture,) = props["Architectures"]
        runtime = str(props["Runtime"])
        if found["architecture"] != architecture or found["python"] != runtime:
            raise ValueError(
                f"{name}: its layer parameter is for {found['architecture']}/{found['python']}, "
                f"but it runs {architecture}/{runtime}"
            )
        references.append(LayerReference(name, architecture, runtime, found["release"]))
    return references


def problems(template: dict[str, Any], lock_text: str) -> list[str]:
    """What is wrong, each as one sentence saying what to change (empty: nothing)."""
    try:
        locked = locked_release(lock_text)
        references = layer_references(template)
    except ValueError as exc:
        return [str(exc)]
    if not references:
        return ["template.yaml has no function to check"]
    default = str(template["Parameters"]["PowertoolsLayerVersion"].get("Default"))
    found = [
        f"{ref.function} resolves the Powertools {ref.release} layer, but requirements.lock "
        f"pins {PACKAGE}=={locked}: change the release in its SSM parameter path to {locked}"
        for ref in references
        if ref.release != locked
    ]
    if default != "0":
        found.append(
            f"PowertoolsLayerVersion defaults to {default}: the default must be 0, the layer "
            "of the locked release"
        )
    return found


def load_template(path: Path) -> dict[str, Any]:
    from cfnlint.decode.cfn_yaml import load

    # Through JSON: cfn-lint's node types become plain dicts, lists and strings.
    document: dict[str, Any] = json.loads(json.dumps(load(str(path))))
    return document


def main(argv: list[str]) -> int:
    template_path = Path(argv[0]) if argv else REPO_ROOT / "template.yaml"
    lock_path = Path(argv[1]) if len(argv) > 1 else REPO_ROOT / "requirements.lock"
    found = problems(load_template(template_path), lock_path.read_text(encoding="utf-8"))
    for problem in found:
        print(f"check_powertools_layer: {problem}", file=sys.stderr)
    if found:
        return 1
    print(f"check_powertools_layer: the layer is {PACKAGE} {locked_release(lock_path.read_text())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
