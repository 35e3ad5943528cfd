"""Property-based fuzzing of RTL == golden with hypothesis: random small valid models per engine kind.

:func:`models` draws one-layer model directories of a layer kind with an RTL
engine (sd_linear, dense_linear, bc_linear) and int8 inputs; :func:`check`
runs them on the RTL (the stream bench, generic engines: one compiled
simulator per structure) and compares every output with the integer golden
model.  A mismatch raises ``AssertionError`` naming a model directory written
under ``build/fuzz/`` (the model as drawn, with its inputs as ``x.npy``), so
the minimal example that hypothesis shrinks to is a directory that
``sparrow sim`` and ``sparrow golden`` reproduce.

A *structure* (sizes, k, tiles, z_bits, PEs, lanes; for bc_linear also its
shift, relu and weight-spectrum shift ``ws_shift``) fixes the compiled simulator; what is drawn inside it (signs,
exponents, bases, weights, biases, the sd/dense shifts and relu, sparsity
patterns with empty rows and all-zero blocks, inputs with all -128 and all
127 rows) never causes a compile.  The short
profile (tests/test_fuzz.py) uses :data:`SHORT_STRUCTURES`, one per kind;
the long one (``python -m sparrow.bench.bench_fuzz``) draws structures too
(:func:`structures`).
"""

import hashlib
import json

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sparrow.hw.engine import EngineConfig
from sparrow.modeldir import Layer, Model, save_model, validate_model

__all__ = ["SHORT_STRUCTURES", "structures", "models", "check", "KINDS"]

#: The layer kinds with an RTL engine that the fuzzer covers.
KINDS = ("sd_linear", "dense_linear", "bc_linear")

#: One structure per kind for the short profile: out not a multiple of P, T = 2
#: tiles, z_bits 12, two output lanes; relu on for sd and bc, off for dense.
SHORT_STRUCTURES = {
    "sd_linear": {"in": 12, "out": 10, "k": 3, "tiles": 2, "basis_shift": 5, "out_shift": 9,
                  "relu": True, "z_bits": 12, "pes": 4, "out_lanes": 1},
    "dense_linear": {"in": 9, "out": 11, "out_shift": 10, "relu": False, "lanes": 4},
    "bc_linear": {"in": 16, "out": 12, "k": 4, "out_shift": 9, "relu": True, "ws_shift": 6},
}

_INT8 = st.integers(-128, 127)
#: Biases: the int32 extremes, large and small values (shrinking goes to 0).
_BIAS = st.one_of(st.integers(-3000, 3000), st.sampled_from([-(1 << 31), (1 << 31) - 1]),
                  st.integers(-(1 << 31), (1 << 31) - 1))


