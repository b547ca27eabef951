"""`make bench`: pop3-ingest against getmail6, fetchmail and the line's own limits.

See benchmarks/README.md. Nothing here is imported by the function itself.
"""
