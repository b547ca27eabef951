"""Check what `sam build` put in each function's artifact: the Lambda package, nothing else.

The operator's CLI (cli/pop3_ingest_cli) and the tests never ship: a function's
artifact holds the pop3_ingest package and the files SAM itself writes. Run
after `sam build`; exits 1 and names every stray path.
"""

from __future__ import annotations

import sys
from pathlib import Path

BUILD_DIR = Path(sys.argv[1] if len(sys.argv) > 1 else ".aws-sam/build")
FUNCTIONS = ("FetchFunction", "ReconcileFunction")
# What may stand at the top of an artifact besides the package.
SAM_FILES = {"requirements.txt"}
PACKAGE = "pop3_ingest"
MUST_HOLD = ("handlers/fetch.py", "handlers/reconcile.py", "domain/ingest.py")


def problems(artifact: Path) -> list[str]:
    if not artifact.is_dir():
        return [f"{artifact}: not built"]
    found = [
        f"{artifact / entry.name}: not part of the function"
        for entry in artifact.iterdir()
        if entry.name not in SAM_FILES and entry.name != PACKAGE
    ]
    found += [
        f"{artifact / PACKAGE / part}: missing"
        for part in MUST_HOLD
        if not (artifact / PACKAGE / part).is_file()
    ]
    found += [
        f"{path}: CLI code in the function"
        for path in artifact.rglob("*")
        if "cli" in path.relative_to(artifact).parts[-1].removesuffix(".py").split("_")
    ]
    return found


def main() -> int:
    # The fetch function is always built; the reconciler too, where SAM builds it.
    built = [name for name in FUNCTIONS if (BUILD_DIR / name).exists()] or [FUNCTIONS[0]]
    found = [problem for name in built for problem in problems(BUILD_DIR / name)]
    for problem in found:
        print(f"check_artifact: {problem}", file=sys.stderr)
    if not found:
        print(f"check_artifact: {', '.join(built)}: the {PACKAGE} package and nothing else")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
