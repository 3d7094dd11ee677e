"""Sweeps: per-layer gradient statistics over a grid of configurations, as a tidy table.

    import vgkern
    table = vgkern.sweep(depth=[5, 10, 20], activation=["sigmoid", "tanh", "relu"],
                         batch_norm=[False, True], seed=range(3), out="results.parquet")
    summary = vgkern.sweep_summary(table)      # fitted gain per layer, first/last ratio

Grid keys (each takes one value or a list; a list of grid dicts gives the union of their
products, without duplicates):

{keys}

A key that does not apply to a model is ignored for it (its column is empty: None/NaN, or False
for batch_norm/log_scale; momentum is NaN unless optimizer is "momentum"; eval_every is 0 on
Gaussian data); RNN rows take only the "tanh"/"relu" activations of the grid.

What one configuration computes (documented so that anyone can recompute it; the tests do):

* MLP, Gaussian data: ``net = vgkern.MLP([width] * (depth + 1), activation=activation,
  init=init, dtype=dtype, seed=seed, batch_norm=batch_norm[, sigma_w=..., sigma_b=...])``,
  then ``opt`` = the optimizer (below); for step s = 0 .. steps-1:
  ``rng = numpy.random.default_rng([seed, s])``, ``x = rng.standard_normal((batch, width))``,
  ``target = rng.standard_normal((batch, width))`` (drawn in float64, then cast to dtype),
  ``rep = net.step(x, target, loss="mse", log_scale=log_scale)``, ``opt.step(rep)`` (which
  unscales a log-scale report's gradients, updates the parameters and writes the update
  statistics into rep), then the rows of step s are rep's statistics.
* The optimizer: ``vgkern.optim.SGD(net, lr, weight_decay=weight_decay)`` for "sgd",
  ``SGD(net, lr, momentum=momentum, weight_decay=weight_decay)`` for "momentum",
  ``Adam(net, lr, weight_decay=weight_decay)`` / ``AdamW(...)`` for "adam" / "adamw".
* MLP, digits: sizes ``[64] + [width] * (depth - 1) + [10]``, loss "cross_entropy"; the data is
  ``vgkern.datasets.digits`` (split seed 0): step s trains on the examples
  ``rng.choice(1437, batch, replace=False)`` of the training split, ``rng =
  default_rng([seed, s])``. With eval_every = N > 0, the rows of steps s = 0, N, 2N, ... and
  of the last step carry ``test_loss, test_accuracy = net.evaluate(x_test, labels_test)`` on
  the test split, measured after that step's update (NaN on the other rows).
* LSTM / RNN, Gaussian data: ``vgkern.LSTM(width, width, dtype=dtype, seed=seed,
  forget_bias=forget_bias)`` or ``vgkern.RNN(width, width, nonlinearity=activation, dtype=dtype,
  seed=seed)``; x_seq ``(T, batch, width)`` then target
  ``(batch, width)`` from ``default_rng([seed, s])``; ``rep = net.step(x_seq, target, loss="mse")``
  (loss on the last hidden state, so the gradient has to travel back through time).
* LSTM / RNN, digits: each image is read row by row (T = 8, input size 8); a linear read-out
  ``vgkern.MLP([width, 10], activation="identity", dtype=dtype, seed=seed)`` on h_T with
  cross-entropy; its input gradient is back-propagated through time
  (``net.backward(None, grad_hT=readout.input_grad)``, whose report takes the read-out's loss);
  one optimizer each updates the read-out (first) and the net; test metrics as for the MLP,
  from ``net.evaluate(x_test_seq, labels_test, readout)``.

The table has one row per (configuration, step, layer): the configuration's columns (plus a
``config_id``: the first 16 hex digits of the sha256 of the configuration as canonical JSON,
stable across processes and machines), ``step``, ``layer``, ``loss``, every GradReport field and,
for LSTM/RNN rows (``layer`` = time step t), the SequenceReport fields (``h_grad_norm``,
``c_grad_norm``, ``x_grad_norm``, their log10, ``forget_gate_mean``, ``saturated_fraction``, and
the per-network ``weight_ih_grad_norm``, ``weight_hh_grad_norm``, ``bias_grad_norm`` and update
statistics repeated on every row), then ``test_loss`` and ``test_accuracy``. Columns that do not
apply to a row are NaN. The rows come from a vgkern.History of the configuration's reports.

Storage (``out="results.parquet"`` or ``".csv"``): every finished configuration is appended at
once, as one checksummed record written with a single write(), to a journal ``<out>.journal``
(so a killed process never loses a finished configuration, and a record cut short by a kill is
recognised and dropped). The output file itself is rebuilt from everything finished -- written
to a temporary file in the same folder, fsync'ed, then moved over the output with os.replace --
at most every ``flush_interval`` seconds and at the end, so it is always a complete, readable
file that is never more than a few seconds behind (the rebuild interval grows to 4x the last
rebuild's duration for very large files). Journal records reach the operating system at once
(a killed process loses nothing) and the disk at the next rebuild's fsync (a power cut loses at
most one interval). Re-running skips finished configurations (``resume=True``, matched by
config_id, reading both the output and the journal); a clean end removes the journal; a lock
on the journal refuses a second sweep on the same output. Ctrl-C stops, saves everything
finished and raises SweepInterrupted.

Throughput: configurations run on a thread pool (one per core by default) with BLAS limited to
one thread; vgkern releases the GIL in every native call. Within a process, configurations that
share a seed share one draw of the initial weights' random stream and of the input batches, and
each thread reuses its networks (vgkern.init.NormalStream, MLP.reinitialize), so a sweep pays
for the network and the random numbers once, not once per configuration; the results are
byte-identical to constructing vgkern.MLP(..., seed=seed) for every configuration.

Modules: spec (the grid keys' table, the table's columns), grid (grid -> configurations,
config_id), run (one configuration), store (Arrow schema, reading, atomic writes), journal (the
crash-safe output), runner (sweep(), executors, progress), summary (sweep_summary).
"""
from . import grid, journal, run, runner, spec, store, summary
from .grid import config_id, sweep_configs
from .run import digits_data, run_batch, run_config
from .runner import SweepInterrupted, cpu_count, sweep
from .spec import (COLUMNS, CONFIG_COLUMNS, CONFIG_TYPES, DATASETS, DEFAULTS, GRID_KEYS, KEYS,
                   MODELS, RNN_ACTIVATIONS, ROW_COLUMNS, SCHEMA_VERSION, STAT_COLUMNS)
from .store import arrow_schema, atomic_write, format_of, read_results
from .summary import GAIN_STAT, SUMMARY_COLUMNS, sweep_summary

__doc__ = __doc__.replace("{keys}", spec.describe_keys())

__all__ = [
    "COLUMNS", "CONFIG_COLUMNS", "CONFIG_TYPES", "DATASETS", "DEFAULTS", "GAIN_STAT", "GRID_KEYS",
    "KEYS", "MODELS", "RNN_ACTIVATIONS", "ROW_COLUMNS", "SCHEMA_VERSION", "STAT_COLUMNS",
    "SUMMARY_COLUMNS", "SweepInterrupted",
    "arrow_schema", "atomic_write", "config_id", "cpu_count", "digits_data", "format_of",
    "read_results", "run_batch", "run_config", "sweep", "sweep_configs", "sweep_summary",
]
