"""Compression to an accuracy budget: sensitivity + Optuna search, reproducible, traced, storage or cycles."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import sparrow
from sparrow import SparrowError
from sparrow.modeldir import load_model
from sparrow.sw.methods import CirculantConfig, METHODS
from sparrow.sw.randmodel import synthetic_task, train_float
from clirun import sparrow as _cli

TINY = {"prune_epochs": 2, "fix_epochs": 1, "qat_epochs": 1}


@pytest.fixture(scope="module")
def task():
    data = synthetic_task(seed=3, sizes=(400, 200, 200))
    torch.manual_seed(0)
    model = train_float(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)), data, epochs=15)
    return model, data


def _search(task, **kw):
    model, data = task
    return sparrow.compress(model, data, "smartdeal", max_drop=kw.pop("max_drop", 2.0), trials=kw.pop("trials", 3),
                            **TINY, **kw)


def test_search_is_reproducible_and_traced(task, tmp_path):
    m1, r1 = _search(task, out=tmp_path / "a")
    m2, r2 = _search(task)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in r1["search_trace"]]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in r2["search_trace"]]
    assert r1["search"]["chosen"] == r2["search"]["chosen"]
    assert np.array_equal(m1.layers[0].params["coef_sign"], m2.layers[0].params["coef_sign"])
    trace = r1["search_trace"]
    phases = [row["phase"] for row in trace]
    assert phases[:6] == ["sensitivity"] * 6 and phases[6:] == ["search"] * 3     # 2 layers x 3 probes, 3 trials
    assert trace[0]["settings"] == {"density": {"fc1": 0.05, "default": 1.0}}
    done = [row for row in trace if row["state"] == "complete"]
    assert all({"storage_bits", "val_accuracy", "drop_pp", "settings"} <= set(row) for row in done)
    # the choice: the least storage among runs within the budget
    ok = [row for row in done if row["within_budget"]]
    chosen = trace[r1["search"]["chosen_run"]]
    assert r1["search"]["met"] and chosen["storage_bits"] == min(row["storage_bits"] for row in ok)
    assert chosen["storage_bits"] == r1["weight_bits"]
    assert abs(r1["val_delta_pp"]) == pytest.approx(chosen["drop_pp"]) and r1["val_delta_pp"] >= -2.0
    assert r1["golden_vs_torch_mismatching_samples"] == 0
    doc = json.loads((tmp_path / "a" / "search.json").read_text())
    assert doc["search"]["chosen"] == r1["search"]["chosen"] and len(doc["trace"]) == len(trace)
    meta = load_model(tmp_path / "a").meta
    assert meta["search"]["trace"] == json.loads(json.dumps(trace))
    assert meta["config"]["density"] == r1["search"]["chosen"]["density"] or \
        meta["config"]["density"] == chosen["settings"]["density"]


def test_cycles_objective_minimises_the_cycle_model(task):
    from sparrow.cli.compress import cycle_cost
    from sparrow.hw.engines import layer_cycles
    from sparrow.hw.engine import EngineConfig
    m, r = _search(task, objective="cycles", pes=4, trials=2)
    cost = cycle_cost(4)
    assert r["search"]["objective"] == "cycles"
    assert r["search"]["cost"] == cost(m) == sum(layer_cycles(l, EngineConfig(pes=4)) for l in m.layers)
    done = [row for row in r["search_trace"] if row["state"] == "complete" and row["within_budget"]]
    assert r["search"]["cost"] == min(row["cost"] for row in done)


def test_dense_int8_needs_no_search_and_bad_budgets_are_refused(task):
    model, data = task
    m, r = sparrow.compress(model, data, "dense-int8", qat_epochs=1)
    assert "search" not in r and r["golden_vs_torch_mismatching_samples"] == 0
    with pytest.raises(SparrowError, match=r"compress: max_drop must be a number of percentage points in \[0, 100\]"):
        sparrow.compress(model, data, "smartdeal", max_drop=-1)
    with pytest.raises(SparrowError, match="compress: smartdeal has no option 'epochs'"):
        sparrow.compress(model, data, "smartdeal", epochs=3)
    with pytest.raises(SparrowError, match="objective must be 'storage' or 'cycles', not 'speed'"):
        sparrow.compress(model, data, "smartdeal", objective="speed")


def test_circulant_k_per_layer():
    cfg = CirculantConfig(input_shape=(16,), input_exp=-5, k={"fc1": 8, "fc2": 0, "default": 16})
    m = METHODS["circulant"](cfg)
    assert m.block_size(16, 32, "fc1") == 8 and m.block_size(32, 5, "fc2") is None
    assert m.block_size(32, 16, "fc3") == 16 and m.block_size(12, 12, "fc3") == 4
    with pytest.raises(ValueError, match=r"k\['fc1'\] must be one of"):
        CirculantConfig(input_shape=(16,), input_exp=-5, k={"fc1": 5})


def test_circulant_search_chooses_block_sizes(task):
    model, data = task
    m, r = sparrow.compress(model, data, "circulant", max_drop=3.0, trials=2, epochs=1, qat_epochs=1)
    probes = [row["settings"] for row in r["search_trace"] if row["phase"] == "sensitivity"]
    assert probes[0] == {"k": {"fc1": 4, "default": 0}}         # fc2 (32 -> 5) has no block size: never searched
    assert all(set(p["k"]) == {"fc1", "default"} for p in probes)
    assert r["golden_vs_torch_mismatching_samples"] == 0


def test_builtin_digits_search_starts_from_the_hand_tuned_settings(tmp_path):
    from sparrow.sw.pipeline import METHOD_CONFIGS, compress_model, digits_search_setup
    fp32, data, hand, start = digits_search_setup("digits-mlp", "smartdeal", epochs=10)
    tuned = METHOD_CONFIGS[("digits-mlp", "smartdeal")]["density"]
    assert start == {"levels": 4, "density": tuned} and "prune_epochs" in hand
    assert data.x_train.shape == (1149, 64) and data.x_val.shape == (288, 64) and data.x_test.shape == (360, 64)
    m, r = compress_model(fp32, data, "smartdeal", max_drop=5.0, trials=1, overrides={**hand, **TINY}, start=start,
                          name="digits-mlp", progress=False)
    first = r["search_trace"][6]         # after 2 layers x 3 probes
    assert first["phase"] == "search" and first["settings"]["density"] == tuned
    assert first["settings"]["levels"] == 4
    assert r["split"] == "test" and r["test_samples"] == 360 and r["golden_vs_torch_mismatching_samples"] == 0
    r = _cli("compress", "--model", "digits-mlp", "--method", "admm", "--data", tmp_path / "d.npz", "--out",
             tmp_path / "o")
    assert r.returncode == 1 and "--data: the built-in model digits-mlp brings its own data" in r.stderr


def test_cli_model_file_searches_by_default_and_fixed_settings_run_once(task, tmp_path):
    model, data = task
    torch.export.save(torch.export.export(model, (torch.zeros(2, 16),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), tmp_path / "m.pt2")
    np.savez(tmp_path / "d.npz", **data)
    args = ["compress", "--model", tmp_path / "m.pt2", "--data", tmp_path / "d.npz", "--quiet"]
    r = _cli(*args, "--method", "admm", "--objective", "cycles", "--board", "icebreaker", "--pes", "4",
             "--trials", "1", "--out", tmp_path / "cyc")
    assert r.returncode == 0, r.stderr
    assert "search (cycles, budget 1 pp)" in r.stdout and "equals its torch.export program on 400 samples" in r.stdout
    doc = json.loads((tmp_path / "cyc" / "search.json").read_text())
    assert doc["search"]["objective"] == "cycles" and len(doc["trace"]) == 7
    r = _cli(*args, "--method", "smartdeal", "--density", "0.4", "--out", tmp_path / "one")
    assert r.returncode == 0, r.stderr
    assert "search (" not in r.stdout and not (tmp_path / "one" / "search.json").exists()
    assert load_model(tmp_path / "one").meta["config"]["density"] == 0.4
    r = _cli(*args, "--method", "smartdeal", "--density", "0.4", "--max-drop", "1", "--out", tmp_path / "x")
    assert r.returncode == 1 and "--density / --k: the budget search chooses them" in r.stderr


@pytest.mark.parametrize("method", ["smartdeal", "admm"])
def test_dense_layers_in_a_block_pruned_model(task, method):
    model, data = task
    opts = TINY if method == "smartdeal" else {"admm_epochs": 2, "retrain_epochs": 1, "qat_epochs": 1}
    m, r = sparrow.compress(model, data, method, max_drop=None, dense={"fc1": True}, density=0.3, **opts)
    assert [l.kind for l in m.layers] == ["dense_linear", "sd_linear"]
    assert r["golden_vs_torch_mismatching_samples"] == 0 and m.meta["config"]["dense"] == {"fc1": True}


def test_cycles_search_may_keep_layers_dense(task):
    m, r = _search(task, objective="cycles", pes=2, trials=3, board="icebreaker")
    trials = [row for row in r["search_trace"] if row["phase"] == "search"]
    assert all(set(row["settings"]["dense"]) == {"fc1", "fc2"} for row in trials)
    chosen = r["search_trace"][r["search"]["chosen_run"]]["settings"]
    kinds = [l.kind for l in m.layers]
    assert kinds == ["dense_linear" if chosen.get("dense", {}).get(n) else "sd_linear" for n in ("fc1", "fc2")]
