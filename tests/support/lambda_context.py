"""A stand-in for the Lambda runtime's context object."""

from __future__ import annotations

import time
import uuid
from dataclasses import InitVar, dataclass, field

FUNCTION_NAME = "pop3-ingest-test"
FUNCTION_ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"


@dataclass
class FakeLambdaContext:
    """Carries what Powertools' ``inject_lambda_context`` reads, plus a real deadline.

    ``get_remaining_time_in_millis()`` counts down from ``remaining_ms`` given at
    creation, so deadline handling can be tested with short budgets.
    """

    remaining_ms: InitVar[int] = 300_000
    function_name: str = FUNCTION_NAME
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = FUNCTION_ARN
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = f"/aws/lambda/{FUNCTION_NAME}"
    log_stream_name: str = "2024/05/01/[$LATEST]0123456789abcdef"
    _deadline: float = field(init=False, repr=False)

    def __post_init__(self, remaining_ms: int) -> None:
        self._deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# The name scripts and tests reach for first.
FakeContext = FakeLambdaContext
