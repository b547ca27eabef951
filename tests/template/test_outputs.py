"""Outputs: what a consumer stack and the operator need, each exported by a stable name."""

from __future__ import annotations

import re

from tests.support.cfn_template import REPO_ROOT, Template, getatt, refs

README = REPO_ROOT / "README.md"
# What a consumer stack subscribes with, and where to read the fetch function's runs.
WANTED = {
    "BucketName": {"Ref": "MailBucket"},
    "BucketArn": {"Fn::GetAtt": ["MailBucket", "Arn"]},
    "QueueUrl": {"Ref": "PointerQueue"},
    "QueueArn": {"Fn::GetAtt": ["PointerQueue", "Arn"]},
    "DeadLetterQueueUrl": {"Ref": "PointerDeadLetterQueue"},
    "DeadLetterQueueArn": {"Fn::GetAtt": ["PointerDeadLetterQueue", "Arn"]},
    "KeyPrefix": {"Ref": "KeyPrefix"},
}


def _normalised(value: object) -> object:
    """``Fn::GetAtt`` written as "A.B" or ["A", "B"] compares equal."""
    found = getatt(value)
    return {"Fn::GetAtt": list(found)} if found else value


def test_consumers_find_the_bucket_queues_and_log_group(template: Template) -> None:
    for name, value in WANTED.items():
        assert _normalised(template.outputs[name]["Value"]) == value, name
        assert "Condition" not in template.outputs[name], f"{name} exists in both Modes"
    # The dead-letter queue named is the pointer queue's own.
    assert template.dead_letter_queues()["PointerQueue"] == "PointerDeadLetterQueue"
    # The log group is the one the fetch function writes to.
    log_group = template.props("FetchFunction")["LoggingConfig"]["LogGroup"]
    assert template.outputs["LogGroupName"]["Value"] == log_group


def test_every_output_is_exported_as_stack_name_dash_output_name(template: Template) -> None:
    names = []
    for name, output in template.outputs.items():
        export = output.get("Export", {}).get("Name")
        assert export == {"Fn::Sub": f"${{AWS::StackName}}-{name}"}, name
        names.append(name)
    assert len(set(names)) == len(names)


def test_every_output_exists_whenever_what_it_names_does(template: Template) -> None:
    pseudo = {"AWS::StackName", "AWS::Region", "AWS::AccountId", "AWS::Partition"}
    for params in template.cases():
        existing = template.existing(params) | set(template.parameters) | pseudo
        for name in template.outputs:
            if not template.exists(name, params):
                continue
            value = template.resolve(template.outputs[name]["Value"], params)
            assert set(refs(value)) <= existing, (name, params["Mode"])


def test_the_readme_reads_only_outputs_the_stack_has(template: Template) -> None:
    text = README.read_text(encoding="utf-8")
    assert "MailboxSecretArn" not in text
    # The deploy steps read outputs with "$(output <Name>)" (a describe-stacks query).
    used = set(re.findall(r"\$\(output ([A-Za-z0-9]+)\)", text))
    assert {"SecretArn", "BucketName"} <= used
    assert used <= set(template.outputs), used - set(template.outputs)
    assert "aws cloudformation describe-stacks" in text
    assert "Stacks[0].Outputs" in text
