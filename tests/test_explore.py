"""The co-design explorer: the estimator against its stored data, Pareto fronts, resumption, Ray, the CLI."""

import json

import numpy as np
import pytest

from clirun import sparrow
from sparrow import SparrowError


@pytest.fixture(scope="module")
def mlp_dir(tmp_path_factory):
    """A random digits-shaped model directory (64 -> 128 sd k=4 -> 10 sd k=1), named digits-mlp so
    that the explorer measures it on the digits split."""
    from sparrow.modeldir import save_model
    from sparrow.sw.randmodel import random_layer, random_model
    rng = np.random.default_rng(16)
    fc1 = random_layer("sd_linear", rng, name="fc1", in_=64, out=128, k=4, density=0.15, relu=True)
    fc2 = random_layer("sd_linear", rng, name="fc2", in_=128, out=10, k=1, density=0.4)
    path = tmp_path_factory.mktemp("explore") / "mlp"
    save_model(random_model([fc1, fc2], (64,), name="digits-mlp"), path)
    return path


# ------------------------------------------------------------------ the estimator

def test_fit_reproduces_the_stored_place_and_route_records():
    """Every fitted record of data/sweep.json: the stored coefficients give its logic within 15% and
    (at the board's target clock) its fmax within 10% (the benchmark holds the held-out figures)."""
    from sparrow.explore.estimate import load_fit, predict
    from sparrow.explore.fit import load_sweep
    fit = load_fit()
    records = [r for r in load_sweep() if not r.get("held_out") and not r.get("failed")
               and r["board"] in fit["boards"]]
    assert len(records) >= 5
    for r in records:
        p = predict(fit["boards"][r["board"]], r["features"], r["layers"], r["config"])
        what = f"{r['board']} {r['model']} {r['config']}"
        assert abs(p["logic"] - r["logic"]) <= 0.15 * r["logic"], (what, p["logic"], r["logic"])
        if not r.get("explore"):    # explore builds ran at their chosen clock: no fmax in the fit
            assert abs(p["fmax_mhz"] - r["fmax_mhz"]) <= 0.10 * r["fmax_mhz"], (what, p["fmax_mhz"],
                                                                                 r["fmax_mhz"])


def test_the_sweep_compresses_its_models_with_the_cli(tmp_path):
    """``fit --sweep`` makes each model with ``python -m sparrow compress`` (MODELS), once."""
    from sparrow.explore.fit import sweep_model_dir
    out = sweep_model_dir(tmp_path, "dense")
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["name"] == "digits-mlp" and doc["meta"]["method"] == "dense-int8"
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert sweep_model_dir(tmp_path, "dense") == out and (out / "manifest.json").stat().st_mtime_ns == stamp


def test_refit_of_the_stored_sweep_gives_the_stored_coefficients(tmp_path):
    from sparrow.explore.fit import FIT_FILE, SWEEP_FILE, refit
    fresh = refit(SWEEP_FILE, tmp_path / "fit.json")
    stored = json.loads(FIT_FILE.read_text())
    for board, coef in stored["boards"].items():
        for key in ("logic", "ff", "bram", "period_ns"):
            assert np.allclose(fresh["boards"][board][key], coef[key], rtol=1e-4, atol=1e-4), (board, key)


def test_estimate_of_a_model(mlp_dir):
    from sparrow.hw.engine import EngineConfig
    from sparrow.hw.engines import model_cycles, multipliers
    from sparrow.modeldir import load_model
    from sparrow.explore.estimate import estimate
    model = load_model(mlp_dir)
    small, big = (estimate(model, "icebreaker", EngineConfig(pes=p)) for p in (4, 16))
    assert small["logic"] < big["logic"] and small["ff"] < big["ff"]
    assert big["dsp"] == sum(multipliers(l, EngineConfig(pes=16)) for l in model.layers) == 5
    assert big["cycles"] == model_cycles(model, EngineConfig(pes=16))
    assert big["cycles_per_vector"] == sum(big["cycles"].values())
    assert big["inferences_per_s"] == round(big["clock_mhz"] * 1e6 / big["cycles_per_vector"])
    assert big["clock_mhz"] <= 0.97 * big["fmax_mhz"] + 1e-9
    huge = estimate(model, "icebreaker", EngineConfig(pes=128))
    assert not huge["fits"] and huge["over"][0].startswith("logic ")


# ------------------------------------------------------------------ Pareto fronts

