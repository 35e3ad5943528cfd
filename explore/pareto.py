"""Pareto fronts: the points no other point beats in every objective at once.

An objective is a key of the point dicts and a sense, ``"max"`` or
``"min"``.  Point a dominates point b when a is at least as good as b in
every objective and strictly better in one.  Equal points do not dominate
each other: both stay on the front (:func:`pareto_front` keeps the first of
exact duplicates only when ``unique`` is set).
"""

from sparrow.validate import check_choice

__all__ = ["dominates", "pareto_front"]


def _signed(point, objectives):
    return [point[key] if sense == "max" else -point[key] for key, sense in objectives]


def dominates(a, b, objectives):
    """True when point ``a`` dominates point ``b`` under ``objectives`` ([(key, "max"|"min"), ...])."""
    for _, sense in objectives:
        check_choice(sense, "objective sense", ("max", "min"))
    sa, sb = _signed(a, objectives), _signed(b, objectives)
    return all(x >= y for x, y in zip(sa, sb)) and any(x > y for x, y in zip(sa, sb))


def pareto_front(points, objectives, unique=True):
    """The non-dominated points of ``points``, in their given order.

    With ``unique`` only the first of points equal in every objective is kept.
    O(n^2) comparisons: fine for the thousands of points of an explore.
    """
    points = list(points)
    for _, sense in objectives:
        check_choice(sense, "objective sense", ("max", "min"))
    keys = [tuple(_signed(p, objectives)) for p in points]
    front, seen = [], set()
    for i, ki in enumerate(keys):
        if any(all(x >= y for x, y in zip(kj, ki)) and kj != ki for kj in keys):
            continue
        if unique:
            if ki in seen:
                continue
            seen.add(ki)
        front.append(points[i])
    return front
