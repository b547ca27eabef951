"""The POP3 side: a session on :mod:`poplib`'s connection, with streaming, pipelining and SASL."""

from pop3_ingest.pop3.connection import Pop3Mailbox

__all__ = ["Pop3Mailbox"]
