"""Grid -> configurations: the product of each grid dict's values, checked, without duplicates,
each with its config_id; and what a configuration costs (memory bound, run-time estimate)."""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from typing import Any, Dict, List, Mapping, Union

import numpy as np

from ..datasets import DIGITS_CLASSES, DIGITS_FEATURES, DIGITS_TRAIN_EXAMPLES
from .spec import (APPLIES, CONFIG_COLUMNS, DEFAULTS, GRID_KEYS, MODELS, RNN_ACTIVATIONS,
                   SCHEMA_VERSION, STAT_COLUMNS, as_values, error, normalize, unknown_key)


def config_id(config: Mapping[str, Any]) -> str:
    """Stable id of a configuration: sha256 of its canonical JSON (NaN -> null), 16 hex digits."""
    canon: Dict[str, Any] = {"schema": SCHEMA_VERSION}
    for key in CONFIG_COLUMNS:
        v = config[key]
        canon[key] = None if isinstance(v, float) and math.isnan(v) else v
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _grid_list(grid, keys):
    grids: List[Dict[str, Any]]
    if grid is None:
        grids = [{}]
    elif isinstance(grid, dict):
        grids = [grid]
    elif isinstance(grid, (list, tuple)):
        grids = list(grid)
        if not grids:
            raise error("the grid is empty (an empty list of grids)")
        for g in grids:
            if not isinstance(g, dict):
                raise error(f"a grid must be a dict of key -> values or a list of such dicts; "
                            f"got an element of type {type(g).__name__}")
    else:
        raise error(f"grid must be a dict or a list of dicts, got {type(grid).__name__}")
    out = []
    for g in grids:
        both = set(g) & set(keys)
        if both:
            raise error(f"grid key(s) {sorted(both)} given both in the grid and as arguments")
        merged = {**g, **keys}
        for key in merged:
            if key not in GRID_KEYS:
                raise unknown_key(key)
        out.append(merged)
    return out


def _expand(g):
    """The configurations of one grid dict, in product order."""
    values = {}
    for key in GRID_KEYS:
        raw = as_values(key, g[key]) if key in g else [DEFAULTS[key]]
        normed = []
        for v in raw:
            v = normalize(key, v)
            if v not in normed:
                normed.append(v)
        values[key] = normed
    models = values["model"]
    for key in g:  # an explicitly given key must matter for some model of this grid
        if not any(key in APPLIES[m] for m in models):
            users = [m for m in MODELS if key in APPLIES[m]]
            raise error(f"grid key {key!r} applies to model {' or '.join(map(repr, users))} "
                        f"only; this grid has model {models}")
    if "sigma_w" in g or "sigma_b" in g:
        if "mlp" in models and "scaled_normal" not in values["init"]:
            raise error("sigma_w and sigma_b apply to init 'scaled_normal' only; add "
                        "init='scaled_normal' to the grid")
    if "forget_bias" in g and "lstm" not in models:
        raise error("forget_bias applies to model 'lstm' only")
    if "momentum" in g and "momentum" not in values["optimizer"]:
        raise error("momentum applies to optimizer 'momentum' only; add optimizer='momentum' "
                    "to the grid")
    if g.get("eval_every") and "digits" not in values["data"]:
        raise error("eval_every measures the test split of data 'digits'; add data='digits' "
                    "to the grid")
    # the optimizer with its momentum (NaN: not read by the optimizer)
    optimizers = [(o, m) for o in values["optimizer"]
                  for m in (values["momentum"] if o == "momentum" else [math.nan])]
    training = list(itertools.product(values["steps"], values["lr"], optimizers,
                                      values["weight_decay"], values["eval_every"]))

    def train_keys(data, steps, lr, optimizer, momentum, weight_decay, eval_every):
        return dict(steps=steps, lr=lr, optimizer=optimizer, momentum=momentum,
                    weight_decay=weight_decay, eval_every=eval_every if data == "digits" else 0)

    configs = []
    for model in models:
        if model == "mlp":
            inits = []
            for init in values["init"]:
                if init == "scaled_normal":
                    inits += [(init, sw, sb) for sw in values["sigma_w"] for sb in values["sigma_b"]]
                else:
                    inits.append((init, math.nan, math.nan))
            for (data, dtype, bn, act, (init, sw, sb), width, batch, depth, (steps, lr, (opt, m),
                 wd, ev), ls, seed) in itertools.product(
                    values["data"], values["dtype"], values["batch_norm"], values["activation"],
                    inits, values["width"], values["batch"], values["depth"], training,
                    values["log_scale"], values["seed"]):
                configs.append(dict(model=model, data=data, depth=depth, width=width,
                                    activation=act, init=init, sigma_w=sw, sigma_b=sb,
                                    batch_norm=bn, batch=batch, dtype=dtype, seed=seed,
                                    **train_keys(data, steps, lr, opt, m, wd, ev),
                                    log_scale=ls, forget_bias=math.nan))
        else:
            acts = [None] if model == "lstm" else [a for a in values["activation"]
                                                   if a in RNN_ACTIVATIONS]
            if not acts:
                raise error(f"this grid gives no 'rnn' configuration: the RNN's activation must "
                            f"be 'tanh' or 'relu', the grid has {values['activation']}")
            fbs = values["forget_bias"] if model == "lstm" else [math.nan]
            lengths = values["seq_len"] if values["seq_len"] != [None] else values["depth"]
            for (data, dtype, act, fb, width, batch, T, (steps, lr, (opt, m), wd, ev),
                 seed) in itertools.product(
                    values["data"], values["dtype"], acts, fbs, values["width"], values["batch"],
                    lengths, training, values["seed"]):
                if data == "digits":
                    T = 8  # an 8x8 image read row by row
                configs.append(dict(model=model, data=data, depth=T, width=width,
                                    activation=act, init=None, sigma_w=math.nan,
                                    sigma_b=math.nan, batch_norm=False, batch=batch,
                                    dtype=dtype, seed=seed,
                                    **train_keys(data, steps, lr, opt, m, wd, ev),
                                    log_scale=False, forget_bias=fb))
    return configs


