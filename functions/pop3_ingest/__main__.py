"""``python -m pop3_ingest``: hands over to the operator's command line, ``pop3-ingest``.

The command line is a package of its own, installed beside this one and never
shipped in the function's artifact, so this package does not import it: the
module is found and run by name when an operator asks for it, and when it is
not installed, how to install it is said instead.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys

# The CLI's package: this package's name plus "_cli". Built, not written out,
# so that nothing in the Lambda package names the CLI (tests/unit/test_structure.py).
CLI_PACKAGE = f"{__package__ or 'pop3_ingest'}_cli"
_INSTALL = """\
pop3-ingest: the operator's command line is not installed. From a checkout:
  pipx install .        (or: uv tool install .)
then run 'pop3-ingest --help'; in a development venv, 'make venv'."""


def main() -> int:
    if importlib.util.find_spec(CLI_PACKAGE) is None:
        print(_INSTALL, file=sys.stderr)
        return 2  # the CLI's exit code for a configuration error
    try:
        runpy.run_module(CLI_PACKAGE, run_name="__main__", alter_sys=True)
    except SystemExit as exc:  # the CLI's own exit code
        return exc.code if isinstance(exc.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
