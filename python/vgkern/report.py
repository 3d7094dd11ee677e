"""GradReport: per-layer gradient and forward statistics of one backward pass."""
import numpy as np

from . import _core

FIELDS = tuple(_core.REPORT_COLUMNS)


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
    """Float64 arrays of length L (layer 0 = input side), one attribute per statistic.

    weight_grad_norm, bias_grad_norm   ||dL/dW_l||_F, ||dL/db_l||
    preact_grad_norm                   ||dL/dz_l||_F over the batch, z_l = h_{l-1} W_l^T + b_l
    act_grad_norm                      ||dL/dh_l||_F, h_l = act(z_l) (the last is ||grad_out||)
    log10_<norm>                       log10 of each norm; exact in log-scale mode, -inf for 0
    preact_mean, preact_std            mean and population std of the B * d_{l+1} entries of z_l
    saturated_fraction                 share of entries with act'(z) < 1% of max act'
                                       (sigmoid, tanh, elu; 0 for identity and relu)
    zero_fraction, dead_fraction       share of entries with h == 0; share of units that are 0
                                       for every example of the batch
    grad_log2_scale                    stored gradients are true gradients * 2**-grad_log2_scale
                                       (0 unless backward(log_scale=True))
    loss                               the step's loss (NaN after a plain backward)
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


SEQUENCE_FIELDS = tuple(_core.SEQUENCE_COLUMNS)
WEIGHT_FIELDS = ("weight_ih_grad_norm", "weight_hh_grad_norm", "bias_grad_norm")


class SequenceReport(_Report):
    """Per-time-step statistics of one backward pass through time (float64 arrays of length T).

    h_grad_norm[t], c_grad_norm[t]   ||dL/dh_t||_F, ||dL/dc_t||_F over the batch: the total
                                     gradient at step t, from its own loss and from later steps
                                     (c: LSTM only, NaN for the RNN)
    x_grad_norm[t]                   ||dL/dx_t||_F: the curve that shows vanishing through time
    log10_<norm>                     log10 of the three norms (-inf for an exact 0)
    forget_gate_mean[t]              mean forget-gate activation over B * H (LSTM; NaN for RNN)
    saturated_fraction[t]            share of gate units (LSTM: i, f, g, o; RNN: hidden units)
                                     whose derivative is below 1% of its maximum
    weight_ih_grad_norm, weight_hh_grad_norm, bias_grad_norm (floats, and log10_ versions)
    loss                             the step's loss (NaN after a plain backward)
    """

    __slots__ = SEQUENCE_FIELDS + WEIGHT_FIELDS + tuple("log10_" + f for f in WEIGHT_FIELDS) + ("loss",)
    _index = "step"

    def __init__(self, table, weight_norms, loss=float("nan")):
        table = np.asarray(table, dtype=np.float64)
        for i, name in enumerate(SEQUENCE_FIELDS):
            setattr(self, name, np.ascontiguousarray(table[:, i]))
        for name, value in zip(WEIGHT_FIELDS, weight_norms):
            setattr(self, name, float(value))
            with np.errstate(divide="ignore"):
                setattr(self, "log10_" + name, float(np.log10(value)))
        self.loss = float(loss)

    @property
    def num_steps(self):
        return len(self)

    def __repr__(self):
        x = self.log10_x_grad_norm
        return (f"SequenceReport(steps={self.num_steps}, loss={self.loss:.6g}, "
                f"log10_x_grad_norm first={x[0]:.3f} last={x[-1]:.3f})")
