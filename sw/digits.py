"""The digits data set and the two digits models (all offline).

Data: scikit-learn's ``load_digits`` (1797 real 8x8 handwritten digits,
pixels 0..16).  The split is fixed:
``train_test_split(range(1797), test_size=360, random_state=0, stratify=target)``
gives 1437 training and 360 test samples.

Input quantisation: the real input is pixel / 16 in [0, 1]; its int8 code is
pixel * 4 (exact, 0..64) with ``scale_exp`` = -6 (real = int8 * 2**-6).

Models (fp32, ``nn.Sequential`` of standard layers, so ``compress`` can swap them):

* ``digits-mlp``: Linear(64, 128) + ReLU, Linear(128, 10).  Input [64].
* ``digits-cnn``: Conv2d(1, 16, 3, padding=1) + ReLU, MaxPool2d(2),
  Conv2d(16, 128, 3) + ReLU, MaxPool2d(2), Flatten, Linear(128, 10).  Input [1, 8, 8];
  activations [16, 8, 8] -> [16, 4, 4] -> [128, 2, 2] -> [128, 1, 1] -> [128] -> [10];
  19 856 weights (LeNet-5 has 61 k).  conv2 was 64 channels wide until
  2026-11-27: at 10 k weights the fixed costs (bases, indices, the first
  layer) left too few bits for the nonzeros that 40x compression needs.
"""

import numpy as np

__all__ = ["INPUT_SCALE_EXP", "MODELS", "load_split", "quantize_inputs", "make_model", "input_shape",
           "train", "accuracy", "set_threads"]

INPUT_SCALE_EXP = -6
MODELS = ("digits-mlp", "digits-cnn")
TEST_SIZE = 360
SPLIT_SEED = 0


def load_split():
    """(x_train, y_train, x_test, y_test): pixels as uint8 [N, 64] (0..16), labels int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    idx = np.arange(len(d.target))
    tr, te = train_test_split(idx, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=d.target)
    x = d.data.astype(np.uint8)
    y = d.target.astype(np.int64)
    return x[tr], y[tr], x[te], y[te]


def quantize_inputs(pixels):
    """Pixels 0..16 [N, 64] -> int8 codes pixel * 4 (real value pixel / 16 = code * 2**-6)."""
    p = np.asarray(pixels)
    if p.min() < 0 or p.max() > 16:
        raise ValueError("digits pixels must lie in [0, 16]")
    return (p.astype(np.int16) * 4).astype(np.int8)


def input_shape(name):
    return (64,) if name == "digits-mlp" else (1, 8, 8)


def make_model(name, seed=0):
    """A fresh fp32 ``nn.Sequential`` for ``name`` (weights from ``seed``)."""
    import torch
    from torch import nn
    torch.manual_seed(seed)
    if name == "digits-mlp":
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "digits-cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 128, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(128, 10))
    raise ValueError(f"unknown digits model {name!r}")


def set_threads(n=1):
    """Pin the CPU numerics and use ``n`` threads (:func:`sparrow.sw.numerics.pin`)."""
    from sparrow.sw.numerics import pin
    return pin(n)


def tensors(name, pixels, labels=None, dtype=None):
    """Float tensors of the real inputs (int8 code * 2**-6) shaped for ``name``."""
    import torch
    x = torch.tensor(quantize_inputs(pixels).astype(np.float64) * 2.0 ** INPUT_SCALE_EXP,
                     dtype=dtype or torch.float32)
    x = x.reshape((-1,) + input_shape(name))
    return x if labels is None else (x, torch.tensor(labels))


def shift_images(x, gen):
    """Shift each 8x8 digit (x [N, 64] or [N, 1, 8, 8]) by -1..1 pixels in y and x, zero fill."""
    import torch
    shape = x.shape
    img = torch.nn.functional.pad(x.reshape(-1, 1, 8, 8), (1, 1, 1, 1))
    n = img.shape[0]
    dy = torch.randint(0, 3, (n,), generator=gen)
    dx = torch.randint(0, 3, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(8)[None, :])                        # [n, 8]
    cols = (dx[:, None] + torch.arange(8)[None, :])
    out = img[torch.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    return out.reshape(shape)


def accuracy(model, x, y, batch=512):
    """Top-1 accuracy (fraction) of ``model`` on tensors x, y (eval mode, no grad)."""
    import torch
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


def train(model, x, y, epochs=30, lr=3e-3, batch=64, seed=0, weight_decay=0.0, penalty=None,
          after_step=None, progress=None, lr_end=None, teacher=None, kd_alpha=0.7, kd_temp=4.0,
          augment=None):
    """Adam + cross-entropy, cosine learning rate to ``lr_end`` (default lr/20).

    ``penalty()`` (optional) is added to the loss; ``after_step(step, total)``
    runs after every optimiser step (pruning schedules, ADMM); ``progress`` is a
    tqdm-like object updated once per epoch.  With a ``teacher`` model the loss is
    (1 - kd_alpha) * CE + kd_alpha * T^2 * KL(teacher || model) at temperature T (distillation).
    ``augment`` (default off) shifts each 8x8 image by a random
    -1..1 pixels in each direction (zero fill), so the teacher labels new inputs.
    """
    import torch
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    n = len(x)
    steps_per = (n + batch - 1) // batch
    total = epochs * steps_per
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total, eta_min=lr_end if lr_end is not None else lr / 20)
    loss_fn = torch.nn.CrossEntropyLoss()
    step = 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            xb = shift_images(x[idx], g) if augment else x[idx]
            out = model(xb)
            loss = loss_fn(out, y[idx])
            if teacher is not None:
                with torch.no_grad():
                    soft = torch.softmax(teacher(xb) / kd_temp, dim=1)
                kd = torch.nn.functional.kl_div(torch.log_softmax(out / kd_temp, dim=1), soft, reduction="batchmean")
                loss = (1 - kd_alpha) * loss + kd_alpha * kd_temp ** 2 * kd
            if penalty is not None:
                loss = loss + penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if after_step is not None:
                after_step(step, total)
        if progress is not None:
            progress.update(1)
    model.eval()
    return model
