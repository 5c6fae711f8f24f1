#!/usr/bin/env bash
# Builds tools/venv with the pinned stack and speechdump installed in editable mode: the
# packages of tools/requirements.txt, and everything they pull in at the exact versions of
# tools/constraints.txt (`make lock` regenerates it from the tested venv).
# Idempotent: a second run only compares a stamp and returns.
set -euo pipefail

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$tools_dir")
venv=$tools_dir/venv
python=${PYTHON:-python3}
stamp=$venv/.speechdump-stamp
wanted=$(cat "$tools_dir/requirements.txt" "$tools_dir/constraints.txt" "$root/setup.py" \
  | sha256sum | cut -d' ' -f1)

if [[ -f $stamp && $(cat "$stamp") == "$wanted" ]]; then
  echo "tools/setup.sh: $venv is up to date"
  exit 0
fi

echo "tools/setup.sh: building $venv (the torch wheels are several GB; this takes minutes once)"
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
# The interpreter's own pip is kept on purpose: newer pip releases refuse a
# transitive dependency of espnet that declares a direct-URL extra.
"$venv/bin/pip" install --disable-pip-version-check -r "$tools_dir/requirements.txt" \
  -c "$tools_dir/constraints.txt"
"$venv/bin/pip" install --disable-pip-version-check --no-deps -e "$root"
echo "$wanted" > "$stamp"
echo "tools/setup.sh: done"
