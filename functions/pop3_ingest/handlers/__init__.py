"""The Lambda entry points: ``fetch.lambda_handler`` and ``reconcile.lambda_handler``.

Importing them first checks the runtime's AWS SDK (:mod:`pop3_ingest.runtime_check`):
a botocore too old for the features the code relies on fails the import, and so
every invocation, with one line naming what is missing.
"""

from pop3_ingest.runtime_check import require_botocore

require_botocore()
