"""History: the statistics of every training step, kept cheaply, as one tidy table at the end.

    hist = vgkern.History(net)
    for step in range(200):
        rep = net.step(x, labels, loss="cross_entropy")
        hist.record(step, rep)                        # a few microseconds: arrays copied in
    table = hist.to_pandas()                          # step, layer, every statistic, loss

record() copies the report's arrays into preallocated float64 columns that double in size when
full (amortised O(1) per step, no pandas, no allocation per step); to_pandas() builds the table
once. Calling rep.to_pandas() every step instead makes training about 5x slower.

Cost, measured with `python bench/bench_history.py` (a 20-layer 64-wide tanh MLP on the digits,
batch 128, plain SGD with its update statistics, blocks of 200 steps with and without record()
interleaved, and record() timed alone; BLAS 1 thread), on a shared, loaded 2-core machine: one
record() of a GradReport took 24 us against a 3.7 ms training step (0.66 %; the loops with and
without it were within noise), while rep.to_pandas() every step added about 400 %. The test
suite does not assert speed.
"""
import math
import numbers
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .report import GradReport, SequenceReport

if TYPE_CHECKING:  # annotations only: importing them here would be circular
    import pandas

    from .mlp import MLP
    from .recurrent import LSTM, RNN

TEST_COLUMNS = ("test_loss", "test_accuracy")


class _TupleGetter:
    """report -> the tuple of the named attributes (picklable, unlike a lambda)."""

    def __init__(self, names):
        self.names = tuple(names)
        self._get = operator.attrgetter(*self.names)

    def __call__(self, rep):
        values = self._get(rep)
        return values if len(self.names) > 1 else (values,)

    def __reduce__(self):
        return type(self), (self.names,)


