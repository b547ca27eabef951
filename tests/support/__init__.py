"""Test helpers shared by the test suite and ``scripts/demo.py``.

Nothing here imports the ``pop3_ingest`` package, so the helpers work before
(and independently of) the code under test.
"""
