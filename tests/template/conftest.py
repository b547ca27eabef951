"""The template, parsed once for every policy check (tests/support/cfn_template.py)."""

from __future__ import annotations

import pytest
from tests.support.cfn_template import Template, load_template


@pytest.fixture(scope="session")
def template() -> Template:
    return load_template()
