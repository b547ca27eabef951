"""Check what `sam build` put in each function's artifact: the Lambda package, nothing else.

The operator's CLI (cli/pop3_ingest_cli) and the tests never ship: a function's
artifact holds the pop3_ingest package, the files SAM itself writes, and exactly
the distributions functions/requirements.txt declares (each one's files, as its
RECORD lists them). Run after `sam build`; exits 1 and names every stray path.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

BUILD_DIR = Path(sys.argv[1] if len(sys.argv) > 1 else ".aws-sam/build")
FUNCTIONS = ("FetchFunction", "ReconcileFunction")
# What may stand at the top of an artifact besides the package.
SAM_FILES = {"requirements.txt"}
PACKAGE = "pop3_ingest"
MUST_HOLD = ("handlers/fetch.py", "handlers/reconcile.py", "domain/ingest.py")
REQUIREMENTS = Path(__file__).resolve().parents[1] / "functions" / "requirements.txt"


def _distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def declared() -> set[str]:
    """The distributions functions/requirements.txt names."""
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return {_distribution(re.split(r"[\s=<>!~;\[]", line, maxsplit=1)[0]) for line in lines if line}


def dependencies(artifact: Path) -> tuple[set[str], list[str]]:
    """The top-level entries the declared distributions installed, and what is wrong:
    a distribution not declared, or one declared and missing."""
    entries: set[str] = set()
    found: list[str] = []
    wanted = declared()
    for info in sorted(artifact.glob("*.dist-info")):
        name = _distribution(info.name.split("-", 1)[0])
        if name not in wanted:
            found.append(f"{info}: {name} is not in {REQUIREMENTS.name}")
            continue
        wanted.discard(name)
        record = (info / "RECORD").read_text().splitlines()
        entries |= {info.name} | {row.split(",", 1)[0].split("/", 1)[0] for row in record}
    found += [f"{artifact}: {name} from {REQUIREMENTS.name} missing" for name in sorted(wanted)]
    return entries, found


def problems(artifact: Path) -> list[str]:
    if not artifact.is_dir():
        return [f"{artifact}: not built"]
    installed, found = dependencies(artifact)
    found += [
        f"{artifact / entry.name}: not part of the function"
        for entry in artifact.iterdir()
        if entry.name not in SAM_FILES | installed and entry.name != PACKAGE
    ]
    found += [
        f"{artifact / PACKAGE / part}: missing"
        for part in MUST_HOLD
        if not (artifact / PACKAGE / part).is_file()
    ]
    found += [
        f"{path}: CLI code in the function"
        for path in (artifact / PACKAGE).rglob("*")
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
        print(
            f"check_artifact: {', '.join(built)}: the {PACKAGE} package, "
            f"{', '.join(sorted(declared()))} and nothing else"
        )
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
