"""GradReport and SequenceReport: the statistics of one backward pass.

Their fields and the meaning of each come from the native statistics schema (csrc/core/report.h,
exported as _core.REPORT_COLUMNS, SEQUENCE_COLUMNS, SEQUENCE_WEIGHT_COLUMNS and REPORT_DOCS):
a statistic is declared there once, not here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _core

if TYPE_CHECKING:
    import pandas

FIELDS = tuple(_core.REPORT_COLUMNS)
SEQUENCE_FIELDS = tuple(_core.SEQUENCE_COLUMNS)
WEIGHT_FIELDS = tuple(_core.SEQUENCE_WEIGHT_COLUMNS)
# the optimizer's per-network statistics (vgkern.optim's opt.step(rep) sets them; NaN before)
SEQUENCE_UPDATE_FIELDS = tuple(_core.SEQUENCE_UPDATE_COLUMNS)
LOSS_DOC = "the step's loss (NaN after a plain backward)"


def _field_table(docs):
    """Docstring lines 'name  meaning', one per field of {name: meaning}, in order."""
    width = max(map(len, docs))
    return "\n".join(f"    {name:<{width}}  {meaning}" for name, meaning in docs.items())


class _Column:
    """A per-row field of a report: row `index` of its (fields, rows) float64 array `_columns`,
    a view made when read. One copy of the native table per report instead of one array
    attribute per field (GradReport has 34: their views and setattrs took 6-10 us a step)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __get__(self, rep, owner=None):
        return self if rep is None else rep._columns[self.index]

    def __set__(self, rep, value):
        rep._columns[self.index] = value


class _Report:
    """The fields every report shares: per-row arrays (rows of `_columns`, in `_column_fields`
    order) and scalars (slots); as_dict / to_pandas over `fields`, one row per `_index` entry."""

    __slots__: Tuple[str, ...] = ("_columns",)
    fields: Tuple[str, ...] = ()  # every field, in the order of as_dict and to_pandas
    _column_fields: Tuple[str, ...] = ()  # the per-row fields: _columns' rows in this order
    _index: Optional[str] = None  # name of the row-index column: "layer" or "step"
    _columns: NDArray[np.float64]
    loss: float

    if TYPE_CHECKING:  # the fields come from the native schema, known at run time only
        def __getattr__(self, name: str) -> Any: ...

    @classmethod
    def _define_columns(cls, names: Tuple[str, ...]) -> None:
        cls._column_fields = names
        for index, name in enumerate(names):
            setattr(cls, name, _Column(index))

    def _store_columns(self, table: ArrayLike) -> None:
        """table: (rows, len(_column_fields)), the native table, one column per field."""
        table = np.asarray(table, dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != len(self._column_fields):
            raise ValueError(f"{type(self).__name__}: table must have shape (rows, "
                             f"{len(self._column_fields)}), got {table.shape}")
        self._columns = table.T.copy()  # (fields, rows): one copy, each field a contiguous row

    def __len__(self) -> int:
        return self._columns.shape[1]

    def as_dict(self) -> Dict[str, Union[NDArray[np.float64], float]]:
        """{field: float64 array, or float for scalars such as loss}: each array (L,) (per
        layer) or (T,) (per time step)."""
        return {name: getattr(self, name) for name in self.fields}

    def to_pandas(self) -> pandas.DataFrame:
        """Tidy DataFrame: one row per entry, the index column then every field (scalars
        repeated); needs pandas."""
        try:
            import pandas as pd
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(f"{type(self).__name__}.to_pandas needs pandas: pip install pandas") from err
        frame = pd.DataFrame({self._index: np.arange(len(self))})
        for name in self.fields:
            frame[name] = getattr(self, name)
        return frame


class GradReport(_Report):
    """Per-layer statistics of one MLP backward pass: float64 arrays of length L (layer 0 =
    input side), one attribute per statistic, and the loss.

    Made by MLP.backward and MLP.step from the native table: (L, len(FIELDS)), one column per
    field in FIELDS' order. `GradReport.fields` names every field in order (as_dict and
    to_pandas follow it). The fields (the list is appended below at import, from the native
    schema):
    """

    __slots__ = ("loss",)
    fields = FIELDS + ("loss",)
    _index = "layer"

    def __init__(self, table: ArrayLike, loss: float = float("nan")) -> None:
        self._store_columns(table)
        self.loss = float(loss)

    @property
    def num_layers(self) -> int:
        """L, the number of layers (rows)."""
        return len(self)

    def __repr__(self):
        g = self.log10_preact_grad_norm
        return (f"GradReport(layers={self.num_layers}, loss={self.loss:.6g}, "
                f"log10_preact_grad_norm first={g[0]:.3f} last={g[-1]:.3f})")


class SequenceReport(_Report):
    """Statistics of one backward pass through time: per time step (float64 arrays of
    length T), per network (floats), and the loss.

    Made by LSTM/RNN.backward and step from the native table: (T, len(SEQUENCE_FIELDS)) and
    weight_norms, the per-network norms in WEIGHT_FIELDS' order. `SequenceReport.fields` names
    every field in order. The fields (the list is appended below at import, from the native
    schema):
    """

    __slots__ = (WEIGHT_FIELDS + tuple("log10_" + f for f in WEIGHT_FIELDS)
                 + SEQUENCE_UPDATE_FIELDS + tuple("log10_" + f for f in SEQUENCE_UPDATE_FIELDS)
                 + ("loss",))
    fields = SEQUENCE_FIELDS + __slots__
    _index = "step"

    def __init__(self, table: ArrayLike, weight_norms: Sequence[float],
                 loss: float = float("nan")) -> None:
        self._store_columns(table)
        for name, value in zip(WEIGHT_FIELDS, weight_norms):
            setattr(self, name, float(value))
            with np.errstate(divide="ignore"):
                setattr(self, "log10_" + name, float(np.log10(value)))
        for name in SEQUENCE_UPDATE_FIELDS:
            setattr(self, name, float("nan"))
            setattr(self, "log10_" + name, float("nan"))
        self.loss = float(loss)

    @property
    def num_steps(self) -> int:
        """T, the number of time steps (rows)."""
        return len(self)

    def __repr__(self):
        x = self.log10_x_grad_norm
        return (f"SequenceReport(steps={self.num_steps}, loss={self.loss:.6g}, "
                f"log10_x_grad_norm first={x[0]:.3f} last={x[-1]:.3f})")


GradReport._define_columns(FIELDS)
SequenceReport._define_columns(SEQUENCE_FIELDS)

# The field lists, from the native schema (a static docstring above, so that tools reading the
# source, such as the API reference site, see the description too).
_MLP_FIELD_DOCS = {**_core.REPORT_DOCS["mlp"], "loss": LOSS_DOC}
_SEQUENCE_FIELD_DOCS = {**_core.REPORT_DOCS["recurrent_step"],
                        **_core.REPORT_DOCS["recurrent_network"], "loss": LOSS_DOC}
GradReport.__doc__ = f"{GradReport.__doc__}\n{_field_table(_MLP_FIELD_DOCS)}\n    "
SequenceReport.__doc__ = f"{SequenceReport.__doc__}\n{_field_table(_SEQUENCE_FIELD_DOCS)}\n    "