def structures(kind):
    """A strategy of structures of ``kind`` (the long profile): small sizes, every option."""
    if kind == "sd_linear":
        @st.composite
        def sd(draw):
            k = draw(st.sampled_from([1, 2, 3, 4, 8]))
            n_in = k * draw(st.integers(1, max(1, 24 // k)))
            pes = draw(st.sampled_from([1, 2, 3, 4, 8]))
            lanes = draw(st.sampled_from([c for c in (1, 2, 4) if pes % c == 0]))
            tiles = draw(st.sampled_from([1, 2, 3]))
            rows = lanes * draw(st.integers(1, max(1, 12 // lanes)))
            return {"in": n_in, "out": rows * tiles, "k": k, "tiles": tiles,
                    "basis_shift": draw(st.integers(0, 12)), "out_shift": draw(st.integers(0, 16)),
                    "relu": draw(st.booleans()), "z_bits": draw(st.integers(8, 16)), "pes": pes,
                    "out_lanes": lanes}
        return sd()
    if kind == "dense_linear":
        return st.fixed_dictionaries({
            "in": st.integers(1, 24), "out": st.integers(1, 20), "out_shift": st.integers(0, 20),
            "relu": st.booleans(), "lanes": st.sampled_from([1, 2, 3, 8])})
    if kind == "bc_linear":
        @st.composite
        def bc(draw):
            k = draw(st.sampled_from([4, 8, 16]))
            return {"in": k * draw(st.integers(1, 3)), "out": k * draw(st.integers(1, 3)), "k": k,
                    "out_shift": draw(st.integers(0, 16)), "relu": draw(st.booleans()),
                    "ws_shift": draw(st.integers(0, 9 - k.bit_length()))}
        return bc()
    raise ValueError(f"no fuzzer for kind {kind!r}")


def _signs(draw, n_out, n_in, tiles):
    """Coefficient signs with a drawn sparsity pattern: random, empty rows, all-zero blocks."""
    pattern = draw(st.sampled_from(["random", "empty", "full", "empty_rows", "zero_tile"]))
    signs = draw(hnp.arrays(np.int8, (n_out, n_in), elements=st.sampled_from([0, 1, -1])))
    if pattern == "empty":
        signs[:] = 0
    elif pattern == "full":
        signs = np.where(signs == 0, 1, signs).astype(np.int8)
    elif pattern == "empty_rows":
        signs[::2] = 0
    elif pattern == "zero_tile":
        signs[: n_out // tiles] = 0
    return signs


@st.composite
def models(draw, kind, structure=None):
    """``(model, x)``: a one-layer validated model of ``kind`` and int8 inputs [N, in].

    ``structure`` is a dict as in :data:`SHORT_STRUCTURES` or a strategy of them
    (default: :func:`structures`).  The engine parameters (``pes``,
    ``out_lanes``, ``lanes``) travel as ``model.meta["engine"]``.
    """
    s = draw(structure if isinstance(structure, st.SearchStrategy)
             else st.just(structure) if structure is not None else structures(kind))
    n_in, n_out = s["in"], s["out"]
    if kind != "bc_linear" and structure is not None:
        # run-time values of a generic sd/dense build: drawn, not part of the structure
        s = {**s, "out_shift": draw(st.sampled_from([s["out_shift"], 0, 1, 31])
                                    | st.integers(0, 31)),
             "relu": draw(st.sampled_from([s["relu"], not s["relu"]]))}
        if kind == "sd_linear":
            s["basis_shift"] = draw(st.sampled_from([s["basis_shift"], 0, 31]) | st.integers(0, 31))
    attrs = {"in": n_in, "out": n_out, "out_shift": s["out_shift"], "relu": s["relu"]}
    bias = draw(hnp.arrays(np.int64, n_out, elements=_BIAS)).astype(np.int32)
    if kind == "sd_linear":
        k, tiles = s["k"], s["tiles"]
        attrs.update(k=k, basis_shift=s["basis_shift"], z_bits=s["z_bits"])
        params = {"basis": draw(hnp.arrays(np.int8, (tiles, n_in // k, k, k), elements=_INT8)),
                  "coef_sign": _signs(draw, n_out, n_in, tiles),
                  "coef_exp": draw(hnp.arrays(np.uint8, (n_out, n_in), elements=st.integers(0, 7))),
                  "bias": bias}
        engine = {"pes": s["pes"], "out_lanes": s["out_lanes"]}
    elif kind == "dense_linear":
        params = {"weight": draw(hnp.arrays(np.int8, (n_out, n_in), elements=_INT8)), "bias": bias}
        engine = {"dense_lanes": s["lanes"]}
    elif kind == "bc_linear":
        k = s["k"]
        attrs.update(k=k, ws_shift=s.get("ws_shift", 0))
        w = draw(hnp.arrays(np.int8, (n_out // k, n_in // k, k), elements=_INT8))
        if draw(st.booleans()):
            w[0] = 0                        # an all-zero block row
        params = {"w": w, "bias": bias}
        engine = {}
    else:
        raise ValueError(f"no fuzzer for kind {kind!r}")
    layer = Layer("fz", kind, attrs, params)
    model = validate_model(Model(name=f"fuzz-{kind}", input_shape=(n_in,), input_scale_exp=-4,
                                 output_scale_exp=-3, layers=[layer], meta={"engine": engine}))
    n = draw(st.integers(0, 4))
    x = draw(hnp.arrays(np.int8, (n, n_in), elements=_INT8))
    x = np.concatenate([np.full((1, n_in), -128, np.int8), np.full((1, n_in), 127, np.int8), x])
    return model, x


def engine_config(model):
    """The :class:`EngineConfig` of a drawn model (``meta["engine"]``)."""
    return EngineConfig(**model.meta.get("engine", {}))


def _save_failing(model, x, out_root):
    digest = hashlib.sha256()
    digest.update(json.dumps(model.manifest(), sort_keys=True).encode())
    for layer in model.layers:
        for key in sorted(layer.params):
            digest.update(np.ascontiguousarray(layer.params[key]).tobytes())
    digest.update(x.tobytes())
    path = out_root / f"{model.layers[0].kind}-{digest.hexdigest()[:12]}"
    save_model(model, path)
    np.save(path / "x.npy", x)
    return path


def check(model, x, simulator="verilator", out_root=None):
    """RTL == golden for every output of ``model`` on ``x``; returns the RTL run's stats.

    On a mismatch (or a failed simulation) writes the model directory and
    ``x.npy`` under ``out_root`` (default ``build/fuzz``) and raises
    ``AssertionError`` with its path, the engine parameters and the manifest.
    """
    from sparrow.sw.golden import run_model
    from sparrow.tb.model_sim import simulate_model
    from sparrow.tb.runner import SimulationFailed, project_build_dir
    expected = run_model(model, x)
    stats = {}
    try:
        y = simulate_model(model, x, simulator, engine_config(model), stats=stats)
        bad = np.argwhere(y != expected)
        problem = (None if not len(bad) else
                   f"vector {bad[0][0]}, output {bad[0][1]}: rtl {int(y[tuple(bad[0])])}, golden "
                   f"{int(expected[tuple(bad[0])])} ({len(bad)} mismatches of {y.size})")
    except SimulationFailed as exc:
        problem = str(exc)
    if problem is not None:
        path = _save_failing(model, x, out_root or project_build_dir() / "fuzz")
        raise AssertionError(
            f"RTL != golden on {simulator}: {problem}\n  model directory: {path} (inputs x.npy; "
            f"engine {model.meta.get('engine', {})})\n  manifest: "
            f"{json.dumps(model.manifest()['layers'])}\n  reproduce: sparrow sim {path} --inputs "
            f"{path / 'x.npy'} --out y.npy; sparrow golden {path} --inputs {path / 'x.npy'} "
            f"--out g.npy")
    return stats
