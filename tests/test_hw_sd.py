"""sd_linear engine (basis unit + PE array + output stage): bit-exact against the golden model.

Each design is built once per simulator and a batch of vectors (random plus
extremes) goes through it in one cocotb run.
"""

import numpy as np
import pytest

from sparrow.hw.engine import EngineConfig
from sparrow.hw.pe_array import PEArray, encode_code
from sparrow.hw.sd_engine import SDEngine, sd_exp_bits, sd_layout, sd_program, sd_acc_width
from sparrow.hw.sd_program import SDLayout
from sparrow.modeldir import Layer
from sparrow.sw import golden
from sparrow.sw.randmodel import random_layer
from sparrow.tb.model_sim import run_engine


def _inputs(rng, n, n_in):
    x = rng.integers(-128, 128, size=(n, n_in))
    x[0], x[1], x[2] = -128, 127, 0
    x[3] = np.where(np.arange(n_in) % 2, 127, -128)
    return x.astype(np.int8)


def _layer_hard(rng):
    """in/out not multiples of P or k-friendly, T = 3 tiles, all-zero rows and columns,
    a fully dense row, z_bits 12, extreme coefficients that saturate."""
    n_in, n_out, k, tiles = 20, 15, 4, 3
    sign = rng.integers(-1, 2, size=(n_out, n_in)) * (rng.random((n_out, n_in)) < 0.15)
    sign[:, [0, 7, 13]] = 0                 # all-zero columns
    sign[[2, 9]] = 0                        # all-zero rows
    sign[5] = rng.choice([-1, 1], size=n_in)  # fully dense row
    sign[10:15] = 0                         # an all-zero tile: one empty block
    exp = rng.integers(0, 8, size=(n_out, n_in))
    exp[5] = 7
    basis = rng.integers(-128, 128, size=(tiles, n_in // k, k, k))
    basis[0, 0] = -128
    return Layer("hard", "sd_linear",
                 {"in": n_in, "out": n_out, "k": k, "basis_shift": 4, "out_shift": 9,
                  "relu": False, "z_bits": 12},
                 {"basis": basis.astype(np.int8), "coef_sign": sign.astype(np.int8),
                  "coef_exp": exp.astype(np.uint8),
                  "bias": rng.integers(-40000, 40000, size=n_out).astype(np.int32)})


def _layer_full_blocks(rng):
    """32-row blocks whose rows are all nonzero at the block's columns: one group of 32 PEs
    and codes without the nz bit, through a broadcast tree of several copies (bcast 1)."""
    n_in, n_out = 16, 32
    cols = rng.random(n_in) < 0.4
    sign = np.where(cols, rng.choice([-1, 1], size=(n_out, n_in)), 0)
    exp = rng.integers(0, 8, size=(n_out, n_in))
    return Layer("full", "sd_linear",
                 {"in": n_in, "out": n_out, "k": 2, "basis_shift": 5, "out_shift": 8, "relu": False},
                 {"basis": rng.integers(-128, 128, size=(1, n_in // 2, 2, 2)).astype(np.int8),
                  "coef_sign": sign.astype(np.int8), "coef_exp": exp.astype(np.uint8),
                  "bias": rng.integers(-4000, 4000, size=n_out).astype(np.int32)})


def _layer_short_tile(rng):
    """10 rows in the compressor's 4-row blocks (4, 4, 2), every row nonzero at its block's
    columns, on 16 PEs: one row block, groups of 4 rows, the last group's ROM 2 codes wide
    and no nz bit (its PEs past row 9 get code 0: never drained)."""
    n_in, n_out = 24, 10
    stored = rng.random((3, n_in)) < 0.4
    sign = np.repeat(stored, 4, axis=0)[:n_out] * rng.choice([-1, 1], size=(n_out, n_in))
    exp = rng.integers(0, 8, size=(n_out, n_in))
    return Layer("short", "sd_linear",
                 {"in": n_in, "out": n_out, "k": 1, "basis_shift": 0, "out_shift": 6, "relu": True},
                 {"basis": np.ones((1, n_in, 1, 1), np.int8), "coef_sign": sign.astype(np.int8),
                  "coef_exp": exp.astype(np.uint8),
                  "bias": rng.integers(-4000, 4000, size=n_out).astype(np.int32)})


CASES = {
    # name: (layer factory, engine parameters)
    "small-relu-T2": (lambda r: random_layer("sd_linear", r, name="small", in_=12, out=10, k=4,
                                            tiles=2, density=0.4, relu=True), EngineConfig(pes=4)),
    "hard-T3-z12": (_layer_hard, EngineConfig(pes=4)),
    "sparse-stalls": (lambda r: random_layer("sd_linear", r, name="sparse", in_=16, out=24, k=2,
                                             density=0.03, out_shift=4),
                      EngineConfig(pes=8, out_lanes=2)),
    "P1-k1": (lambda r: random_layer("sd_linear", r, name="p1", in_=5, out=3, k=1, density=0.7,
                                     relu=True), EngineConfig(pes=1)),
    "wide-k8-P16": (lambda r: random_layer("sd_linear", r, name="wide", in_=64, out=40, k=8,
                                           density=0.2), EngineConfig(pes=16, out_lanes=4, bcast=2)),
    "full-blocks-P32": (_layer_full_blocks, EngineConfig(pes=32, out_lanes=2, bcast=1)),
    "short-tile-P16": (_layer_short_tile, EngineConfig(pes=16)),
}


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("case", list(CASES))
def test_sd_engine_bit_exact(simulator, case):
    rng = np.random.default_rng(sum(map(ord, case)))
    make, config = CASES[case]
    layer = make(rng)
    n = 12 if case in ("wide-k8-P16", "full-blocks-P32") else 24
    x = _inputs(rng, n, layer.attrs["in"])
    expected = golden.sd_linear_forward(layer, x)
    engine = SDEngine.from_layer(layer, config)
    if case == "full-blocks-P32":
        assert engine.program.layout[0] == 32 and not engine.program.layout.zero_codes
    if case == "short-tile-P16":
        assert engine.program.layout.group_rows == 4 and not engine.program.layout.zero_codes
        assert engine.program.group_rows == [4, 4, 2]
    y, cycles = run_engine(engine, x, simulator, label=layer.name, expected=expected,
                           gaps=0.2 if case == "small-relu-T2" else 0.0, name="sd_engine")
    np.testing.assert_array_equal(y, expected)
    assert cycles > 0


def test_saturation_is_exercised():
    """The 'hard' layer really drives outputs to both int8 limits and z to its clamp."""
    rng = np.random.default_rng(sum(map(ord, "hard-T3-z12")))
    layer = _layer_hard(rng)
    x = _inputs(rng, 24, layer.attrs["in"])
    y = golden.sd_linear_forward(layer, x)
    assert (y == 127).any() and (y == -128).any()
    a = layer.attrs
    z = golden.sd_z(layer.params["basis"], x, a["basis_shift"], a["z_bits"])
    assert (z == 2047).any() and (z == -2048).any()


def test_program_layout_skips_zero_columns():
    """Two groups of one row (P = 2): each stores only its row's columns, delta coded in 2 bits
    (3 = fill), with the v of the entry after next and the next entry's last flag (a tile's
    first v and last and second v in tables); empty parts get one fill entry."""
    sign = np.array([[0, 1, 0, -1], [0, 0, 0, 1], [0, 0, 0, 0]])
    exp = np.array([[0, 3, 0, 7], [0, 0, 0, 2], [0, 0, 0, 0]])
    layout = SDLayout(group_rows=1, delta_bits=2, exp_bits=3, zero_codes=False)
    program = sd_program(sign, exp, 1, 2, layout)
    assert program.word_width == 4 + 2 + 2 and program.block_entries == [2, 1]
    code = lambda sg, e: encode_code(sg, e, 3, zero_codes=False)
    v, last, nlast = (lambda x: x << 4), 1 << 6, 1 << 7
    # group 0 (row 0 of block 0, then the short block's row 2): columns 1 (v 1), 3 (v 1), fill
    assert program.groups[0] == ([code(1, 3) | v(3) | nlast, code(-1, 7) | v(0) | last | nlast, last],
                                 [3], [1], [0], [1])
    # group 1 (row 1; no row in the short block): column 3 needs a fill (3 columns) then v 0
    assert program.groups[1] == ([v(3) | nlast, code(1, 2) | v(0) | last | nlast, last], [3], [3], [0],
                                 [0])
    assert encode_code(-1, 7) == 0b11111 and encode_code(0, 5) == 0 and code(-1, 7) == 0b1111
    with pytest.raises(ValueError, match="A zero coefficient needs zero codes"):
        code(0, 1)


def test_layout_follows_the_compressor_blocks():
    """4 x 1 blocks (a compressor's) on 16 and 4 PEs: groups of 4 rows, no nz bit, 2-bit
    exponents, and the ROM words are the stored blocks plus fills and one zero word a group."""
    rng = np.random.default_rng(7)
    stored = rng.random((8, 64)) < 0.12
    sign = np.repeat(stored, 4, axis=0) * rng.choice([-1, 1], size=(32, 64))
    exp = rng.integers(0, 4, size=(32, 64))
    for pes in (16, 4):
        layout = sd_layout(sign, exp, 1, pes)
        assert layout == SDLayout(group_rows=4, delta_bits=layout.delta_bits, exp_bits=2,
                                  zero_codes=False)
        program = sd_program(sign, exp, 1, pes, layout)
        real = sum(1 for words, *_ in program.groups for w in words if w & 0xFFFF)
        words = sum(len(words) for words, *_ in program.groups)
        assert words >= int(stored.sum()) and words - int(stored.sum()) <= stored.shape[0] * 2
        assert program.word_width == 4 * 3 + layout.delta_bits + 2
        assert real <= int(stored.sum())
    assert sd_layout(sign, exp, 1, 16, generic=True)[2:] == (3, True)


def test_short_tile_groups_store_only_their_rows():
    """A tile shorter than P: the last group's words hold the codes of the rows it has (2 of 4),
    the others B; a generic build (``narrow`` off) keeps B everywhere; the ROM bits count it."""
    from sparrow.hw.sd_program import sd_group_widths
    layer = _layer_short_tile(np.random.default_rng(5))
    sign, exp = layer.params["coef_sign"], layer.params["coef_exp"]
    layout = SDLayout(group_rows=4, delta_bits=6, exp_bits=3, zero_codes=False)
    program = sd_program(sign, exp, 1, 16, layout)
    cw = 4
    assert program.group_rows == [4, 4, 2] and program.word_widths == [4 * cw + 8, 4 * cw + 8, 2 * cw + 8]
    assert all(w < 1 << program.word_widths[g] for g, (words, *_) in enumerate(program.groups) for w in words)
    wide = sd_program(sign, exp, 1, 16, layout, narrow=False)
    assert wide.group_rows == [4, 4, 4] and wide.block_entries == program.block_entries
    assert sd_group_widths(10, 16, 4) == [4, 4, 2] and sd_group_widths(10, 4, 4) == [4]
    assert sd_group_widths(10, 16, 8) == [8, 2] and sd_group_widths(10, 16, 4, narrow=False) == [4, 4, 4]


def test_layout_never_costs_cycles():
    """The chosen layout's entries per row block never exceed the union of the block's
    columns (the cycles of one P-wide word per column), on random and block-sparse layers."""
    from sparrow.hw.sd_program import sd_row_blocks
    rng = np.random.default_rng(3)
    for trial in range(30):
        n_in, rows, tiles = int(rng.integers(1, 70)), int(rng.integers(1, 5)) * 4, int(rng.integers(1, 3))
        sign = rng.integers(-1, 2, size=(rows * tiles, n_in)) * (rng.random((rows * tiles, n_in))
                                                                < rng.random())
        exp = rng.integers(0, 8, size=sign.shape)
        for pes in (1, 4, 16):
            program = sd_program(sign, exp, tiles, pes)
            union = [max(1, len(cols)) for _, _, cols in sd_row_blocks(sign, tiles, pes)]
            assert all(e <= u for e, u in zip(program.block_entries, union)), (trial, pes)


def test_group_limit():
    """max_groups 1: one group of P rows (one code ROM, one z buffer); bad limits refused."""
    rng = np.random.default_rng(8)
    sign = np.repeat(rng.random((4, 32)) < 0.2, 4, axis=0).astype(int)
    exp = np.zeros((16, 32), int)
    assert sd_layout(sign, exp, 1, 16).group_rows == 4
    assert sd_layout(sign, exp, 1, 16, max_groups=1).group_rows == 16
    with pytest.raises(ValueError, match=r"Group limit must be an integer in \[1, 16\], not 0"):
        sd_layout(sign, exp, 1, 16, max_groups=0)


def test_exponent_width_follows_the_levels():
    """Codes carry as many exponent bits as the layer's largest exponent needs (generic: 3)."""
    sign = np.array([[1, 0, -1], [0, 1, 0]])
    assert sd_exp_bits(sign, np.array([[3, 7, 2], [0, 1, 0]])) == 2      # 7 is under a zero sign
    assert sd_exp_bits(sign, np.array([[0, 0, 0], [0, 0, 0]])) == 1
    assert sd_exp_bits(sign, np.array([[4, 0, 0], [0, 0, 0]])) == 3
    layer = random_layer("sd_linear", np.random.default_rng(5), name="l", in_=8, out=4, k=4,
                         density=0.5)
    layer.params["coef_exp"] = (layer.params["coef_exp"] % 4).astype(np.uint8)
    board = SDEngine.from_layer(layer, EngineConfig(pes=4))
    generic = SDEngine.from_layer(layer, EngineConfig(pes=4, generic=True))
    # codes of (2-bit exponent, sign[, nz]); generic: 5-bit codes, groups of one row (P = 4, up
    # to 16 groups), whole column indices (3 bits + 1), the board's entries per row block
    B, d, eb, zero = board.program.layout
    assert eb == 2 and generic.program.layout == (1, 4, 3, True)
    assert generic.program.block_entries == board.program.block_entries
    images = board.memory_images()
    assert images["codes" if B == 4 else "codes0"][0] == B * (3 + zero) + d + 2
    from sparrow.hw.onchip import discard_units
    discard_units(board), discard_units(generic)


def test_generic_layout_is_structural():
    """A generic build's layout depends on (in, rows, P, max_groups) only, each of its groups lies
    within one group of the board layout, and its entries per row block (cycles) are the board
    build's, on random and block-sparse layers of every sparsity."""
    from sparrow.hw.sd_program import sd_generic_layout, sd_group_sizes
    assert sd_generic_layout(64, 128, 8) == SDLayout(1, 7, 3, True)
    assert [sd_generic_layout(64, 128, p, g).group_rows for p, g in
            ((64, 16), (56, 16), (768, 16), (16, 1), (8, 2))] == [4, 1, 16, 16, 4]
    assert sd_generic_layout(20, 10, 56).group_rows == 1 and sd_generic_layout(20, 3, 8, 1)[0] == 3
    rng = np.random.default_rng(12)
    for trial in range(40):
        n_in, tiles = int(rng.integers(1, 40)), int(rng.integers(1, 3))
        rows = int(rng.integers(1, 30))
        pes, groups = int(rng.choice([1, 2, 4, 6, 8, 12, 16])), int(rng.integers(1, 17))
        block = int(rng.choice([1, 2, 3, 4]))
        mask = np.repeat(rng.random((-(-rows * tiles // block), n_in)) < rng.random(), block,
                         axis=0)[:rows * tiles]
        sign = mask * rng.choice([-1, 1], size=mask.shape)
        exp = rng.integers(0, 8, size=sign.shape)
        board = sd_layout(sign, exp, tiles, pes, max_groups=groups)
        generic = sd_layout(sign, exp, tiles, pes, generic=True, max_groups=groups)
        assert generic == sd_generic_layout(n_in, rows, pes, groups), trial
        h = generic.group_rows
        assert all(b % h == 0 for b in sd_group_sizes(rows, pes, groups) if b < min(pes, rows))
        program = sd_program(sign, exp, tiles, pes, generic, list_rows=board.group_rows)
        assert program.block_entries == sd_program(sign, exp, tiles, pes, board).block_entries, trial


def test_acc_width_bound():
    sign = np.array([[1, -1, 1], [0, 1, 0]])
    exp = np.array([[7, 7, 7], [0, 3, 0]])
    # worst row: 3 * 2^7 * 2^7 = 49152 -> 16 bits + sign
    assert sd_acc_width(sign, exp, 8) == 17


@pytest.mark.parametrize("kwargs, msg", [
    ({"pes": 0}, "PE count must be a positive integer, not 0"),
    ({"pes": 1025}, "PE count must be between 1 and 1024, not 1025"),
    ({"k": 3}, "Group size 3 does not divide input count 8"),
    ({"z_bits": 17}, "Z width must be between 8 and 16, not 17"),
    ({"out_lanes": 3}, "Output lane count 3 does not divide PE count 4"),
    ({"out_lanes": 4, "pes": 8, "basis": np.zeros((2, 2, 4, 4))},
     "Output lane count 4 does not divide the rows per tile 2"),
    ({"bcast": 5}, "Broadcast stages must be an integer in [0, 4], not 5"),
])
def test_engine_parameter_errors(kwargs, msg):
    args = dict(in_features=8, out_features=4, k=4, basis=np.zeros((1, 2, 4, 4)),
                coef_sign=np.zeros((4, 8)), coef_exp=np.zeros((4, 8)), bias=np.zeros(4),
                basis_shift=4, out_shift=4, relu=False, z_bits=8, pes=4)
    args.update(kwargs)
    if "k" in kwargs:
        args["basis"] = np.zeros((1, 2, 3, 3))
    with pytest.raises((TypeError, ValueError)) as info:
        SDEngine(**args)
    assert msg in str(info.value)


def test_pe_array_parameter_errors():
    with pytest.raises(TypeError, match="PE count must be a positive integer, not 'x'"):
        PEArray("x")


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("P, C, S", [(5, 1, 0), (6, 3, 2)])
def test_pe_array_unit(tmp_path, simulator, P, C, S):
    """PEArray alone: running-sum snapshots (wrapping at 16 bits), short blocks that stall;
    C sums per chain word and S broadcast stages."""
    from sparrow.tb.model_sim import sim_verilog
    from sparrow.tb.runner import run_cocotb
    rng = np.random.default_rng(11)
    blocks = 40
    lengths = rng.integers(1, 12, size=blocks)
    lengths[:4] = 1                                    # back-to-back single-entry blocks
    n = int(lengths.sum())
    last = np.zeros(n, np.int64)
    last[np.cumsum(lengths) - 1] = 1
    z = rng.integers(-128, 128, size=n)
    z[:8] = -128
    codes = rng.integers(0, 32, size=(n, P)) * (rng.random((n, P)) < 0.7)
    codes[:8] = 0b10111                                # +2^7 * -128 each: the sums wrap 16 bits
    gap = rng.integers(0, 2, size=n) * (rng.random(n) < 0.2)
    lanes = np.where(rng.random(n) < 0.3, rng.integers(1, P // C + 1, size=n), P // C)
    np.savez(tmp_path / "d.npz", z=z, codes=codes, last=last, gap=gap, lanes=lanes, acc_width=16,
             out_lanes=C)
    arr = PEArray(P, 8, 3, 16, out_lanes=C, bcast=S)
    run_cocotb(sim_verilog(arr, "pe_array"), "pe_array", "sparrow.tb.pe_array_tb", simulator,
               extra_env={"PE_ARRAY_TB_DATA": tmp_path / "d.npz"}, test_dir=tmp_path / "sim")


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_stream_bench_equals_cycle_bench(simulator):
    """The generated stream bench (no Python per cycle) and the per-cycle cocotb bench agree on
    every output and on the cycle count; the generic build agrees too."""
    rng = np.random.default_rng(31)
    layer = random_layer("sd_linear", rng, name="both", in_=12, out=10, k=4, tiles=2, density=0.4,
                         relu=True)
    x = _inputs(rng, 8, 12)
    expected = golden.sd_linear_forward(layer, x)
    runs = {}
    for bench, generic in (("cocotb", False), ("stream", False), ("stream", True)):
        engine = SDEngine.from_layer(layer, EngineConfig(pes=4, generic=generic))
        runs[bench, generic] = run_engine(engine, x, simulator, label="both", expected=expected,
                                          name="sd_engine", bench=bench)
        np.testing.assert_array_equal(runs[bench, generic][0], expected)
    assert runs["cocotb", False][1] == runs["stream", False][1] == runs["stream", True][1]
