"""Typed, validated, frozen configurations of the compression methods.

Every method of :mod:`sparrow.sw.methods` has one configuration class derived
from :class:`MethodConfig`.  A configuration is checked when it is made (one
line naming the field: ``ValueError("density must be a number in (0, 1], not
1.5")``) and never changes afterwards: per-model settings are layered on with
:meth:`MethodConfig.replace` (:func:`dataclasses.replace`, checked the same way).

Options that are ``None`` are unset and take the default the recipe documents;
:meth:`MethodConfig.record` lists the method's reported defaults and the set
options only (what the model directory's ``meta.config`` holds).

Per-layer options (``density``, ``block``, ``levels``, ``break_even``) take one
value for every layer or a mapping {layer name: value, "default": value}
(layer names as exported: fc1, conv1, ...); mappings are stored read-only.
"""

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from sparrow.validate import check_bool, check_int, check_number, check_range

__all__ = ["MethodConfig", "per_layer", "layer_value", "check_density", "check_ratio", "check_levels",
           "check_block"]

# The order in which set options follow the reported defaults in record().
_OPTIONAL_ORDER = ("fix_lr", "retrain_lr", "qat_lr", "freeze_window", "permute", "tiles", "z_bits", "criterion",
                   "l1", "small_fraction", "small_density", "distill", "kd_alpha", "kd_temp", "augment",
                   "break_even", "dense")
_CONTEXT = ("input_shape", "input_exp", "name", "seed")
MAX_EPOCHS = 100000


def per_layer(value, name, check):
    """A per-layer option checked with ``check(v, name)``: a read-only mapping, or the plain value."""
    if isinstance(value, Mapping):
        for key, v in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{name} must map layer names to values, not {key!r}")
            check(v, f"{name}[{key!r}]")
        return MappingProxyType(dict(value))
    check(value, name)
    return value


def layer_value(value, layer, default):
    """The value of a per-layer option for ``layer`` (``default`` when unset or not listed)."""
    if isinstance(value, Mapping):
        return value.get(layer, value.get("default", default))
    return default if value is None else value


def _plain(value):
    return dict(value) if isinstance(value, MappingProxyType) else value


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Options every method shares.

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one input sample ([features] or [C, H, W]).
    input_exp : int
        Input grid: real input = int8 code * 2**input_exp.
    name : str
        Model name written into the model directory.
    seed : int
        Seeds torch before conversion and every training phase (phases use seed, seed + 1, seed + 2).
    qat_epochs : int
        Epochs of quantisation-aware training at the end of every recipe (0: calibration only).
    qat_lr : float or None
        QAT learning rate (default 2e-4).
    distill : bool or None
        Distil every phase from the fp32 model (default True).
    kd_alpha, kd_temp : float or None
        Distillation weight and temperature (defaults of :func:`sparrow.sw.digits.train`).
    augment : bool or None
        Shift training images by -1..1 pixels (default off).
    """

    input_shape: tuple
    input_exp: int
    name: str = "model"
    seed: int = 0
    qat_epochs: int = 10
    qat_lr: float | None = None
    distill: bool | None = None
    kd_alpha: float | None = None
    kd_temp: float | None = None
    augment: bool | None = None

    method: ClassVar[str] = None
    REPORTED: ClassVar[tuple] = ()          # defaults always listed by record(), in this order
    EPOCH_FIELDS: ClassVar[tuple] = ()      # the recipe's training phases, QAT last

    def __post_init__(self):
        shape = self.input_shape
        if not isinstance(shape, tuple | list) or not shape or \
                not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
            raise ValueError(f"input_shape must be a non-empty sequence of positive integers, not {shape!r}")
        object.__setattr__(self, "input_shape", tuple(shape))
        check_range(self.input_exp, "input_exp", -64, 64)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, not {self.name!r}")
        check_range(self.seed, "seed", 0, 2 ** 63 - 1)
        for f in self.EPOCH_FIELDS:
            check_range(getattr(self, f), f, 0, MAX_EPOCHS)
        for f in ("lr", "qat_lr", "fix_lr", "retrain_lr", "kd_temp"):
            if getattr(self, f, None) is not None:
                check_number(getattr(self, f), f, 0, 10, lo_open=True)
        if self.kd_alpha is not None:
            check_number(self.kd_alpha, "kd_alpha", 0, 1)
        for f in ("distill", "augment", "freeze_window", "permute"):
            if getattr(self, f, None) is not None:
                check_bool(getattr(self, f), f)
        self.check()

    def __deepcopy__(self, memo):
        return self     # immutable: copies of a model share its configuration

    def check(self):
        """Method-specific checks (subclasses); called once when the configuration is made."""

    def replace(self, **changes):
        """A new configuration with ``changes`` (checked); an unknown option is refused by name."""
        known = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in known:
                raise ValueError(f"{self.method} has no option {key!r} (options: {', '.join(sorted(known))})")
        return dataclasses.replace(self, **changes)

    @property
    def epochs(self):
        """Training epochs of the whole recipe (for progress bars)."""
        return sum(getattr(self, f) for f in self.EPOCH_FIELDS)

    def record(self):
        """{option: value} for the model directory: the reported defaults, the set options, the context."""
        out = {k: _plain(getattr(self, k)) for k in self.REPORTED}
        for k in _OPTIONAL_ORDER:
            if k not in out and getattr(self, k, None) is not None:
                out[k] = _plain(getattr(self, k))
        out.update((k, getattr(self, k)) for k in _CONTEXT)
        return out


def check_density(value, name):
    check_number(value, name, 0, 1, lo_open=True)


def check_ratio(value, name):
    check_number(value, name, 0, 1)


def check_levels(value, name):
    check_int(value, name, 1, 8)


def check_block(value, name):
    check_int(value, name, 1, 4096)

