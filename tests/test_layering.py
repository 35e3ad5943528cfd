"""The import-linter contracts of pyproject.toml (the layering of docs/design.md) hold.

The package's subpackages live in top-level folders (``sparrow.hw`` in hw/, ...,
mapped by setuptools' package-dir), but import-linter's graph builder looks
for submodules only inside the root package's own folder.  So the test copies
the sources into one ``sparrow/`` tree under a temporary folder and runs
``lint-imports`` there against the project's own pyproject.toml.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("hw", "sw", "tb", "fpga", "bench", "explore")


def _package_tree(dest):
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    pkg = dest / "sparrow"
    shutil.copytree(ROOT / "sparrow", pkg, ignore=ignore)
    for sub in SUBPACKAGES:
        shutil.copytree(ROOT / sub, pkg / sub, ignore=ignore)
    return dest


def lint_imports(tree):
    env = {**os.environ, "PYTHONPATH": str(tree)}
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def test_layering_contracts_hold(tmp_path):
    r = lint_imports(_package_tree(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 1 kept, 0 broken." in r.stdout


def test_a_forbidden_import_breaks_the_contract(tmp_path):
    tree = _package_tree(tmp_path)
    with open(tree / "sparrow" / "sw" / "golden.py", "a") as f:
        f.write("\nimport sparrow.hw.images  # a forbidden arrow: sw -> hw\n")
    r = lint_imports(tree)
    assert r.returncode == 1
    assert "sparrow.sw.golden -> sparrow.hw.images" in r.stdout
