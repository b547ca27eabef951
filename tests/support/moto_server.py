"""A moto server on 127.0.0.1 that boto3 and Powertools reach via ``AWS_ENDPOINT_URL``.

A real HTTP endpoint (rather than ``mock_aws``) exercises the code exactly as it
runs in Lambda: clients come from the SDK's standard configuration only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"

# Environment variables that could send SDK calls somewhere other than moto
# (a developer's profile, per-service endpoint overrides, real session tokens).
_LEAKY_ENV_PREFIXES = ("AWS_ENDPOINT_URL_",)
_LEAKY_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
)


def leaky_env_names(environ: MutableMapping[str, str]) -> list[str]:
    """Names in ``environ`` that must be removed for SDK calls to reach only moto."""
    return [n for n in environ if n in _LEAKY_ENV or n.startswith(_LEAKY_ENV_PREFIXES)]


@dataclass
class AwsResources:
    """Clients and the bucket/queue of one test, all pointing at the moto server."""

    moto: MotoServer
    s3: Any
    sqs: Any
    secretsmanager: Any
    bucket: str
    queue_url: str

    def put_secret(self, name: str, value: dict[str, Any] | str) -> str:
        """Store a mailbox secret as JSON; returns ``name`` (usable as SECRET_ID)."""
        self.moto.create_secret(name, value)
        return name

    def function_env(self, secret_id: str) -> dict[str, str]:
        """The function's own environment (docs/configuration.md) for this test."""
        return {"SECRET_ID": secret_id, "BUCKET_NAME": self.bucket, "QUEUE_URL": self.queue_url}

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        return sorted(
            obj["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        )

    def get_object(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        return {key: self.get_object(key) for key in self.keys(prefix)}

    def receive_all(self, *, delete: bool = True) -> list[dict[str, Any]]:
        """Drain the queue; returns the JSON-decoded message bodies in receive order."""
        bodies: list[dict[str, Any]] = []
        while True:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=300,  # never see the same message twice while draining
                MessageAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                if delete:
                    self.sqs.delete_message(
                        QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )


class MotoServer:
    """``with MotoServer() as moto: moto.apply_env(); ...``"""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self._endpoint_url: str | None = None
        self._clients: dict[str, Any] = {}
        # Empty config/credentials files isolate the tests from ~/.aws.
        self._aws_dir = Path(tempfile.gettempdir()) / f"pop3-ingest-aws-{uuid.uuid4().hex[:12]}"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Self:
        if self._endpoint_url is None:
            # werkzeug logs every request at INFO; that drowns test and demo output.
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            self._aws_dir.mkdir(mode=0o700, exist_ok=True)
            (self._aws_dir / "config").write_text("")
            (self._aws_dir / "credentials").write_text("")
            self._server.start()
            host, port = self._server.get_host_and_port()
            self._endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._endpoint_url is not None:
            self._server.stop()
            self._endpoint_url = None
            self._clients.clear()
        shutil.rmtree(self._aws_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("moto server not started")
        return self._endpoint_url

    def reset(self) -> None:
        """Forget every resource in every service (moto's own reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    # -- environment ---------------------------------------------------------

    def aws_env(self) -> dict[str, str]:
        """Variables that point every SDK client at this server with dummy credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": str(self._aws_dir / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self._aws_dir / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def apply_env(self, environ: MutableMapping[str, str] | None = None) -> None:
        """Set ``aws_env()`` in ``environ`` (default ``os.environ``), dropping leaky vars."""
        env = os.environ if environ is None else environ
        for name in leaky_env_names(env):
            del env[name]
        env.update(self.aws_env())

    @contextmanager
    def env(self) -> Iterator[None]:
        """Apply ``aws_env()`` to ``os.environ`` for the block, then restore it."""
        saved = dict(os.environ)
        self.apply_env()
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    # -- clients and resources ----------------------------------------------

    def client(self, service: str) -> Any:
        """A cached client for this server (creating one costs ~0.1 s)."""
        if service not in self._clients:
            # Explicit settings: works whether or not the environment was applied.
            self._clients[service] = boto3.session.Session().client(
                service,  # type: ignore[call-overload]
                endpoint_url=self.endpoint_url,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return self._clients[service]

    def create_bucket(self, name: str) -> str:
        self.client("s3").create_bucket(Bucket=name)
        return name

    def create_queue(self, name: str, **attributes: str) -> str:
        """Create a queue; returns its URL."""
        response = self.client("sqs").create_queue(QueueName=name, Attributes=attributes)
        return str(response["QueueUrl"])

    def create_secret(self, name: str, value: dict[str, Any] | str) -> str:
        """Create (or overwrite) a secret holding JSON; returns its ARN."""
        secret_string = value if isinstance(value, str) else json.dumps(value)
        sm = self.client("secretsmanager")
        try:
            response = sm.create_secret(Name=name, SecretString=secret_string)
        except sm.exceptions.ResourceExistsException:
            response = sm.put_secret_value(SecretId=name, SecretString=secret_string)
        return str(response["ARN"])

    def provision(self, bucket: str = "mail-bucket", queue: str = "mail-queue") -> AwsResources:
        """Create a bucket and a queue and return clients for them."""
        self.create_bucket(bucket)
        queue_url = self.create_queue(queue)
        return AwsResources(
            moto=self,
            s3=self.client("s3"),
            sqs=self.client("sqs"),
            secretsmanager=self.client("secretsmanager"),
            bucket=bucket,
            queue_url=queue_url,
        )