def sweep_configs(grid: Union[None, Dict[str, Any], List[Dict[str, Any]]] = None,
                  **keys: Any) -> List[Dict[str, Any]]:
    """The configurations of a grid (dict, or list of dicts; keyword arguments are merged into
    every grid dict), checked and without duplicates, in grid order: a list of dicts with the
    configuration columns plus 'config_id'. Raises ValueError for unknown keys or values."""
    configs, seen = [], set()
    for g in _grid_list(grid, keys):
        for c in _expand(g):
            cid = config_id(c)
            if cid in seen:
                continue
            seen.add(cid)
            _check_config(c)
            configs.append({"config_id": cid, **c})
    if not configs:
        raise error("the grid is empty")
    return configs


def _min_bytes(c):
    """A lower bound of the memory one configuration takes: parameters and their gradients,
    one activation per layer (or step) for the batch, the input batch and the result rows, plus
    ~100 bytes of bookkeeping per layer. Only what certainly gets allocated, so that a refusal on
    this bound is never wrong."""
    item = 4 if c["dtype"] == "float32" else 8
    W, B, L = c["width"], c["batch"], c["depth"]
    digits = c["data"] == "digits"
    if c["model"] == "mlp":  # sizes [W] * (L + 1), or [64] + [W] * (L - 1) + [10] for digits
        if digits:
            params = (DIGITS_FEATURES + 1) * DIGITS_CLASSES if L == 1 else (
                W * (DIGITS_FEATURES + 1) + (L - 2) * W * (W + 1) + DIGITS_CLASSES * (W + 1))
            acts, data = (L - 1) * B * W, 0  # the digits batches are small
        else:
            params, acts, data = L * W * (W + 1), L * B * W, B * W * 8 * 2  # x, target: float64
    else:
        I = 8 if digits else W
        params = (4 if c["model"] == "lstm" else 1) * W * (I + W + 1)
        acts, data = L * B * W, 0 if digits else L * B * I * 8
    rows = c["steps"] * L * len(STAT_COLUMNS) * 8
    return 2 * params * item + acts * item + data + rows + 100 * L


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def _check_config(c):
    limit = _physical_memory()
    need = _min_bytes(c)
    if limit and need > limit:
        shown = {k: c[k] for k in ("model", "depth", "width", "batch", "steps", "dtype")}
        raise MemoryError(f"vgkern.sweep: configuration {shown} needs at least "
                          f"{need / 2**30:.4g} GiB, more than this machine's "
                          f"{limit / 2**30:.4g} GiB of physical memory")
    limit = float(np.finfo(c["dtype"]).max)
    for key in ("lr", "sigma_w", "sigma_b", "forget_bias", "momentum", "weight_decay"):
        if abs(c[key]) > limit:  # NaN (not applicable) passes
            raise error(f"grid key {key!r}: {c[key]!r} overflows {c['dtype']}")
    if c["batch_norm"] and c["batch"] < 2:
        raise error(f"batch_norm=True needs batch >= 2 (train-mode batch statistics), got "
                    f"batch={c['batch']}")
    if c["data"] == "digits" and c["batch"] > DIGITS_TRAIN_EXAMPLES:
        raise error(f"data='digits' trains on {DIGITS_TRAIN_EXAMPLES} examples (the training "
                    f"split); batch must be <= {DIGITS_TRAIN_EXAMPLES}, got {c['batch']}")


def cost(c):
    """Rough cost (multiply-adds) of a configuration, to schedule the long ones first."""
    w, b = c["width"], c["batch"]
    if c["model"] == "mlp":
        per_step = c["depth"] * w * w * b
    else:
        gates = 4 if c["model"] == "lstm" else 1
        per_step = c["depth"] * gates * w * 2 * w * b
    return c["steps"] * per_step + 1000 * c["depth"]
