"""``--stack-name``: where a deployment keeps its mail, read from its CloudFormation stack.

One DescribeStacks call gives the stack's outputs and parameters; options
given on the command line win over them, so ``--stack-name prod --bucket
other`` reads everything from the stack but the bucket.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from pop3_ingest.config import DEFAULT_KEY_PREFIX
from pop3_ingest.errors import ConfigError
from pop3_ingest_cli.aws import Aws, normalize_prefix

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient

# Field of Deployment -> the stack output that holds it (template.yaml, Outputs).
OUTPUTS = {
    "bucket": "BucketName",
    "queue_url": "QueueUrl",
    "key_prefix": "KeyPrefix",
    "function_name": "FunctionName",
    "mode": "Mode",
    "secret_id": "SecretArn",  # nosec B105 - an output's name, not a secret
    "jobs_queue_url": "JobsQueueUrl",
    "schedule_group": "ScheduleGroupName",
    "jobs_queue_arn": "JobsQueueArn",
    "scheduler_role_arn": "SchedulerRoleArn",
}
# ... or the stack parameter, where no output holds it.
PARAMETERS = {
    "key_prefix": "KeyPrefix",
    "mode": "Mode",
    "stale_after_hours": "StaleAfterHours",
}
# The option that names each field, for the message when it is missing.
OPTION_OF = {
    "bucket": "--bucket",
    "queue_url": "--queue-url",
    "function_name": "--function-name",
    "jobs_queue_url": "--jobs-queue-url",
    "secret_id": "--secret-id",  # nosec B105 - an option's name
}


@dataclass(frozen=True)
class Deployment:
    """A deployment's names, as far as the stack and the options give them."""

    bucket: str | None = None
    queue_url: str | None = None
    key_prefix: str | None = None
    function_name: str | None = None
    mode: str | None = None
    secret_id: str | None = None
    jobs_queue_url: str | None = None
    schedule_group: str | None = None
    jobs_queue_arn: str | None = None
    scheduler_role_arn: str | None = None
    stale_after_hours: str | None = None
    stack_name: str | None = None

    @property
    def prefix(self) -> str:
        """The function's KEY_PREFIX, normalised (default ``mail/``)."""
        return normalize_prefix(
            self.key_prefix if self.key_prefix is not None else DEFAULT_KEY_PREFIX
        )

    @property
    def fleet(self) -> bool:
        return self.mode == "fleet"

    def need(self, name: str) -> str:
        """The field's value, or a ConfigError naming the option that gives it."""
        value = getattr(self, name)
        if value:
            return str(value)
        option = OPTION_OF.get(name, f"--{name.replace('_', '-')}")
        hint = f" (the stack {self.stack_name!r} has no output for it)" if self.stack_name else ""
        raise ConfigError(f"{option} or --stack-name is required{hint}")


def stack_values(client: CloudFormationClient, stack_name: str) -> dict[str, str]:
    """The Deployment fields the stack gives: outputs first, then parameters."""
    try:
        stacks = client.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in error.get("Message", ""):
            region = client.meta.region_name
            raise ConfigError(f"no stack {stack_name!r} in region {region}") from None
        raise
    if not stacks:
        raise ConfigError(f"no stack {stack_name!r}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    parameters = {
        p["ParameterKey"]: p.get("ResolvedValue") or p.get("ParameterValue", "")
        for p in stacks[0].get("Parameters", [])
    }
    values = {field: parameters[name] for field, name in PARAMETERS.items() if name in parameters}
    values.update((field, outputs[name]) for field, name in OUTPUTS.items() if name in outputs)
    return values


def deployment(args: argparse.Namespace, aws: Aws) -> Deployment:
    """The stack's names (with ``--stack-name``), the options given over them."""
    stack_name: str | None = getattr(args, "stack_name", None)
    values: dict[str, str | None] = {}
    if stack_name:
        values.update(stack_values(aws.cloudformation, stack_name))
    for field in fields(Deployment):
        given = getattr(args, field.name, None)
        if given is not None and field.name != "stack_name":
            values[field.name] = str(given)
    return Deployment(**values, stack_name=stack_name)
