#!/usr/bin/env bash
# Makes sure clients/python/.venv exists with clients/python/requirements-dev.txt installed (the
# Python client's generator and pytest), and prints the venv's path. Never touches the system Python.
# Re-installs only when the requirements file changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=clients/python/.venv
requirements=clients/python/requirements-dev.txt
stamp=$venv/.requirements-installed
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! cmp -s "$requirements" "$stamp"; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
echo "$PWD/$venv"
