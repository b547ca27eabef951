"""What ``--help`` says: each command's description and examples, and the exit codes."""

from __future__ import annotations

from pop3_ingest_cli.render import PROG

MAIN_DESCRIPTION = """\
Operator tools for pop3-ingest, the POP3 -> S3 -> SQS mail ingester.

AWS access uses the SDK's standard configuration (AWS_PROFILE,
AWS_DEFAULT_REGION or the profile's region, AWS_ENDPOINT_URL), or --profile and
--region. --stack-name reads the bucket, queues, key prefix and function from
the stack's outputs, so no other name has to be typed.
"""

EXIT_CODES = """\
exit codes:
  0  ok
  1  failed (protocol error, connection lost, AWS call failed, pointers not sent,
     a run state could not be read)
  2  usage, configuration or secret error; no region or credentials; a bucket,
     queue, stack, secret or --mailbox that matches nothing
  3  TLS or connection error
  4  login rejected (run: logins suspended)
  5  mailbox busy ([IN-USE], [LOGIN-DELAY], [SYS/TEMP]; run: not run now): try later
  6  status: some mailbox is unhealthy
"""

MAIN_EPILOG = f"""\
examples:
  {PROG} status --stack-name pop3-ingest
  {PROG} check --stack-name pop3-ingest
  {PROG} resume --stack-name pop3-ingest --mailbox support
  {PROG} run --stack-name pop3-ingest --mailbox support
  {PROG} replay --stack-name pop3-ingest --mailbox support --since 2026-11-26T08:00:00Z --dry-run

Run '{PROG} <command> --help' for a command's options.

{EXIT_CODES}"""

CHECK_DESCRIPTION = """\
Connect to the mailbox of a secret, verify TLS (system trust plus the secret's
ca_cert) and the login, and show the server's capabilities (CAPA), the number
and total size of the messages waiting, and whether UIDL (required) and
PIPELINING (faster) are supported. With --stack-name and neither --secret-id
nor --secret-file, the stack's own secret (its SecretArn output) is checked.

Nothing changes on the server: check sends no RETR and no DELE, and ends the
session with QUIT. It does log in, though: providers may record the login,
count it against rate limits, or (Gmail) alert the owner about a new sign-in.
The password is never printed.
"""

CHECK_EPILOG = f"""\
examples:
  {PROG} check --secret-id pop3-ingest/support
  {PROG} check --stack-name pop3-ingest        # the stack's SecretArn
  {PROG} check --secret-id arn:aws:secretsmanager:eu-west-1:123456789012:secret:mbx-AbCdEf
  {PROG} check --secret-file support.json       # before the secret exists
  {PROG} check --secret-file - --json < support.json
  {PROG} check --secret-file local.json --allow-private-hosts   # a server on 10.x or localhost

{EXIT_CODES}"""

REPLAY_DESCRIPTION = """\
Re-send the SQS pointers of messages already stored under
s3://BUCKET/<key-prefix><mailbox>/ whose LastModified (when they were written)
is in [--since, --until). Use it after a consumer bug, or when pointers expired
from the queue. The mail is only read, never changed.

Each pointer is rebuilt from S3 alone: size and sha256 from the object's
metadata (computed by reading the whole object when the metadata has none, as
for big streamed uploads), header fields from the first 64 KiB. The key holds a
digest of the UIDL, so replayed pointers carry "uidl": null, and they carry
"replayed": true. Pointers are sent in batches of ten, oldest first.
"""

REPLAY_EPILOG = f"""\
examples:
  # what would be sent for one morning (reads S3, sends nothing)
  {PROG} replay --stack-name pop3-ingest --mailbox support \\
      --since 2026-11-26T06:00:00Z --until 2026-11-26T12:00:00Z --dry-run
  # everything stored for the mailbox since a date (UTC when no zone is given)
  {PROG} replay --bucket my-mail --queue-url "$QUEUE_URL" --mailbox support --since 2026-11-20

{EXIT_CODES}"""

QUARANTINE_DESCRIPTION = """\
A message that fails the same way POISON_THRESHOLD runs in a row is
quarantined: it stays on the POP3 server, is no longer downloaded, and is
described in <prefix>_quarantine/<mailbox>/<digest>.json. 'list' shows those
records; 'release' removes them (all, or the one --digest names) and clears
the messages from the mailbox's run state, so the next run tries them again;
'drop' does the same for exactly one message, named by --uidl, --digest or
--key as 'list' shows them (after you deleted it on the server by hand, its
record goes too). Safe while a run is working the mailbox: state writes are
conditional and merged, so neither side undoes the other.
"""

