"""pop3-ingest: drain POP3 mailboxes into S3 and announce every message on SQS."""

__version__ = "0.1.0"
