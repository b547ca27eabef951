"""The runtime's AWS SDK: too old for a feature the code uses, and the handlers do not import."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest

import pop3_ingest
from pop3_ingest.errors import ConfigError
from pop3_ingest.runtime_check import MINIMUM_BOTOCORE, SDK_FEATURES, check_botocore

PACKAGE = Path(pop3_ingest.__file__).parent


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@pytest.mark.parametrize("version", ["1.35.69", "1.44.8", "2.0.0", "1.35.69.dev0"])
def test_a_new_enough_botocore_passes(version: str) -> None:
    check_botocore(version)


def test_the_minimum_is_the_newest_feature() -> None:
    assert MINIMUM_BOTOCORE == (1, 35, 69)
    assert max(feature.since for feature in SDK_FEATURES) == MINIMUM_BOTOCORE


def test_one_release_short_names_the_feature_it_lacks() -> None:
    with pytest.raises(ConfigError) as caught:
        check_botocore("1.35.68")
    message = str(caught.value)
    assert "needs botocore >= 1.35.69" in message
    assert "has 1.35.68" in message
    assert "s3 PutObject.IfMatch" in message
    assert "IfNoneMatch" not in message  # 1.35.68 has that one


def test_an_older_runtime_names_every_missing_feature_and_no_other() -> None:
    with pytest.raises(ConfigError) as caught:
        check_botocore("1.34.145")
    message = str(caught.value)
    for feature in ("PutObject.IfNoneMatch", "CompleteMultipartUpload.IfNoneMatch", "IfMatch"):
        assert feature in message
    assert "BatchGetSecretValue" not in message  # since 1.32.7
    assert "scheduler" not in message


@pytest.mark.parametrize("version", ["", "unknown", "v1"])
def test_an_unreadable_version_is_said_so(version: str) -> None:
    with pytest.raises(ConfigError, match="cannot read the runtime's botocore version"):
        check_botocore(version)


def test_every_feature_is_in_the_installed_sdk_and_used_by_the_code() -> None:
    session = botocore.session.get_session()
    source = "\n".join(path.read_text(encoding="utf-8") for path in PACKAGE.rglob("*.py"))
    for feature in SDK_FEATURES:
        operation = session.get_service_model(feature.service).operation_model(feature.operation)
        if feature.member is not None:
            assert operation.input_shape is not None
            assert feature.member in operation.input_shape.members, feature
            assert f'"{feature.member}"' in source or f"{feature.member}=" in source, feature
        else:
            assert f".{_snake(feature.operation)}(" in source, feature


def _import_handler(botocore_version: str | None) -> subprocess.CompletedProcess[str]:
    """Import the fetch handler in a fresh interpreter, as Lambda does, with botocore's
    version patched to ``botocore_version`` (None: as installed)."""
    patch = "" if botocore_version is None else f"botocore.__version__ = {botocore_version!r}; "
    code = f"import botocore; {patch}import pop3_ingest.handlers.fetch"
    env = os.environ | {"POWERTOOLS_TRACE_DISABLED": "true"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )


def test_the_handlers_refuse_to_import_on_an_old_runtime() -> None:
    old = _import_handler("1.34.145")
    assert old.returncode != 0
    assert "ConfigError: pop3-ingest needs botocore >= 1.35.69" in old.stderr
    assert "the Lambda runtime has 1.34.145" in old.stderr
    # The same import on the installed SDK goes through.
    current = _import_handler(None)
    assert current.returncode == 0, current.stderr
