"""The one TLS client policy: certificates verified, TLS 1.2 or later.

A context is built once per CA set and then shared by every connection of the
process (POP3 and the OAuth token endpoint): loading the system's CA bundle
costs about 25 ms of CPU, which was a third of an idle run's, and an
``SSLContext`` may be shared between threads. Nothing changes a context after
it is built.
"""

from __future__ import annotations

import functools
import ssl


@functools.lru_cache(maxsize=8)
def client_context(ca_cert: str | None = None) -> ssl.SSLContext:
    """A verifying context trusting the system's CAs, and ``ca_cert`` (PEM) as well if given.

    A ``ca_cert`` that is not a usable certificate raises ``ssl.SSLError`` (and
    nothing is cached).
    """
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_cert:
        context.load_verify_locations(cadata=ca_cert)
    return context
