"""One-call compression: ``compress(model, config, data)``; export with :func:`export_model`.

``model`` is an ``nn.Sequential`` of standard layers (Linear, Conv2d, ReLU,
MaxPool2d, Flatten).  ``config`` is the configuration of one method of
:data:`sparrow.sw.methods.METHODS` (for example
``SmartDealConfig(input_shape=(64,), input_exp=-6, density=0.2)``), or the same
as a dict with a ``"method"`` key (:func:`make_config`).  :func:`compress`
swaps every Linear/Conv2d for the method's drop-in layer (ReLU fused into the
layer before it), wraps the result in a :class:`QuantModel` and, when training
data is given, runs the method's recipe and the final QAT: every phase distils
from the fp32 model unless ``distill`` is False.

:func:`export_model` turns the trained :class:`QuantModel` into a
:class:`sparrow.modeldir.Model`; in float64 its quant forward equals the
golden model bit for bit.
"""

import copy
from collections.abc import Mapping

import torch

from sparrow import SparrowError
from sparrow.sw.config import MethodConfig
from sparrow.sw.methods import METHODS
from sparrow.sw.qmodel import QuantModel, Trainer, calibrate, convert, export_model

__all__ = ["METHODS", "QuantModel", "make_config", "compress", "export_model", "calibrate"]

QAT_LR = 2e-4


def make_config(options):
    """The method configuration of a dict {"method": name, "input_shape": ..., "input_exp": ..., option: value}.

    Raises SparrowError for an unknown method or a missing input grid,
    ValueError / TypeError (naming the option) for a bad or unknown option.
    """
    options = dict(options)
    method = options.pop("method", None)
    if method not in METHODS:
        raise SparrowError(f"compress: unknown method {method!r} (known: {', '.join(METHODS)})")
    for key in ("input_shape", "input_exp"):
        if key not in options:
            raise SparrowError(f"compress: config needs {key!r}")
    base = METHODS[method].Config(input_shape=options.pop("input_shape"), input_exp=options.pop("input_exp"))
    return base.replace(**options)


def compress(model, config, data=None, progress=None, monitor=None):
    """Compress an fp32 ``nn.Sequential``; returns a :class:`QuantModel`.

    ``config``: a :class:`~sparrow.sw.config.MethodConfig` of one method (or its
    dict form, see :func:`make_config`).  With ``data = (x_train, y_train)`` the
    method's training recipe and QAT run and the model ends calibrated, in quant
    mode, ready for ``qm.method.export(qm)``; ``progress`` (tqdm-like) is
    updated once per epoch, ``config.epochs`` times in all; ``monitor(qm, phase)``
    runs after every training phase (:class:`~sparrow.sw.qmodel.Trainer`).  ``qm.method`` is
    the :class:`~sparrow.sw.methods.Method`, ``qm.config`` the configuration.
    """
    if isinstance(config, Mapping):
        config = make_config(config)
    elif not isinstance(config, MethodConfig):
        raise TypeError(f"Config must be a MethodConfig or a dict, not {type(config).__name__}")
    method = METHODS[config.method](config)
    torch.manual_seed(config.seed)
    qm = convert(model, method)
    qm.method, qm.config = method, config
    if data is None:
        return qm
    teacher = None
    if config.distill is not False:
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    trainer = Trainer(*data, config, teacher=teacher, progress=progress, monitor=monitor)
    method.recipe(qm, trainer)
    trainer.qat(qm, config.qat_epochs, QAT_LR if config.qat_lr is None else config.qat_lr, config.seed + 2)
    return qm
