"""Loading a bitstream onto a board with openFPGALoader (``sparrow flash``).

``PATH`` is either a build report (``<name>.report.json`` from ``sparrow
build``: the board and the bitstream beside it are taken from it) or a
bitstream with ``--board``.  iCE40 bitstreams are ``.bin`` (icepack), ECP5
ones ``.bit`` (ecppack).

How each board is programmed (openFPGALoader's own board names):

| board | cable | default | ``--flash`` |
| --- | --- | --- | --- |
| icebreaker | FT2232H (``ice40_generic``) | SPI flash (the iCE40 boots from it) | same |
| ulx3s-* | FT231X JTAG (``ulx3s``) | SRAM, lost at power-off | SPI flash |
| orangecrab-* | USB DFU bootloader (``orangeCrab``) | flash through the bootloader | same |

Without a board attached openFPGALoader finds no cable: that is one line
naming the board and openFPGALoader's message, exit 1.
"""

import json
import subprocess
from pathlib import Path

from sparrow import SparrowError

__all__ = ["flash_command", "resolve_target", "program"]

_LOADER_BOARD = {"ice40": {"icebreaker": "ice40_generic"},
                 "ecp5": {"ulx3s-12f": "ulx3s", "ulx3s-85f": "ulx3s",
                          "orangecrab-25f": "orangeCrab", "orangecrab-85f": "orangeCrab"}}
_EXTENSION = {"ice40": ".bin", "ecp5": ".bit"}


def resolve_target(path, board=None):
    """``(Board, bitstream Path)`` for a report or a bitstream; SparrowError on anything wrong."""
    from sparrow.fpga.boards import get_board
    path = Path(path)
    if not path.is_file():
        raise SparrowError(f"{path}: no such file")
    if path.suffix == ".json":
        try:
            report = json.loads(path.read_text())
            rep_board, design = report["board"], report["design"]
        except (ValueError, KeyError, TypeError):
            raise SparrowError(f"{path}: not a sparrow build report (needs 'board' and 'design')") from None
        if board is not None and board != rep_board:
            raise SparrowError(f"{path}: the report is for {rep_board}, not --board {board}")
        spec = get_board(rep_board)
        bitstream = path.with_name(design + _EXTENSION[spec.family])
        if not bitstream.is_file():
            raise SparrowError(f"{path}: its bitstream {bitstream.name} is missing beside it")
        return spec, bitstream
    if board is None:
        raise SparrowError(f"{path}: a bitstream needs --board (or pass the build's .report.json)")
    spec = get_board(board)
    want = _EXTENSION[spec.family]
    if path.suffix != want:
        raise SparrowError(f"{path}: bitstreams for the {spec.device} end in {want}, not "
                           f"{path.suffix or 'nothing'}")
    return spec, path


def flash_command(spec, bitstream, to_flash=False):
    """The openFPGALoader argument list for ``bitstream`` on board ``spec``."""
    from sparrow.toolchain import activate
    cmd = [activate()["OPENFPGALOADER"], "-b", _LOADER_BOARD[spec.family][spec.name]]
    if to_flash and spec.name.startswith("ulx3s"):
        cmd.append("-f")
    return cmd + [str(bitstream)]


def program(spec, bitstream, to_flash=False):
    """Run openFPGALoader to load ``bitstream`` onto the board ``spec``.

    Raises SparrowError (one line: the board, the bitstream, openFPGALoader's
    reason) when it cannot run or the board refuses.
    """
    cmd = flash_command(spec, bitstream, to_flash)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except OSError as exc:
        raise SparrowError(f"cannot run {cmd[0]} ({exc.strerror}); run `sparrow doctor`") from None
    if done.returncode != 0:
        lines = [l.strip() for l in (done.stderr + done.stdout).splitlines()
                 if l.strip() and l.strip() != "empty"]
        why = next((l for l in lines if "error" in l.lower() or "fail" in l.lower() or
                    "unable" in l.lower()), lines[-1] if lines else f"exit status {done.returncode}")
        raise SparrowError(f"openFPGALoader could not program the {spec.name} "
                           f"({spec.device}) with {bitstream.name}: {why}; is the board plugged in "
                           f"and its USB device readable?")
