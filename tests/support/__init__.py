"""Test helpers shared by the test suite, ``scripts/demo.py`` and the benchmarks.

- Servers, each a :mod:`~tests.support.background` service: ``dovecot``,
  ``popa3d``, ``fake_pop3``, ``tcp_proxy``, ``oauth_server``, ``moto_server``.
- Data: ``corpus`` (test mail), ``lambda_context``, ``cfn_template`` (the SAM
  template as data).
- Driving the handler: ``harness`` (a mailbox wired to the real handler) and
  ``aws_hooks`` (faults and slowness on its AWS clients).

Only ``harness`` and ``aws_hooks`` use the ``pop3_ingest`` package, and only
inside their functions, so the rest works before (and without) the code under test.
"""
