"""The co-design explorer: compression settings and hardware parameters chosen together.

It sits above every other package (docs/design.md): it compresses models
(sw/), sizes engines and estimates their cost (hw/), confirms points in RTL
simulation (tb/) and place and route (fpga/).  Modules, one job each:

- :mod:`~sparrow.explore.features`: the structural features of a model and an
  engine configuration that the resource model reads.
- :mod:`~sparrow.explore.estimate`: resources, fmax and cycles before synthesis,
  from the fitted coefficients in ``data/fit.json``.
- :mod:`~sparrow.explore.fit`: the place-and-route sweep behind them
  (``data/sweep.json``) and the least-squares refit
  (``python -m sparrow.explore.fit``).
- :mod:`~sparrow.explore.pareto`: Pareto fronts.
- :mod:`~sparrow.explore.cache`: results cached by their inputs (resumption).
- :mod:`~sparrow.explore.trials`, :mod:`~sparrow.explore.runner`,
  :mod:`~sparrow.explore.explorer`: trials, their parallel execution on Ray
  (serially without it) and the search itself.
- :mod:`~sparrow.explore.report`: the HTML report with its plots.
"""
