"""sweep(): the grid's configurations run on a thread pool (or any executor), results saved as
they finish (journal.JournaledOutput), a progress bar, and Ctrl-C handling."""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import numbers
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Union

import numpy as np

from . import run, store
from .grid import cost, sweep_configs
from .journal import JournaledOutput
from .spec import error, require, to_float

if TYPE_CHECKING:
    import pandas


class SweepInterrupted(KeyboardInterrupt):
    """Raised by sweep() on Ctrl-C (or SIGTERM in the CLI) after everything finished was saved.
    .results: DataFrame of the grid's finished configurations; .finished, .total: counts
    (configurations of the grid, including ones resumed from an earlier run); .out: the path."""

    def __init__(self, results: pandas.DataFrame, finished: int, total: int,
                 out: Optional[Union[str, os.PathLike[str]]]) -> None:
        super().__init__(f"sweep interrupted: {finished} of {total} configurations finished"
                         + (f" and saved to {out}" if out else ""))
        self.results, self.finished, self.total, self.out = results, finished, total, out


def cpu_count() -> int:
    """The cores this process may run on (the default number of worker threads)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        return os.cpu_count() or 1


def _batches(configs, batch_size):
    for i in range(0, len(configs), batch_size):
        yield configs[i:i + batch_size]


def _executor_workers(executor):
    n = getattr(executor, "_max_workers", None)
    if n:
        return int(n)
    client = getattr(executor, "_client", None)  # distributed.cfexecutor.ClientExecutor
    if client is not None:
        with contextlib.suppress(Exception):
            info = client.scheduler_info()
            return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))
    return cpu_count()


def _run(todo, *, workers, executor, batch_size, blas_threads, on_result):
    """Run configurations, calling on_result(config, array) in this thread as each finishes."""
    by_id = {c["config_id"]: c for c in todo}
    if executor is None and workers == 1:  # serial, in this thread
        with run.limit_blas(blas_threads or 1):
            for c in todo:
                for cid, arr in run.run_batch([c]):
                    on_result(by_id[cid], arr)
        return

    own = executor is None
    threads = own or isinstance(executor, cf.ThreadPoolExecutor)
    n_workers = workers if own else _executor_workers(executor)
    if batch_size is None:  # threads: one configuration per task; processes: ~8 tasks per worker
        batch_size = 1 if threads else max(1, min(64, len(todo) // (8 * n_workers)))
    if own:
        executor = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vgkern-sweep")
    # Threads share one process: limit BLAS once, here. Other executors limit it in the task.
    limit_here = run.limit_blas(blas_threads or 1) if threads else contextlib.nullcontext()
    task_threads = None if threads else (blas_threads or 1)
    window = max(4, 3 * n_workers)  # tasks in flight: enough to keep workers busy, few to cancel
    batches = _batches(todo, batch_size)
    pending: Set[Any] = set()  # futures in flight

    def fill():
        while len(pending) < window:
            batch = next(batches, None)
            if batch is None:
                return
            pending.add(executor.submit(run.run_batch, batch, task_threads))

    def harvest(future):
        for cid, arr in future.result():
            on_result(by_id[cid], arr)

    try:
        with limit_here:
            fill()
            while pending:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    pending.discard(future)
                    harvest(future)
                fill()
    except BaseException:
        for future in pending:
            future.cancel()
        # keep what finished in the meantime
        for future in list(pending):
            if future.done() and not future.cancelled() and future.exception() is None:
                with contextlib.suppress(Exception):
                    harvest(future)
        raise
    finally:
        if own:
            executor.shutdown(wait=False, cancel_futures=True)


def _progress_bar(total, progress, resumed):
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        if progress:
            raise ImportError("progress=True needs tqdm: pip install 'vgkern[sweep]'") from None
        return None
    return tqdm(total=total, unit="config", desc="vgkern sweep", file=sys.stderr,
                dynamic_ncols=True, smoothing=0.05,
                postfix={"resumed": resumed} if resumed else None)


def _check_arguments(workers, executor, batch_size, blas_threads, flush_interval, resume,
                     progress, log, out):
    """-> (workers, flush_interval, out) checked and normalised; ValueError otherwise."""
    if workers is None:
        workers = cpu_count()
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise error(f"workers must be an integer >= 1, got {workers!r}")
    if executor is not None and not isinstance(executor, cf.Executor):
        raise error(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
            batch_size, numbers.Integral) or batch_size < 1):
        raise error(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if blas_threads is not None and (isinstance(blas_threads, bool) or not isinstance(
            blas_threads, numbers.Integral) or blas_threads < 1):
        raise error(f"blas_threads must be an integer >= 1, got {blas_threads!r}")
    if isinstance(flush_interval, bool) or not isinstance(flush_interval, numbers.Real) or not (
            to_float(flush_interval) >= 0):
        raise error(f"flush_interval must be a number of seconds >= 0, got {flush_interval!r}")
    for name, value in (("resume", resume), ("progress", progress)):
        if not (value is None and name == "progress") and not isinstance(value, (bool, np.bool_)):
            raise error(f"{name} must be True or False, got {value!r}")
    if log is not None and not callable(log):
        raise error(f"log must be a callable taking one line of text (e.g. print), got "
                    f"{type(log).__name__}")
    if out is not None:
        try:
            out = os.fsdecode(os.fspath(out))
        except TypeError:
            raise error(f"out must be a path (str or os.PathLike) ending in .parquet or .csv, "
                        f"got {type(out).__name__}") from None
        store.format_of(out)
    return workers, to_float(flush_interval), out


def sweep(grid: Union[None, Dict[str, Any], List[Dict[str, Any]]] = None, *,
          out: Optional[Union[str, os.PathLike[str]]] = None, resume: bool = True,
          workers: Optional[int] = None, executor: Optional[cf.Executor] = None,
          batch_size: Optional[int] = None, progress: Optional[bool] = None,
          flush_interval: float = 2.0, blas_threads: Optional[int] = None,
          log: Optional[Callable[[str], Any]] = None, **keys: Any) -> pandas.DataFrame:
    """Run a grid of configurations and return the tidy table (pandas DataFrame): one row per
    (configuration, step, layer), see the vgkern.sweeps docstring for the grid keys and the
    columns.

    grid: a dict {key: value or list of values}, or a list of such dicts (their union);
        keyword arguments are merged into every grid dict: sweep(depth=[5, 10], seed=range(3)).
    out: a .parquet or .csv path: finished configurations are saved as they finish (journal +
        atomic rebuilds, see the vgkern.sweeps docstring); resume=True (default) skips
        configurations already there, resume=False starts the file afresh.
    workers: threads (default: the number of cores); each configuration runs in one thread with
        the GIL released inside vgkern and BLAS limited to blas_threads (default 1: at the
        widths of a sweep, one configuration per core beats threaded small GEMMs; raise it for
        wide layers). workers=1 runs everything in this thread; ignored when executor is given.
    executor: any concurrent.futures.Executor (e.g. ProcessPoolExecutor, or a Dask
        client.get_executor()); one task per batch_size configurations (default: 1 for threads,
        about 8 tasks per worker otherwise); results stream back and are saved as they arrive.
    progress: a tqdm bar on stderr (None: only when stderr is a terminal).
    flush_interval: seconds between rebuilds of the output file (0: after every configuration).
    log: a callable taking one line of text (e.g. print) for messages such as what was resumed.

    Returns the rows of the grid's configurations in grid order (including resumed ones). On
    Ctrl-C raises SweepInterrupted (a KeyboardInterrupt) after saving everything finished.
    """
    require("pandas", "pyarrow")
    configs = sweep_configs(grid, **keys)  # checks the grid first: errors before any work
    workers, flush_interval, out = _check_arguments(
        workers, executor, batch_size, blas_threads, flush_interval, resume, progress, log, out)
    if any(c["data"] == "digits" for c in configs):
        run.digits_data()  # fails early without scikit-learn, and loads once for all threads
    if progress:
        require("tqdm", why="progress=True")

    output = JournaledOutput(out, resume, flush_interval) if out is not None else None
    results = {}  # config_id -> array, for configurations finished in this call
    done_before = set(output.done) if output else set()
    todo = [c for c in configs if c["config_id"] not in done_before]
    todo.sort(key=cost, reverse=True)  # longest first: no straggler at the end
    resumed = len(configs) - len(todo)
    if log is not None and output is not None and resumed:
        log(f"resuming: {resumed} of {len(configs)} configurations are already finished in "
            f"{output.path}; running the other {len(todo)}")
    bar = _progress_bar(len(todo), progress, resumed)

    def on_result(config, array):
        results[config["config_id"]] = array
        if output is not None:
            output.add(config, array)
        if bar is not None:
            bar.update(1)

    interrupted = None
    try:
        _run(todo, workers=workers, executor=executor, batch_size=batch_size,
             blas_threads=blas_threads, on_result=on_result)
    except KeyboardInterrupt as err:
        interrupted = err
    except BaseException:
        if output is not None:
            try:
                output.close()
            except BaseException:
                output.abandon()
        raise
    finally:
        if bar is not None:
            bar.close()

    grid_table = _grid_table(configs, results, output)
    if output is not None:
        import pyarrow as pa

        # The output is rebuilt from `results` (filled before each journal write), never from
        # the output's own lists alone: a Ctrl-C can land inside output.add, after the record
        # reached the journal but before the output took note of it.
        ids = set(c["config_id"] for c in configs)
        others = store.filter_ids(output.table(), ids, keep=False)
        final = grid_table if others.num_rows == 0 else pa.concat_tables([grid_table, others])
        output.close(final)
    frame = store.to_pandas(grid_table)
    if interrupted is not None:
        finished = sum(1 for c in configs if c["config_id"] in results or c["config_id"] in done_before)
        raise SweepInterrupted(frame, finished, len(configs), out) from None
    return frame


def _grid_table(configs, results, output):
    """The grid's finished configurations, in grid order, as an Arrow table."""
    import pyarrow as pa

    fresh = [(c, results[c["config_id"]]) for c in configs if c["config_id"] in results]
    new = store.arrow_table(fresh)
    if output is None:
        return new
    old_ids = [c["config_id"] for c in configs
               if c["config_id"] in output.done and c["config_id"] not in results]
    if not old_ids:
        return new
    old = store.filter_ids(output.table(), set(old_ids))
    both = pa.concat_tables([old, new])
    # stable sort by position in the grid (rows of one configuration keep their order)
    pos = {c["config_id"]: i for i, c in enumerate(configs)}
    keys = np.array([pos[c] for c in both.column("config_id").to_pylist()], dtype=np.int64)
    return both.take(pa.array(np.argsort(keys, kind="stable")))
