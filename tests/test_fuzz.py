"""Property-based fuzzing, short profile: random small models of every engine kind, RTL == golden.

One structure per kind (:data:`sparrow.tb.fuzz.SHORT_STRUCTURES`: one compiled
Verilator model each, cached), random values inside it: sparsity patterns
with empty rows and all-zero tiles or blocks, extreme weights and int32
biases, inputs with all -128 and all 127 rows.  A failure shrinks to a minimal
model and names its model directory.  The long profile is
``python -m sparrow.bench.bench_fuzz --minutes N``.
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from sparrow.modeldir import load_model
from sparrow.tb.fuzz import KINDS, SHORT_STRUCTURES, check, models

SHORT = settings(max_examples=6, deadline=None, derandomize=True, database=None,
                 suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("kind", KINDS)
def test_fuzz_rtl_equals_golden(kind):
    @SHORT
    @given(models(kind, SHORT_STRUCTURES[kind]))
    def rtl_equals_golden(case):
        check(*case)

    rtl_equals_golden()


def test_fuzz_failure_names_a_model_directory(tmp_path, monkeypatch):
    """A mismatch writes the model (and inputs) as a directory that loads, and names it."""
    import sparrow.sw.golden as golden
    from hypothesis import find
    model, x = find(models("dense_linear", SHORT_STRUCTURES["dense_linear"]), lambda c: True,
                    settings=settings(database=None, derandomize=True))
    real = golden.run_model
    monkeypatch.setattr(golden, "run_model", lambda m, v: real(m, v) ^ np.int8(1))
    with pytest.raises(AssertionError, match="RTL != golden on verilator: vector 0, output 0") as info:
        check(model, x, out_root=tmp_path)
    path = next(tmp_path.iterdir())
    assert f"model directory: {path}" in str(info.value)
    again = load_model(path)
    assert json.dumps(again.manifest()["layers"]) == json.dumps(model.manifest()["layers"])
    np.testing.assert_array_equal(np.load(path / "x.npy"), x)
