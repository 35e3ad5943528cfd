"""Results cached by their inputs, so that an interrupted explore continues where it stopped.

A result is one JSON file ``DIR/cache/<kind>/<key>.json``; the key is the
first 16 hex digits of the SHA-256 of the inputs as canonical JSON (sorted
keys), so the same inputs find the same file in any later run.  Files are
written atomically (a temporary file, then a rename): a run killed halfway
leaves either the whole result or none.
"""

import hashlib
import json
import os
from pathlib import Path

__all__ = ["input_key", "Cache", "dir_digest", "file_digest"]


def input_key(inputs):
    """The cache key of ``inputs`` (anything JSON can write): 16 hex digits."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path):
    """SHA-256 (16 hex digits) of a file's bytes, e.g. a model file or DATA.npz."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def dir_digest(path):
    """SHA-256 (16 hex digits) of a folder's files (names and bytes), e.g. a model directory."""
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


class Cache:
    """The results of one kind (``"trials"``, ``"builds"``) under ``root/cache/kind``."""

    def __init__(self, root, kind):
        self.dir = Path(root) / "cache" / kind
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, key):
        return self.dir / f"{key}.json"

    def get(self, key):
        """The stored result of ``key``, or None."""
        p = self.path(key)
        return json.loads(p.read_text()) if p.exists() else None

    def put(self, key, result):
        """Store ``result`` under ``key`` (atomically); returns it."""
        p = self.path(key)
        tmp = p.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
        os.replace(tmp, p)
        return result

    def keys(self):
        return sorted(p.stem for p in self.dir.glob("*.json"))
