"""The POP3 side: a session on :mod:`poplib`'s connection, with streaming, pipelining and SASL.

- :mod:`~pop3_ingest.pop3.session`: :class:`Pop3Mailbox`, the session the core drives;
- :mod:`~pop3_ingest.pop3.login`: connect, TLS (implicit or STARTTLS), CAPA and the login;
- :mod:`~pop3_ingest.pop3.auth`: AUTH (RFC 5034) with PLAIN and XOAUTH2;
- :mod:`~pop3_ingest.pop3.listing`: UIDL and LIST, paired and bounded;
- :mod:`~pop3_ingest.pop3.retr_stream`: one RETR answer read as a stream;
- :mod:`~pop3_ingest.pop3.connection`: poplib's client, with time limits and line primitives;
- :mod:`~pop3_ingest.pop3.limits`: how long an answer may take.
"""

from pop3_ingest.pop3.session import Pop3Mailbox

__all__ = ["Pop3Mailbox"]
