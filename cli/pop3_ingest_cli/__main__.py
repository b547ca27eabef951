"""``python -m pop3_ingest_cli``: the same as the ``pop3-ingest`` command."""

from pop3_ingest_cli.main import main

raise SystemExit(main())
