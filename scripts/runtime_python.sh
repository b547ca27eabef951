#!/usr/bin/env bash
# Print the path of a working python<VERSION> (on PATH, else pyenv's), or exit 1.
# The function's runtime version: `sam build` needs it, and `make test-runtime`
# runs the unit tests on it. Usage: bash scripts/runtime_python.sh 3.12
set -euo pipefail
version=${1:?usage: runtime_python.sh <major.minor>}
for candidate in "$(command -v "python$version" 2>/dev/null || true)" \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] &&
      real=$("$candidate" -c 'import sys; print(sys.executable)' 2>/dev/null) && [ -n "$real" ]; then
    echo "$real"
    exit 0
  fi
done
exit 1