def test_pareto_front():
    from sparrow.explore.pareto import dominates, pareto_front
    obj = [("acc", "max"), ("ips", "max"), ("lut", "min")]
    pts = [{"n": 0, "acc": 0.9, "ips": 100, "lut": 50},
           {"n": 1, "acc": 0.9, "ips": 100, "lut": 60},    # dominated by 0 (more LUTs)
           {"n": 2, "acc": 0.95, "ips": 50, "lut": 80},    # more accurate: stays
           {"n": 3, "acc": 0.9, "ips": 100, "lut": 50},    # a duplicate of 0
           {"n": 4, "acc": 0.8, "ips": 200, "lut": 90},    # fastest: stays
           {"n": 5, "acc": 0.8, "ips": 150, "lut": 95}]    # dominated by 4
    assert [p["n"] for p in pareto_front(pts, obj)] == [0, 2, 4]
    assert [p["n"] for p in pareto_front(pts, obj, unique=False)] == [0, 2, 3, 4]
    assert dominates(pts[0], pts[1], obj) and not dominates(pts[0], pts[3], obj)
    assert not dominates(pts[2], pts[4], obj) and not dominates(pts[4], pts[2], obj)
    assert pareto_front([], obj) == []
    with pytest.raises(ValueError, match="objective sense must be one of max, min, not 'up'"):
        pareto_front(pts, [("acc", "up")])


def test_builds_alternate_fastest_and_most_accurate_models_within_the_budget():
    from sparrow.explore.explorer import choose_builds
    def pt(model, pes, acc, ips):
        return {"model_dir": model, "config": {"pes": pes}, "val_accuracy": acc, "inferences_per_s": ips,
                "logic": pes}
    front = [pt("a", 8, 0.95, 90), pt("b", 8, 0.90, 200),     # b: outside the 1.5 pp budget
             pt("a", 16, 0.95, 120), pt("c", 4, 0.96, 50), pt("d", 16, 0.955, 110)]
    chosen = choose_builds(front, fp32_val=0.965, max_drop=1.5, builds=3)
    assert [(p["model_dir"], p["config"]["pes"]) for p in chosen] == [("a", 16), ("c", 4), ("d", 16)]
    assert choose_builds(front, 0.965, 1.5, 0) == []
    assert len(choose_builds(front, 0.965, 1.5, 10)) == 3


# ------------------------------------------------------------------ resumption and Ray

TINY = {"dense-int8": {"qat_epochs": 1}, "circulant": {"epochs": 1, "qat_epochs": 1}}


def test_an_interrupted_explore_continues_from_its_cache(tmp_path):
    from sparrow.explore.explorer import explore
    seen = []

    def stop_after_one(record):
        seen.append(record)
        raise KeyboardInterrupt

    kwargs = dict(methods=("dense-int8", "circulant"), trials=2, builds=0, use_ray=False, batch=1,
                  overrides=TINY, log=lambda line: None, report=False)
    with pytest.raises(KeyboardInterrupt):
        explore("digits-mlp", "icebreaker", tmp_path, on_trial=stop_after_one, **kwargs)
    assert len(seen) == 1 and not seen[0]["cached"]
    assert not (tmp_path / "pareto.json").exists()
    again = []
    result = explore("digits-mlp", "icebreaker", tmp_path, on_trial=again.append, **kwargs)
    assert [r["cached"] for r in again] == [True, False]
    assert again[0]["key"] == seen[0]["key"] and again[0]["val_accuracy"] == seen[0]["val_accuracy"]
    assert {t["method"] for t in result["trials_detail"]} == {"dense-int8", "circulant"}
    # the circulant fc1 needs all 8 DSPs and fc2 one more: refused on the UP5K
    assert result["refused_by"].get("DSP", 0) > 0
    doc = json.loads((tmp_path / "pareto.json").read_text())
    assert doc["front"] and all(p["logic"] <= 0.95 * 5280 for p in doc["front"])


def test_a_proposal_already_run_is_not_a_new_trial(tmp_path):
    """digits-mlp's circulant space holds six settings (k of fc1; fc2's 10 rows take none): TPE proposes
    them again and again; the explore stops at six distinct trials, saying why."""
    from sparrow.explore.explorer import explore
    lines = []
    result = explore("digits-mlp", "icebreaker", tmp_path, methods=("circulant",), trials=8, builds=0,
                     use_ray=False, batch=2, overrides=TINY, log=lines.append, report=False)
    ks = sorted(t["params"]["circulant.k.fc1"] for t in result["trials_detail"])
    assert ks == [0, 4, 8, 16, 32, 64] and result["trials"] == 6
    assert not any("(cached)" in line for line in lines if line.startswith("[explore] trial"))
    assert lines[-1] == ("[explore] circulant: after 50 proposals in a row of settings already tried, its space "
                         "is taken as exhausted; its share went to the other methods")