class History:
    """Per-step statistics of one net's training: record(step, rep) each step, to_pandas() at
    the end.

    net: the vgkern.MLP (reports: GradReport, one row per layer: column "layer") or vgkern.LSTM
    / RNN (SequenceReport, one row per time step: column "t"; its per-network scalars, such as
    weight_ih_grad_norm, repeat on every row of their step) whose reports are recorded.
    capacity: steps to allocate for at first (the columns double when full).
    """

    report_type: "type[GradReport] | type[SequenceReport]"
    index: str  # the per-row column: "layer" or "t"
    num_rows: "int | None"  # L, or T once the first report came
    _n: int
    _steps: np.ndarray  # (capacity,) int64
    _arrays: np.ndarray  # (capacity, per-row fields, rows) float64
    _scalars: np.ndarray  # (capacity, per-step fields + 2) float64
    net_type: str
    _array_fields: "tuple[str, ...]"  # per-row fields, from the first report
    _scalar_fields: "tuple[str, ...]"  # per-step fields
    _order: "tuple[str, ...]"  # the report's fields in its order

    def __init__(self, net: "MLP | LSTM | RNN", capacity: int = 64):
        from .mlp import MLP
        from .recurrent import LSTM, RNN

        if isinstance(net, MLP):
            self.report_type, self.index, self.num_rows = GradReport, "layer", net.num_layers
        elif isinstance(net, (LSTM, RNN)):  # T is known at the first record
            self.report_type, self.index, self.num_rows = SequenceReport, "t", None
        else:
            raise TypeError(f"History: net must be a vgkern.MLP, LSTM or RNN, got "
                            f"{type(net).__name__}")
        if isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral) or capacity < 1:
            raise ValueError(f"History: capacity must be an integer >= 1, got {capacity!r}")
        self.net_type = type(net).__name__
        self._capacity: int = int(capacity)
        self._n = 0
        self._array_fields = self._scalar_fields = self._order = ()  # until the first report
        self._steps = np.zeros(0, dtype=np.int64)

    # ---- recording -------------------------------------------------------------------------

    def _allocate(self, rep):
        """Columns for this net's reports: per-row fields (arrays), per-step fields (floats)."""
        kind = type(rep)
        self._array_fields = kind._column_fields  # rep._columns' rows, in this order
        self._scalar_fields = tuple(n for n in kind.fields if n not in kind._column_fields)
        self._order = kind.fields
        self._get_scalars = _TupleGetter(self._scalar_fields)
        if self.num_rows is None:
            self.num_rows = len(rep)
        cap = self._capacity
        self._steps = np.zeros(cap, dtype=np.int64)
        # (steps, fields, rows): one record is one contiguous block
        self._arrays = np.zeros((cap, len(self._array_fields), self.num_rows))
        # (steps, scalar fields + test_loss, test_accuracy)
        self._scalars = np.zeros((cap, len(self._scalar_fields) + len(TEST_COLUMNS)))

    def _grow(self):
        cap = 2 * len(self._steps)
        for name in ("_steps", "_arrays", "_scalars"):
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], dtype=old.dtype)
            new[:self._n] = old[:self._n]
            setattr(self, name, new)

    def record(self, step: int, rep: "GradReport | SequenceReport", test_loss: float = math.nan,
               test_accuracy: float = math.nan) -> None:
        """Copies rep's statistics (its arrays: (rows,) each, and its floats) into the history
        as training step `step` (an integer; steps need not be consecutive or unique).
        test_loss, test_accuracy: held-out metrics at this step, e.g. from net.evaluate
        (NaN, the default, where none were measured)."""
        if type(rep) is not self.report_type:
            raise TypeError(f"History.record: rep must be the {self.report_type.__name__} of "
                            f"this {self.net_type}'s step or backward, got {type(rep).__name__}")
        if not self._order:
            self._allocate(rep)
        elif len(rep) != self.num_rows:
            raise ValueError(f"History.record: rep has {len(rep)} rows ({self.index}), the "
                             f"earlier records {self.num_rows}; one History follows one net "
                             "with one sequence length")
        if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral):
            raise TypeError(f"History.record: step must be an integer, got {step!r}")
        i = self._n
        if i == len(self._steps):
            self._grow()
        self._steps[i] = step
        self._arrays[i] = rep._columns
        self._scalars[i] = self._get_scalars(rep) + (test_loss, test_accuracy)
        self._n = i + 1

    # ---- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of records (steps recorded)."""
        return self._n

    @property
    def steps(self) -> np.ndarray:
        """steps: (records,) int64, the recorded step numbers in recording order (a copy)."""
        return self._steps[:self._n].copy()

    @property
    def columns(self) -> tuple:
        """The statistic columns of to_pandas() after step and the index, in table order (empty
        before the first record)."""
        return self._order + TEST_COLUMNS if self._order else ()

    def column(self, name: str) -> np.ndarray:
        """One statistic over the records -> values: (records, rows) float64 for a per-row
        field, values: (records,) for a per-step one (loss, test_loss, the LSTM/RNN network
        scalars). A copy."""
        n = self._n
        if self._order:
            if name in self._array_fields:
                return self._arrays[:n, self._array_fields.index(name)].copy()
            scalar_names = self._scalar_fields + TEST_COLUMNS
            if name in scalar_names:
                return self._scalars[:n, scalar_names.index(name)].copy()
        raise KeyError(f"History.column: no column {name!r}; columns: "
                       f"{', '.join(self.columns) or '(none before the first record)'}")

    def rows(self, columns: "Sequence[str]") -> np.ndarray:
        """The table as one float64 array -> values: (records * rows, len(columns)), rows in
        (record, index) order; a column the history does not have is NaN (what a sweep
        stores)."""
        n, rows = self._n, self.num_rows or 0
        out = np.full((n * rows, len(columns)), np.nan)
        if not n:
            return out
        scalar_names = self._scalar_fields + TEST_COLUMNS
        for j, name in enumerate(columns):
            if name in self._array_fields:
                out[:, j] = self._arrays[:n, self._array_fields.index(name)].ravel()
            elif name in scalar_names:
                out[:, j] = np.repeat(self._scalars[:n, scalar_names.index(name)], rows)
        return out

    def to_pandas(self) -> "pandas.DataFrame":
        """Tidy DataFrame, one row per (record, layer) (LSTM/RNN: per (record, t)): "step", the
        index ("layer" or "t"), every report field in the report's order (per-step values
        repeated on their rows), then test_loss and test_accuracy. Needs pandas."""
        try:
            import pandas as pd
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("History.to_pandas needs pandas: pip install pandas") from err
        n, rows = self._n, self.num_rows or 0
        data = {"step": np.repeat(self._steps[:n], rows),
                self.index: np.tile(np.arange(rows, dtype=np.int64), n)}
        columns = self.columns
        if columns:
            values = self.rows(columns)
            for j, name in enumerate(columns):
                data[name] = values[:, j]
        return pd.DataFrame(data)

    def __repr__(self):
        return (f"History({self.net_type}, records={self._n}, {self.index}s="
                f"{self.num_rows if self.num_rows is not None else '?'})")
