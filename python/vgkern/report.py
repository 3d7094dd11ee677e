"""GradReport: per-layer gradient and forward statistics of one backward pass."""
import numpy as np

from . import _core

FIELDS = tuple(_core.REPORT_COLUMNS)


class GradReport:
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

    def __init__(self, table, loss=float("nan")):
        table = np.asarray(table, dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != len(FIELDS):
            raise ValueError(f"GradReport: table must have shape (L, {len(FIELDS)}), got {table.shape}")
        for i, name in enumerate(FIELDS):
            setattr(self, name, np.ascontiguousarray(table[:, i]))
        self.loss = float(loss)

    @property
    def num_layers(self):
        return len(self.weight_grad_norm)

    def as_dict(self):
        """{field: float64 array of length L}, plus 'loss'."""
        out = {name: getattr(self, name) for name in FIELDS}
        out["loss"] = self.loss
        return out

    def to_pandas(self):
        """Tidy DataFrame: one row per layer, column 'layer' then every field (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("GradReport.to_pandas needs pandas: pip install pandas") from err
        frame = pd.DataFrame({"layer": np.arange(self.num_layers)})
        for name in FIELDS:
            frame[name] = getattr(self, name)
        frame["loss"] = self.loss
        return frame

    def __repr__(self):
        g = self.log10_preact_grad_norm
        return (f"GradReport(layers={self.num_layers}, loss={self.loss:.6g}, "
                f"log10_preact_grad_norm first={g[0]:.3f} last={g[-1]:.3f})")