def test_the_methods_take_the_trials_in_turn_from_their_hand_set_configurations():
    """One study per method: the first round asks each method's hand-set configuration, later rounds
    the methods in turn; a method whose space is exhausted (circulant: six settings) leaves the turn."""
    from sparrow.explore.explorer import MethodStudies
    from sparrow.explore.space import hand_params
    from sparrow.sw.pipeline import METHOD_CONFIGS
    dims = {"fc1": (64, 128), "fc2": (128, 10)}
    methods = ["smartdeal", "admm", "circulant"]
    studies = MethodStudies(methods, dims, {m: METHOD_CONFIGS[("digits-mlp", m)] for m in methods}, seed=0,
                            max_drop=1.0, patience=30)
    asked = []
    for _ in range(8):
        ts = studies.ask(3)
        asked.append([t.params for t in ts])
        studies.tell(ts, [(0.97, 1000 * (i + 1)) for i in range(len(ts))], 0.97)
    assert asked[0] == [hand_params(m, METHOD_CONFIGS[("digits-mlp", m)], dims) for m in methods]
    assert asked[0][1]["admm.density.fc1"] == 0.09 and asked[0][2]["circulant.k.fc1"] == 16
    flat = [p for batch in asked for p in batch]
    assert len({json.dumps(p, sort_keys=True) for p in flat}) == len(flat) == 24
    assert sum(p["method"] == "circulant" for p in flat) == 6 and studies.exhausted == ["circulant"]
    assert [p["method"] for p in flat[:6]] == methods * 2
    assert {p["method"] for p in asked[-1]} == {"smartdeal", "admm"}


def test_the_hardware_grid_is_the_one_the_estimator_is_fitted_on():
    from sparrow.fpga.boards import get_board
    from sparrow.explore.space import hardware_grid
    for board in ("icebreaker", "ulx3s-85f"):
        spec = get_board(board)
        assert {hw["max_groups"] for hw in hardware_grid(spec)} == {spec.max_groups}
    assert get_board("icebreaker").max_groups == 1


def test_the_search_is_constrained_to_the_accuracy_budget():
    from sparrow.explore.explorer import accuracy_violation
    assert accuracy_violation(0.95, 0.97, 1.0) == pytest.approx(0.01)
    assert accuracy_violation(0.96, 0.97, 1.0) == 0.0 and accuracy_violation(0.5, None, 1.0) == 0.0


def test_two_ray_workers_give_the_serial_results(mlp_dir):
    from sparrow.explore.estimate import load_fit
    from sparrow.explore.runner import Runner
    from sparrow.explore.trials import estimate_points
    tasks = [{"model_dir": str(mlp_dir), "board": "icebreaker", "fit": load_fit(), "max_util": 0.95,
              "grid": [{"pes": p, "out_lanes": 1, "bcast": b}]} for p in (4, 8, 16) for b in (0, 1)]
    runner = Runner(workers=2, use_ray=True)
    try:
        parallel = runner.map(estimate_points, tasks)
    finally:
        runner.shutdown()
    assert parallel == Runner(use_ray=False).map(estimate_points, tasks)
    assert [p[0]["config"]["pes"] for p in parallel] == [4, 4, 8, 8, 16, 16]


# ------------------------------------------------------------------ the commands

