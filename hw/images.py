"""Memory images: ROM contents written as ``$readmemh`` text files.

One word per line, upper-case hexadecimal, ``ceil(width / 4)`` digits, word 0
first (the format of Verilog's ``$readmemh`` and of Yosys' memory init).
Each engine's ``memory_images()`` gives ``{name: (width, words, layout)}``;
:func:`write_images` writes ``<prefix>.<name>.hex`` per ROM and returns a
description of each (file, width, depth, layout) for the generate manifest.
"""

from pathlib import Path

__all__ = ["hex_lines", "write_images", "read_hex"]


def hex_lines(width, words):
    """The ``$readmemh`` text of ``words`` (non-negative ints below ``2**width``)."""
    digits = max(1, -(-width // 4))
    out = []
    for i, w in enumerate(words):
        if not 0 <= w < (1 << width):
            raise ValueError(f"word {i} = {w} does not fit {width} bits")
        out.append(f"{w:0{digits}X}")
    return "\n".join(out) + "\n"


def read_hex(path):
    """Words of a ``$readmemh`` file (ints)."""
    return [int(line, 16) for line in Path(path).read_text().split()]


def write_images(images, out_dir, prefix):
    """Write every ROM of ``images`` as ``<out_dir>/<prefix>.<name>.hex``; returns their descriptions."""
    out_dir = Path(out_dir)
    described = {}
    for name, (width, words, layout) in images.items():
        path = out_dir / f"{prefix}.{name}.hex"
        path.write_text(hex_lines(width, words))
        described[name] = {"file": path.name, "width": width, "depth": len(words), "layout": layout}
    return described