QUARANTINE_EPILOG = f"""\
examples:
  {PROG} quarantine list --stack-name pop3-ingest --mailbox support
  {PROG} quarantine release --bucket my-mail --mailbox support --digest 3f2a...
  {PROG} quarantine drop --stack-name pop3-ingest --mailbox support --uidl 000001a2b3c4

{EXIT_CODES}"""

MAILBOX_DESCRIPTION = """\
Mode fleet: start or stop polling a mailbox at once. 'add' checks the secret
as the function would, writes --interval into it (its interval_minutes) when
given, tags it MAILBOX_TAG_KEY=MAILBOX_TAG_VALUE (default pop3-ingest=enabled)
and creates its EventBridge Scheduler schedule; 'remove' untags it and deletes
the schedule; 'list' shows every tagged secret and whether its schedule is in
place. The reconciler function does the same on its own (on tag changes, daily
and after each deploy); this is its code, run from here.

The deployment is named by the stack's outputs ScheduleGroupName, JobsQueueArn
and SchedulerRoleArn: --stack-name, the options below, or the variables
SCHEDULE_GROUP, JOBS_QUEUE_ARN and SCHEDULER_ROLE_ARN.
"""

MAILBOX_EPILOG = f"""\
examples:
  {PROG} mailbox add pop3/support --interval 10 --stack-name pop3-ingest
  {PROG} mailbox remove pop3/support --stack-name pop3-ingest
  {PROG} mailbox list --json --stack-name pop3-ingest

{EXIT_CODES}"""

STATUS_DESCRIPTION = """\
Each mailbox's health, read from its run state in S3 (nothing is changed):
the last completed run, the last error, whether its logins are suspended or
it is backing off, and how many messages are quarantined and pending. All
mailboxes are those with a run state, and in Mode fleet every tagged secret.

A mailbox is unhealthy when its logins are suspended, it backs off because the
server is busy or unreachable, no run completed for --stale-after hours (or
ever), messages are quarantined, its state is damaged or (fleet) its secret is
unusable. Exit 0: all healthy; 6: some unhealthy; 1: some state could not be
read (and none unhealthy); 2: configuration, or a --mailbox that matches nothing.
"""

STATUS_EPILOG = f"""\
examples:
  {PROG} status --stack-name pop3-ingest
  {PROG} status --stack-name pop3-ingest --mailbox support
  {PROG} status --bucket my-mail --json        # for a monitoring job: exit 0, 6, or other

{EXIT_CODES}"""

RESUME_DESCRIPTION = """\
Let a mailbox whose logins are suspended (AUTH_FAILURE_LIMIT failures with one
secret) or that is backing off log in at its next run, when the fix was made
at the provider and the secret stays as it is (a Microsoft 365 permission that
has propagated, Gmail's "confirm it was you"). Clears the login failure count,
the failed secret's fingerprint and any back-off in the mailbox's run state
with a conditional write, and prints what it changed. A changed secret resumes
by itself: resume is for when it did not change.

Check the login first ('check'): if it still fails, the next runs fail again
and the mailbox is suspended again after AUTH_FAILURE_LIMIT more failures.
"""

RESUME_EPILOG = f"""\
examples:
  {PROG} check --stack-name pop3-ingest        # does the login work now?
  {PROG} resume --stack-name pop3-ingest --mailbox support
  {PROG} run --stack-name pop3-ingest --mailbox support     # and fetch now

{EXIT_CODES}"""

RUN_DESCRIPTION = """\
Fetch one mailbox now, through the deployed function. Mode single: invokes the
fetch function synchronously with the mailbox's secret and shows its result
(the same policy as a scheduled run: suspended or backing off, it says so;
when the secret sets interval_minutes and the mailbox ran less than that ago,
"not due"; exit 4 or 5). Mode fleet: sends a job to
the jobs queue in the mailbox's own message group, as its schedule does; the
function runs it after any job of that mailbox already queued, and its
outcome shows in the function's log and in 'status'.

--mailbox finds the secret whose 'mailbox' it is (Mode fleet: among the tagged
secrets, reading them all; give --secret-id on a large fleet).
"""

RUN_EPILOG = f"""\
examples:
  {PROG} run --stack-name pop3-ingest --mailbox support
  {PROG} run --stack-name pop3-ingest --secret-id pop3/support --json
  {PROG} run --function-name pop3-ingest-FetchFunction-AbC --mailbox support

{EXIT_CODES}"""
