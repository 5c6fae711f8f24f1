# shellcheck shell=bash
# Sourced by run.sh: the toolkit's virtualenv, its utils on PATH, byte-order sorting.
MAIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
if [ ! -x "$MAIN_ROOT/tools/venv/bin/python" ]; then
    echo "path.sh: $MAIN_ROOT/tools/venv is missing: run 'make setup' in $MAIN_ROOT" >&2
    return 1
fi
export PATH="$MAIN_ROOT/tools/venv/bin:$MAIN_ROOT/utils:$PATH"
export LC_ALL=C
export PYTHONUNBUFFERED=1
