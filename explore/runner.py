"""Run the explorer's tasks in parallel on Ray, or one after another without it.

:class:`Runner` maps a task function (:mod:`sparrow.explore.trials`) over a
list of JSON tasks and returns the results in task order.  With Ray it
starts a local instance of ``workers`` CPUs (``ray.init(num_cpus=...)``), or
joins an existing cluster at ``address`` (``ray.init(address=...)``: every
node needs sparrow and its tools installed); each task is one Ray task of one
CPU.  Without Ray the same functions run serially in this process, giving the
same results.
"""

import sys

from sparrow import SparrowError
from sparrow.validate import check_int

__all__ = ["Runner", "ray_available", "RAY_HINT"]

RAY_HINT = "Ray is not installed; running serially (for parallel trials and builds: pip install 'ray==2.60.0')"


def ray_available():
    """True when ``import ray`` works."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class Runner:
    """Maps task functions over tasks on Ray (``use_ray``) or serially.

    Parameters
    ----------
    workers : int
        CPUs of the local Ray instance (1..1024); ignored with ``address``.
    address : str or None
        An existing Ray cluster (``ray://host:10001`` or ``auto``).
    use_ray : bool or None
        None: Ray when importable (one line on stderr says how to install it
        otherwise); False: serially.
    """

    def __init__(self, workers=2, address=None, use_ray=None, log=None):
        check_int(workers, "Worker count", 1, 1024)
        self.workers, self.address = workers, address
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        if use_ray is None:
            use_ray = ray_available()
            if not use_ray:
                self.log(RAY_HINT)
        elif use_ray and not ray_available():
            raise SparrowError(RAY_HINT.split(";")[0] + ": pip install 'ray==2.60.0'")
        if address is not None and not use_ray:
            raise SparrowError(f"--address {address}: needs Ray (pip install 'ray==2.60.0')")
        self.use_ray = use_ray
        self._remote = {}
        self._started = False

    def _start(self):
        import ray
        if self._started or ray.is_initialized():
            self._started = True
            return
        kwargs = {"address": self.address} if self.address else {"num_cpus": self.workers}
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise SparrowError(f"could not start {where}: {str(exc).splitlines()[0]}") from None
        self._started = True

    def map(self, fn, tasks, on_result=None):
        """``[fn(task) for task in tasks]``, in parallel on Ray; ``on_result(i, result)`` as each finishes."""
        tasks = list(tasks)
        if not tasks:
            return []
        if not self.use_ray:
            results = []
            for i, task in enumerate(tasks):
                results.append(fn(task))
                if on_result:
                    on_result(i, results[-1])
            return results
        import ray
        self._start()
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = ray.remote(num_cpus=1, max_retries=0)(fn)
        refs = [remote.remote(task) for task in tasks]
        index = {ref: i for i, ref in enumerate(refs)}
        results = [None] * len(tasks)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    results[index[ref]] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.as_instanceof_cause()
                    if isinstance(cause, SparrowError):
                        raise SparrowError(str(cause).splitlines()[0]) from None
                    raise
                if on_result:
                    on_result(index[ref], results[index[ref]])
        return results

    def shutdown(self):
        """Stop the local Ray instance this runner started (a cluster keeps running)."""
        if self.use_ray and self._started:
            import ray
            ray.shutdown()
            self._started = False