def test_explore_a_model_directory_and_its_report(mlp_dir, tmp_path, capsys):
    from sparrow.cli import main
    out = tmp_path / "x"
    assert main(["explore", "--model", str(mlp_dir), "--board", "icebreaker", "--builds", "0", "--serial",
                 "--out", str(out)]) == 0
    assert "on the Pareto front" in capsys.readouterr().out
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["trials"] == 1 and doc["front"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "Pareto front" in page
    assert main(["report", str(out), "--out", str(tmp_path / "again.html")]) == 0
    assert (tmp_path / "again.html").exists()
    assert main(["estimate", str(mlp_dir), "--board", "icebreaker", "--pes", "4", "16"]) == 0
    text = capsys.readouterr().out
    assert text.count("cycles per vector") == 2 and "LC " in text


def test_explore_your_own_model_file_with_its_data(tmp_path, capsys):
    """``--model FILE --data DATA.npz`` end to end: a .pt2 MLP on a synthetic task, its circulant and
    dense int8 trials on the data's splits, the report with the FFT error of its bc layer, then one
    of its model directories explored again with the same data."""
    import torch
    from torch import nn
    from sparrow.cli import main
    from sparrow.explore.trials import load_data
    from sparrow.sw.randmodel import synthetic_task, train_float
    data = synthetic_task(seed=3, sizes=(400, 200, 200))
    torch.manual_seed(0)
    net = train_float(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)), data, epochs=15)
    torch.export.save(torch.export.export(net, (torch.zeros(2, 16),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), tmp_path / "m.pt2")
    np.savez(tmp_path / "d.npz", **data)
    out = tmp_path / "x"
    assert main(["explore", "--model", str(tmp_path / "m.pt2"), "--data", str(tmp_path / "d.npz"),
                 "--board", "icebreaker", "--methods", "circulant", "dense-int8", "--trials", "3",
                 "--builds", "0", "--serial", "--out", str(out)]) == 0
    assert f"{tmp_path}/m.pt2 on icebreaker: 3 trials" in capsys.readouterr().out
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["data"] == str(tmp_path / "d.npz") and doc["front"]
    assert {t["method"] for t in doc["trials_detail"]} == {"circulant", "dense-int8"}
    assert all(t["test_accuracy"] is not None and t["fp32_val_accuracy"] > 0.5 for t in doc["trials_detail"])
    page = (out / "report.html").read_text()
    assert "FFT error histogram" in page and "circulant trial model(s), run by the golden model on the 200 " \
        f"test inputs of {tmp_path}/d.npz" in page
    # a build or a model directory loads the same data without a model file
    name, d = load_data(None, tmp_path / "d.npz")
    assert name == "model" and len(d.x_test) == 200
    dense = next(t["model_dir"] for t in doc["trials_detail"] if t["method"] == "dense-int8")
    assert main(["explore", "--model", dense, "--data", str(tmp_path / "d.npz"), "--board", "icebreaker",
                 "--builds", "0", "--serial", "--out", str(tmp_path / "y")]) == 0
    again = json.loads((tmp_path / "y" / "pareto.json").read_text())["trials_detail"][0]
    mine = next(t for t in doc["trials_detail"] if t["method"] == "dense-int8")
    assert again["val_accuracy"] == mine["val_accuracy"] and again["test_accuracy"] == mine["test_accuracy"]


@pytest.mark.parametrize("args, message", [
    (["explore", "--model", "nope", "--board", "icebreaker", "--out", "{tmp}/o"],
     "sparrow explore: error: --model nope: not a built-in model (digits-mlp, digits-cnn), a .pt2/.onnx "
     "file or a model directory"),
    (["explore", "--model", "{tmp}/m.onnx", "--board", "icebreaker", "--out", "{tmp}/o"],
     "sparrow explore: error: --model {tmp}/m.onnx: no such file"),
    (["explore", "--model", "digits-mlp", "--board", "icebreaker", "--trials", "0", "--out", "{tmp}/o"],
     "sparrow explore: error: --trials must be a positive integer, not 0"),
    (["explore", "--model", "digits-mlp", "--board", "icebreaker", "--methods", "magic", "--out", "{tmp}/o"],
     "sparrow explore: error: --methods: unknown method magic (known: smartdeal, circulant, admm, dense-int8)"),
    (["explore", "--model", "digits-mlp", "--board", "orangecrab-25f", "--out", "{tmp}/o"],
     "sparrow explore: error: --board orangecrab-25f: the resource model has no fit for it"),
    (["report", "{tmp}/nowhere"], "sparrow report: error: {tmp}/nowhere: no pareto.json (run sparrow explore "
                                  "--out {tmp}/nowhere first)"),
    (["estimate", "{tmp}/nowhere", "--board", "icebreaker"], "sparrow estimate: error: "),
])
def test_cli_errors_are_one_line(args, message, tmp_path, capsys):
    from sparrow.cli import main
    assert main([a.format(tmp=tmp_path) for a in args]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(tmp=tmp_path)), captured.err
    assert not (tmp_path / "o").exists()


def test_the_commands_run_as_a_user_runs_them(mlp_dir):
    r = sparrow("estimate", mlp_dir, "--board", "icebreaker", "--pes", "0")
    assert r.returncode == 1 and r.stderr.strip() == ("sparrow estimate: error: --pes 0 --out-lanes 1 --bcast 0 "
                                                      "--max-groups 1: PE count must be a positive integer, "
                                                      "not 0")


def test_runner_without_ray_refuses_an_address():
    from sparrow.explore.runner import Runner
    with pytest.raises(SparrowError, match="--address ray://h:1: needs Ray"):
        Runner(address="ray://h:1", use_ray=False)


def test_without_ray_one_line_says_how_to_install_it_and_the_tasks_run_serially(monkeypatch):
    import sys
    from sparrow.explore.runner import Runner
    monkeypatch.setitem(sys.modules, "ray", None)     # import ray raises ImportError
    lines = []
    runner = Runner(workers=2, log=lines.append)
    assert not runner.use_ray
    assert lines == ["Ray is not installed; running serially (for parallel trials and builds: "
                     "pip install 'ray==2.60.0')"]
    assert runner.map(abs, [-1, 2, -3]) == [1, 2, 3]
    with pytest.raises(SparrowError, match="^Ray is not installed: pip install 'ray==2.60.0'$"):
        Runner(use_ray=True)
