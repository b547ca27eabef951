"""The address policy of tests whose servers listen on 127.0.0.1.

The function refuses a secret's host or token URL on a loopback or private
address unless the deployment allows it (pop3_ingest.netguard); the tests
allow it explicitly, as the issue asks, and never by default.
"""

from __future__ import annotations

from pop3_ingest.netguard import AddressPolicy

LOCAL_SERVERS = AddressPolicy(allow_private=True)
