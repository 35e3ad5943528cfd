"""The base of every parameterised hardware unit: parameters checked before the signature.

A :class:`ValidatedComponent` subclass implements ``_validate(*args, **kwargs)``:
it checks its parameters (with :mod:`sparrow.validate`), keeps them, and
returns the signature members.  A refused unit raises before it has ports and
is marked as never to be elaborated, so Amaranth does not warn about an unused
design; :func:`discard` does the same for a unit built only for its checks.
"""

from amaranth.lib import wiring

__all__ = ["ValidatedComponent", "discard"]


def discard(elaboratable):
    """Mark ``elaboratable`` as intentionally never elaborated (no "unused" warning).

    Amaranth warns when an Elaboratable is garbage-collected without being
    elaborated; it offers no public switch for a unit that was refused or built
    only to run its parameter checks, so this is the one place that sets it.
    """
    elaboratable._MustUse__silence = True
    return elaboratable


class ValidatedComponent(wiring.Component):
    """Runs ``self._validate(*args, **kwargs)`` (which returns the signature members) first."""

    def __init__(self, *args, **kwargs):
        try:
            members = self._validate(*args, **kwargs)
        except Exception:
            discard(self)
            raise
        super().__init__(members)

    def _validate(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement _validate")
