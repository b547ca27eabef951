"""Every scanner check the template skips says why, and the security sheet explains it."""

from __future__ import annotations

import re

from tests.support.cfn_template import REPO_ROOT, Template

SECURITY_DOC = REPO_ROOT / "docs" / "security.md"
# A reason, not a placeholder: at least a sentence.
SHORTEST_REASON = 40
# Never skipped: the checks this template exists to pass (encryption, TLS,
# public access, IAM least privilege).
NEVER_SKIPPED = {
    "CKV_AWS_19",
    "CKV_AWS_21",
    "CKV_AWS_53",
    "CKV_AWS_54",
    "CKV_AWS_55",
    "CKV_AWS_56",
    "CKV_AWS_62",
    "CKV_AWS_63",
    "CKV_AWS_66",
    "CKV_AWS_111",
    "CKV_AWS_115",
}


def test_every_checkov_skip_carries_its_reason_and_is_explained(template: Template) -> None:
    doc = SECURITY_DOC.read_text(encoding="utf-8")
    for resource, check, reason in template.checkov_skips():
        assert re.fullmatch(r"CKV2?_AWS_\d+", check), (resource, check)
        assert len(reason) >= SHORTEST_REASON, f"{resource}: skip {check} needs its reason"
        assert check in doc, f"{check} (skipped on {resource}) is not explained in {SECURITY_DOC}"
        assert f"`{resource}`" in doc, f"{SECURITY_DOC.name} does not say {check} skips {resource}"


def test_every_cfn_lint_rule_ignored_is_explained(template: Template) -> None:
    doc = SECURITY_DOC.read_text(encoding="utf-8")
    for place, rule in template.cfn_lint_skips():
        assert re.fullmatch(r"[EWI]\d{4}", rule), (place, rule)
        assert rule in doc, (
            f"cfn-lint {rule} (ignored on {place}) is not explained in {SECURITY_DOC}"
        )


def test_the_checks_that_guard_the_mail_are_never_skipped(template: Template) -> None:
    assert not NEVER_SKIPPED & {check for _, check, _ in template.checkov_skips()}
