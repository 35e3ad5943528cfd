"""The boards sparrow builds for, as amaranth-boards platforms plus their resource budgets."""

from dataclasses import dataclass

from sparrow import SparrowError

__all__ = ["Board", "BOARDS", "get_board"]


@dataclass(frozen=True)
class Board:
    """One target board.

    ``target_mhz`` is the clock constraint handed to nextpnr (timing-driven
    placement aims for it; the report gives the fmax actually achieved).
    ``luts``, ``dsps``, ``bram_bits`` are the device's totals, used to refuse
    models that cannot fit before any tool runs.  ``bridge`` and ``max_baud``:
    the USB-serial bridge of the host link and the fastest rate used on it,
    3 Mbaud on both: the FT231X's maximum (48 MHz / 16) and, for the FT2232H
    (12 Mbaud at most, 12 MHz / n), its 3 MHz-base rate, exact on both chips.
    ``max_groups``: the PE-group limit of the SmartDeal code layout that
    accelerator builds use by default (``EngineConfig.max_groups``): 16 (the
    fewest ROM bits) where logic is plentiful; 1 on the iCE40UP5K, where each
    group's z-buffer copy and code ROM cost more EBRs than the smaller ROMs
    save (digits-mlp at 16 PEs: 16 groups need 31 of the 30 EBRs, at 89% of
    the LCs; 1 group takes 19 EBRs and 81% of the LCs).
    """
    name: str
    module: str          # amaranth_boards module
    platform: str        # platform class name in it
    family: str          # "ice40" or "ecp5"
    device: str
    target_mhz: float
    luts: int
    dsps: int
    bram_bits: int
    description: str
    bridge: str = ""         # the USB-serial bridge on the host link
    max_baud: int = 115200   # the fastest UART rate sparrow uses on that bridge
    max_groups: int = 16     # default PE-group limit of accelerator builds (EngineConfig)

    def platform_class(self):
        import importlib
        return getattr(importlib.import_module(f"amaranth_boards.{self.module}"), self.platform)


BOARDS = {b.name: b for b in (
    Board("icebreaker", "icebreaker", "ICEBreakerPlatform", "ice40", "iCE40UP5K", 48.0,
          luts=5280, dsps=8, bram_bits=30 * 4096 + 4 * 256 * 1024,
          description="1BitSquared iCEBreaker (iCE40UP5K-SG48, 12 MHz clock)",
          bridge="FT2232H", max_baud=3_000_000, max_groups=1),
    Board("ulx3s-12f", "ulx3s", "ULX3S_12F_Platform", "ecp5", "LFE5U-12F", 100.0,
          luts=12288, dsps=28, bram_bits=32 * 18432,
          description="Radiona ULX3S (ECP5 LFE5U-12F, 25 MHz clock)",
          bridge="FT231X", max_baud=3_000_000),
    Board("ulx3s-85f", "ulx3s", "ULX3S_85F_Platform", "ecp5", "LFE5U-85F", 100.0,
          luts=83640, dsps=156, bram_bits=208 * 18432,
          description="Radiona ULX3S (ECP5 LFE5U-85F, 25 MHz clock)",
          bridge="FT231X", max_baud=3_000_000),
    Board("orangecrab-25f", "orangecrab_r0_2", "OrangeCrabR0_2_25FPlatform", "ecp5", "LFE5U-25F",
          100.0, luts=24288, dsps=28, bram_bits=56 * 18432,
          description="Good Stuff Department OrangeCrab r0.2 (ECP5 LFE5U-25F, 48 MHz clock)"),
    Board("orangecrab-85f", "orangecrab_r0_2", "OrangeCrabR0_2_85FPlatform", "ecp5", "LFE5U-85F",
          100.0, luts=83640, dsps=156, bram_bits=208 * 18432,
          description="Good Stuff Department OrangeCrab r0.2 (ECP5 LFE5U-85F, 48 MHz clock)"),
)}


def get_board(name):
    """The :class:`Board` called ``name``; a SparrowError naming the choices otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise SparrowError(f"unknown board {name!r}; choose one of {', '.join(BOARDS)}") from None
