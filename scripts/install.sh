#!/usr/bin/env bash
# Create .venv (once) with everything metalab needs, on a machine that has only Python 3.11.
# Idempotent: a finished install leaves .venv/.installed-<hash of this file and pyproject.toml>.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${VENV:-.venv}
stamp="$VENV/.installed-$(cat scripts/install.sh pyproject.toml | sha256sum | cut -c1-12)"
[ -f "$stamp" ] && exit 0

echo "[install] creating $VENV with $($PY --version)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade "pip>=24" setuptools wheel

# 1. torch + torchvision exactly (pyproject pins them too); taken from local wheels where present.
pip install -q "torch==2.14.1" "torchvision==0.29.1"

# 2. learn2learn 0.2.0: its sdist's Cython-0.29 C includes longintrepr.h (gone in CPython 3.11);
#    regenerate the C from the .pyx with Cython 3, then install without its deps (gsutil, qpth).
if ! "$VENV/bin/python" -c "import learn2learn" 2>/dev/null; then
  tmp=$(mktemp -d)
  pip install -q "cython>=3,<4"
  pip download -q --no-deps --no-binary learn2learn -d "$tmp" learn2learn==0.2.0
  tar -xzf "$tmp"/learn2learn-0.2.0.tar.gz -C "$tmp"
  for pyx in "$tmp"/learn2learn-0.2.0/learn2learn/data/*.pyx; do
    "$VENV/bin/cython" -3 "$pyx" >/dev/null
  done
  pip install -q "gym" "scipy" "requests" "pillow" "tqdm"
  pip install -q --no-deps --no-build-isolation "$tmp/learn2learn-0.2.0"
  rm -rf "$tmp"
fi

# 3. avalanche-lib and hydra-optuna-sweeper without their conflicting pins.
pip install -q --no-deps "avalanche-lib==0.6.0" "hydra-optuna-sweeper==1.3.0"

# 4. metalab itself (editable) with its run-time deps, the peers' run-time deps and the dev tools.
pip install -q -e ".[peers-runtime,dev]"

touch "$stamp"
echo "[install] done: $VENV"
