"""An in-memory S3 for the state store: get/put/copy_object with S3's conditional-write answers.

Every call is recorded in ``calls`` ("get", "put", "copy"), so a test can count
what a run costs; interference is scripted (``before_put``, ``put_errors``).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from pop3_ingest.domain.state import MailboxState


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self) -> bytes:
        return self._data

    def close(self) -> None:
        pass


class FakeS3:
    """get/put/copy_object with S3's conditional-write answers; scripted interference."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.calls: list[str] = []
        self.before_put: list[Any] = []  # callables run (and dropped) before a put
        self.put_errors: list[str] = []  # error codes answered (and dropped) by next puts
        self._version = 0

    def _store(self, key: str, body: bytes) -> str:
        self._version += 1
        etag = f'"{self._version}"'
        self.objects[key] = (body, etag)
        return etag

    @staticmethod
    def _error(code: str, status: int, operation: str) -> ClientError:
        return ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
        )

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.calls.append("get")
        if Key not in self.objects:
            raise self._error("NoSuchKey", 404, "GetObject")
        body, etag = self.objects[Key]
        return {"ETag": etag, "ContentLength": len(body), "Body": _Body(body)}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **kw: Any) -> dict[str, Any]:
        self.calls.append("put")
        if self.before_put:
            self.before_put.pop(0)()
        if self.put_errors:
            code = self.put_errors.pop(0)
            raise self._error(code, 409 if code.startswith("Conditional") else 500, "PutObject")
        current = self.objects.get(Key)
        if kw.get("IfNoneMatch") == "*" and current is not None:
            raise self._error("PreconditionFailed", 412, "PutObject")
        if "IfMatch" in kw:
            if current is None:
                raise self._error("NoSuchKey", 404, "PutObject")
            if current[1] != kw["IfMatch"]:
                raise self._error("PreconditionFailed", 412, "PutObject")
        return {"ETag": self._store(Key, Body)}

    def copy_object(self, *, Bucket: str, Key: str, CopySource: Any, **kw: Any) -> None:
        self.calls.append("copy")
        body, etag = self.objects[CopySource["Key"]]
        assert kw["CopySourceIfMatch"] == etag
        self._store(Key, body)

    def write_state(self, key: str, state: MailboxState) -> None:
        """Store ``state`` as another writer would, uncounted."""
        self._store(key, state.to_bytes())
