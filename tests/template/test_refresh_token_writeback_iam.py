"""IAM for writing back a rotated refresh token: the mailbox's own secret, nothing else."""

from __future__ import annotations

from tests.support.cfn_template import Template

PUT = "secretsmanager:PutSecretValue"
GET = "secretsmanager:GetSecretValue"
ACCOUNT_SECRETS = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:*"


def test_mode_single_writes_only_the_secret_it_reads_by_default(template: Template) -> None:
    secret_id = template.props("FetchFunction")["Environment"]["Variables"]["SECRET_ID"]
    puts = template.allowed("FetchFunction")[PUT]
    assert [resource for condition, resource in puts if condition is None] == [secret_id]
    # MailboxSecret when the stack makes one, else ExistingSecretArn: never a pattern.
    assert secret_id == {
        "Fn::If": ["CreateSecret", {"Ref": "MailboxSecret"}, {"Ref": "ExistingSecretArn"}]
    }


def test_the_extra_secrets_are_read_but_never_written(template: Template) -> None:
    puts = template.allowed("FetchFunction")[PUT]
    assert "HasExtraSecrets" not in {condition for condition, _ in puts}
    assert {"Ref": "ExtraSecretArnPattern"} not in [resource for _, resource in puts]


def test_mode_fleet_writes_only_secrets_carrying_the_tag_it_reads_by(template: Template) -> None:
    fleet = [g for g in template.grants("FetchFunction") if g.condition == "FleetMode"]
    (writing,) = [g for g in fleet if PUT in g.actions]
    (reading,) = [g for g in fleet if GET in g.actions]
    assert writing.actions == [PUT], "a statement of its own"
    assert writing.resources == [{"Fn::Sub": ACCOUNT_SECRETS}]
    assert writing.statement["Condition"] == reading.statement["Condition"]
    assert "secretsmanager:ResourceTag/" in str(writing.statement["Condition"])


def test_the_reconciler_writes_no_secret(template: Template) -> None:
    assert PUT not in template.allowed("ReconcileFunction")
