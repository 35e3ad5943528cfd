"""Run the ``sparrow`` command line as a user does: a fresh interpreter, its output captured."""

import subprocess
import sys


def sparrow(*args, timeout=900, cwd=None):
    """``python -m sparrow ARGS``: the CompletedProcess (text stdout/stderr)."""
    return subprocess.run([sys.executable, "-m", "sparrow", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)
