"""The run states' old versions: kept a day, not NoncurrentVersionRetentionDays.

A state is rewritten whenever it changes; on the versioned bucket each write
would otherwise keep the previous version for as long as mail is kept.
"""

from __future__ import annotations

from typing import Any

from tests.support.cfn_template import Template

from pop3_ingest.domain.message import object_key
from pop3_ingest.integrations.s3_state import S3StateStore


def _state_rules(template: Template, params: dict[str, str]) -> list[dict[str, Any]]:
    rules = template.resolve(
        template.props("MailBucket")["LifecycleConfiguration"]["Rules"], params
    )
    return [r for r in rules if isinstance(r.get("Prefix"), dict)]


def _prefix(rule: dict[str, Any], params: dict[str, str]) -> str:
    text: str = rule["Prefix"]["Fn::Sub"]
    return text.replace("${KeyPrefix}", params["KeyPrefix"])


def test_old_versions_of_run_states_expire_after_a_day(template: Template) -> None:
    for params in template.cases():
        (rule,) = _state_rules(template, params)
        assert rule["Status"] == "Enabled"
        assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
        assert set(rule) == {"Id", "Status", "Prefix", "NoncurrentVersionExpiration"}


def test_the_rule_covers_every_state_and_no_mail(template: Template) -> None:
    for params in template.cases():
        (rule,) = _state_rules(template, params)
        prefix = _prefix(rule, params)
        store = S3StateStore(None, "bucket", params["KeyPrefix"])  # type: ignore[arg-type]
        assert store.state_key("support").startswith(prefix)
        # Quarantine records and stored mail keep their versions as long as before.
        assert not store.quarantine_key("support", "a" * 40).startswith(prefix)
        assert not object_key(params["KeyPrefix"], "support", "uidl-1").startswith(prefix)
