"""MiniLM: SmartDeal decomposition of all-MiniLM-L6-v2, the saved compressed model and ``sparrow embed`` (offline).

The saved directory is checked against docs/format.md ("The compressed
MiniLM directory") with a reference written here: C = coef_sign *
2^(coef_exp + e_lo), W[o, g*k:(g+1)*k] = C[o, g*k:(g+1)*k] @ basis[o // R, g],
read straight from the files (safetensors, numpy), not through sparrow.
"""

import json

import numpy as np
import pytest
import torch

from clirun import sparrow
from sparrow import SparrowError
from sparrow.sw.minilm import (FACTORS, MANIFEST, check_factors, compress_minilm_to, decompose_linear, embed,
                               encoder_linears, load_compressed, load_minilm, load_sentences)

SENTENCES = 16      # held-out sentences measured by the short compression


def test_one_layer_decomposition_keeps_embeddings_close():
    torch.set_num_threads(1)
    st = load_minilm()
    _, held = load_sentences()
    assert len(held) >= 50
    with torch.no_grad():
        ref = st.encode(held[:8], convert_to_tensor=True)
    name, lin = encoder_linears(st)[0]
    assert name == "encoder.layer.0.attention.self.query" and tuple(lin.weight.shape) == (384, 384)
    w0 = lin.weight.detach().clone()
    sd, storage, err = decompose_linear(lin, k=4, levels=8)
    assert 0.0 < err < 0.25
    assert storage["fp32_bits"] / storage["weight_bits"] > 6
    assert torch.allclose(lin.weight, sd.weight_matrix().detach())
    assert not torch.equal(lin.weight, w0)
    with torch.no_grad():
        emb = st.encode(held[:8], convert_to_tensor=True)
    cos = torch.nn.functional.cosine_similarity(ref, emb, dim=1)
    assert cos.min() > 0.97


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A short compression (all 36 layers, 2 distillation steps) saved to a directory: (dir, report, model)."""
    out = tmp_path_factory.mktemp("minilm") / "sd"
    st = load_minilm()
    rep, path = compress_minilm_to(out, distill_steps=2, sentences=SENTENCES, progress=False, model=st)
    assert path == out / "report.json" and json.loads(path.read_text()) == rep
    return out, rep, st


def _reference_weight(entry, npz):
    """C . B of one layer from the saved arrays, as docs/format.md writes it (row vector times basis)."""
    name, out_f, in_f, k, t = entry["name"], entry["out"], entry["in"], entry["k"], entry["tiles"]
    sign, code, basis = npz[f"{name}.coef_sign"], npz[f"{name}.coef_exp"], npz[f"{name}.basis"]
    assert sign.dtype == np.int8 and code.dtype == np.uint8 and basis.dtype == np.float32
    assert basis.shape == (t, in_f // k, k, k) and set(np.unique(sign)) <= {-1, 0, 1}
    c = sign.astype(np.float64) * 2.0 ** (code.astype(np.float64) + entry["e_lo"])
    rows = out_f // t
    w = np.zeros((out_f, in_f))
    for g in range(in_f // k):
        for tile in range(t):
            r = slice(tile * rows, (tile + 1) * rows)
            w[r, g * k:(g + 1) * k] = c[r, g * k:(g + 1) * k] @ basis[tile, g].astype(np.float64)
    return w


def test_saved_directory_holds_c_times_b_and_the_factors(saved):
    from safetensors.numpy import load_file
    out, rep, _ = saved
    man = json.loads((out / MANIFEST).read_text())
    assert man["format"] == "sparrow-minilm" and man["version"] == 1 and man["factors"] == FACTORS
    assert len(man["layers"]) == rep["layers"] == 36 and rep["weights"] == 10616832
    assert rep["storage_ratio"] > 5.5 and rep["measured_on"].startswith("the saved directory")
    weights = load_file(str(out / "model.safetensors"))
    with np.load(out / FACTORS) as npz:
        for entry in man["layers"][:: 7]:          # one of each kind of linear, every layer position
            w = weights[f"{entry['name']}.weight"].astype(np.float64)
            ref = _reference_weight(entry, npz)
            assert np.abs(w - ref).max() <= 1e-6 * np.abs(ref).max(), entry["name"]


def test_reloaded_model_equals_the_in_memory_one(saved):
    out, rep, st = saved
    held = load_sentences()[1][:SENTENCES]
    again = load_compressed(out)
    np.testing.assert_allclose(embed(again, held), embed(st, held), rtol=0, atol=1e-6)
    assert rep["reload_max_abs_diff"] <= 1e-6
    # sentence-transformers opens the directory by itself, offline
    from sentence_transformers import SentenceTransformer
    plain = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    np.testing.assert_allclose(plain.encode(held[:4]), embed(st, held[:4]), rtol=0, atol=1e-6)


def test_factors_that_do_not_give_the_weights_are_refused(saved, tmp_path):
    out, _, st = saved
    man = json.loads((out / MANIFEST).read_text())
    first = man["layers"][0]["name"]
    with np.load(out / FACTORS) as npz:
        arrays = dict(npz)
    arrays[f"{first}.coef_sign"] = -arrays[f"{first}.coef_sign"]
    np.savez(tmp_path / FACTORS, **arrays)
    with pytest.raises(SparrowError, match=f"layer '{first}': saved weight differs from C.B"):
        check_factors(st, tmp_path, man)
    del arrays[f"{first}.basis"]
    np.savez(tmp_path / FACTORS, **arrays)
    with pytest.raises(SparrowError, match=f"layer '{first}': array 'basis' is missing"):
        check_factors(st, tmp_path, man)


def test_embed_command_writes_float32_and_its_cosine_is_the_report(saved, tmp_path):
    out, rep, _ = saved
    held = load_sentences()[1][:SENTENCES]
    f = tmp_path / "held.txt"
    f.write_text("\n".join(held) + "\n\n")
    r = sparrow("embed", out, "--file", f, "--out", tmp_path / "e.npy")
    assert r.returncode == 0, r.stderr
    assert f"embed: {SENTENCES} sentences" in r.stdout
    r = sparrow("embed", "original", "--file", f, "--out", tmp_path / "o.npy")
    assert r.returncode == 0, r.stderr
    e, o = np.load(tmp_path / "e.npy"), np.load(tmp_path / "o.npy")
    assert e.dtype == np.float32 and e.shape == (SENTENCES, 384) and o.shape == e.shape
    cos = (e * o).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(o, axis=1)
    assert abs(cos.mean() - rep["mean_cosine"]) < 1e-5 and abs(cos.min() - rep["min_cosine"]) < 1e-5
    r = sparrow("embed", out, "--text", held[0], "--text", held[1], "--out", tmp_path / "two.npy")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), e[:2], rtol=0, atol=1e-6)


def test_embed_errors_are_one_line_and_write_nothing(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / MANIFEST).write_text(json.dumps({"format": "sparrow-minilm", "version": 1, "layers": []}))
    cases = [
        (("embed", tmp_path / "missing", "--text", "a"), "missing: no such directory"),
        (("embed", foreign, "--text", "a"), "foreign: not a sparrow MiniLM directory"),
        (("embed", tmp_path / "ok", "--file", empty), "empty.txt: no sentences"),
        (("embed", tmp_path / "ok", "--file", tmp_path / "none.txt"), "none.txt: sentences file does not exist"),
    ]
    for args, message in cases:
        r = sparrow(*args, "--out", tmp_path / "e.npy")
        assert r.returncode == 1, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
        assert not (tmp_path / "e.npy").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".e.npy")]


def test_compress_refuses_to_replace_a_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SparrowError, match="not a sparrow MiniLM directory; refusing to replace it"):
        compress_minilm_to(tmp_path, distill_steps=0, layers=1, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
