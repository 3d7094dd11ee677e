"""GradReport and SequenceReport: the statistics of one backward pass.

Their fields and the meaning of each come from the native statistics schema (csrc/core/report.h,
exported as _core.REPORT_COLUMNS, SEQUENCE_COLUMNS, SEQUENCE_WEIGHT_COLUMNS and REPORT_DOCS):
a statistic is declared there once, not here.
"""
import numpy as np

from . import _core

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


class _Report:
    """as_dict / to_pandas shared by the reports: every slot, one row per `_index` entry."""

    __slots__ = ()
    _index = None  # name of the row-index column: "layer" or "step"

    def __len__(self):
        return len(getattr(self, self.__slots__[0]))

    def as_dict(self):
        """{field: float64 array, or float for scalars such as loss}."""
        return {name: getattr(self, name) for name in self.__slots__}

    def to_pandas(self):
        """Tidy DataFrame: one row per entry, the index column then every field (scalars
        repeated); needs pandas."""
        try:
            import pandas as pd
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(f"{type(self).__name__}.to_pandas needs pandas: pip install pandas") from err
        frame = pd.DataFrame({self._index: np.arange(len(self))})
        for name in self.__slots__:
            frame[name] = getattr(self, name)
        return frame


class GradReport(_Report):
    __doc__ = f"""Per-layer statistics of one MLP backward pass: float64 arrays of length L (layer 0 =
    input side), one attribute per statistic, and the loss.

{_field_table({**_core.REPORT_DOCS["mlp"], "loss": LOSS_DOC})}
    """

    __slots__ = FIELDS + ("loss",)
    _index = "layer"

    def __init__(self, table, loss=float("nan")):
        table = np.asarray(table, dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != len(FIELDS):
            raise ValueError(f"GradReport: table must have shape (L, {len(FIELDS)}), got {table.shape}")
        for i, name in enumerate(FIELDS):
            setattr(self, name, np.ascontiguousarray(table[:, i]))
        self.loss = float(loss)

    @property
    def num_layers(self):
        return len(self)

    def __repr__(self):
        g = self.log10_preact_grad_norm
        return (f"GradReport(layers={self.num_layers}, loss={self.loss:.6g}, "
                f"log10_preact_grad_norm first={g[0]:.3f} last={g[-1]:.3f})")


class SequenceReport(_Report):
    __doc__ = f"""Statistics of one backward pass through time: per time step (float64 arrays of
    length T), per network (floats), and the loss.

{_field_table({**_core.REPORT_DOCS["recurrent_step"], **_core.REPORT_DOCS["recurrent_network"],
               "loss": LOSS_DOC})}
    """

    __slots__ = (SEQUENCE_FIELDS + WEIGHT_FIELDS + tuple("log10_" + f for f in WEIGHT_FIELDS)
                 + SEQUENCE_UPDATE_FIELDS + tuple("log10_" + f for f in SEQUENCE_UPDATE_FIELDS)
                 + ("loss",))
    _index = "step"

    def __init__(self, table, weight_norms, loss=float("nan")):
        table = np.asarray(table, dtype=np.float64)
        for i, name in enumerate(SEQUENCE_FIELDS):
            setattr(self, name, np.ascontiguousarray(table[:, i]))
        for name, value in zip(WEIGHT_FIELDS, weight_norms):
            setattr(self, name, float(value))
            with np.errstate(divide="ignore"):
                setattr(self, "log10_" + name, float(np.log10(value)))
        for name in SEQUENCE_UPDATE_FIELDS:
            setattr(self, name, float("nan"))
            setattr(self, "log10_" + name, float("nan"))
        self.loss = float(loss)

    @property
    def num_steps(self):
        return len(self)

    def __repr__(self):
        x = self.log10_x_grad_norm
        return (f"SequenceReport(steps={self.num_steps}, loss={self.loss:.6g}, "
                f"log10_x_grad_norm first={x[0]:.3f} last={x[-1]:.3f})")
