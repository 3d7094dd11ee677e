"""Text tables of the theory for the command line (`vgkern theory`, `vgkern demo`)."""
import math

from .mean_field import critical_sigma_w, mean_field


def _cell(v, fmt):
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return format(v, fmt)


def theory_table(activation, sigma_ws, sigma_b=0.0, *, elu_alpha=1.0):
    """Lines of text: q*, chi1, gain, c*, xi_q, xi_c, xi_grad and the phase for each sigma_w,
    then the critical sigma_w (the edge of chaos) for this sigma_b."""
    try:
        critical = critical_sigma_w(activation, sigma_b, elu_alpha=elu_alpha)
    except ValueError:
        critical = math.nan
    header = ("sigma_w", "q*", "chi1", "gain", "c*", "xi_q", "xi_c", "xi_grad", "phase")
    rows = []
    for s in sigma_ws:
        mf = mean_field(activation, s, sigma_b, elu_alpha=elu_alpha)
        phase = "critical" if abs(mf.chi1 - 1) < 1e-9 else "ordered" if mf.chi1 < 1 else "chaotic"
        rows.append((_cell(s, "g"), _cell(mf.q_star, ".6g"), _cell(mf.chi1, ".6g"),
                     _cell(mf.gain, ".6g"), _cell(mf.c_star, ".4g"), _cell(mf.xi_q, ".4g"),
                     _cell(mf.xi_c, ".4g"), _cell(mf.xi_grad, ".4g"), phase))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [f"Mean-field theory: activation={activation}, sigma_b={sigma_b:g}"
             + (f", elu_alpha={elu_alpha:g}" if activation == "elu" else "")
             + " (weights N(0, sigma_w^2/fan_in), infinite width)",
             "  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append("gain = sqrt(chi1): factor of ||dL/dz|| per layer; xi_grad = -1/ln chi1 "
                 "(layers per e-fold of ||dL/dz||^2, negative: growing)")
    lines.append(f"edge of chaos (chi1 = 1): sigma_w = {_cell(critical, '.6f')}")
    return lines


def measured_vs_predicted(summary, activations, depths):
    """Lines of text: the measured gain and the predicted one (sweep_summary's gain and
    predicted_gain) per activation, with and without batch norm, at the shallowest and the
    deepest depth of a sweep of MLPs (`vgkern demo`)."""
    mlp = summary[summary["model"] == "mlp"]
    shown = sorted({min(depths), max(depths)})
    lines = ["", "Measured vs predicted gain per layer (vgkern.theory: mean field at infinite "
             "width, xavier_normal = sigma_w 1;", "BN: the large-batch rate; gaps: finite width, "
             "and the MSE loss's gradient depends on the output, which the theory assumes it "
             "does not)"]
    head = "".join(f"{f'L={d} meas':>12}{f'L={d} pred':>12}" for d in shown)
    lines.append(f"{'activation':>12}{head}")
    for a in activations:
        for bn in (False, True):
            cells = []
            for d in shown:
                v = mlp[(mlp["depth"] == d) & (mlp["activation"] == a) & (mlp["batch_norm"] == bn)]
                cells += [f"{v['gain'].iloc[0]:>12.3f}", f"{v['predicted_gain'].iloc[0]:>12.3f}"] \
                    if len(v) else [f"{'-':>12}"] * 2
            lines.append(f"{a + ('+BN' if bn else ''):>12}" + "".join(cells))
    return lines
