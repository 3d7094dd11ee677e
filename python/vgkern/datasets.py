"""Small real data sets, offline: the one home of the digits data that sweeps, tests and the demo
train on.

    x, labels = vgkern.datasets.digits("train")             # x (1437, 64) float32
    x_test, labels_test = vgkern.datasets.digits("test")    # x (360, 64)
    x_seq, labels = vgkern.datasets.digits("train", sequence=True)   # (8, 1437, 8): row by row

sklearn's 8x8 handwritten digits (1797 images, 10 classes, shipped inside scikit-learn: nothing
is downloaded). The split is fixed and stratified (sklearn.model_selection.train_test_split,
test_size=TEST_FRACTION, shuffled by `seed`); both splits are standardised per pixel with the
training split's mean and standard deviation (pixels constant in the training split get
standard deviation 1), so the test split carries nothing of its own into the scaling.
"""
import functools
import math

import numpy as np

from . import _checks

SPLITS = ("train", "test")
TEST_FRACTION = 0.2
DIGITS_FEATURES, DIGITS_CLASSES, DIGITS_EXAMPLES = 64, 10, 1797
DIGITS_TEST_EXAMPLES = math.ceil(TEST_FRACTION * DIGITS_EXAMPLES)  # 360, as train_test_split
DIGITS_TRAIN_EXAMPLES = DIGITS_EXAMPLES - DIGITS_TEST_EXAMPLES     # 1437
DIGITS_ROWS = 8  # sequence=True reads an image row by row: T = 8 steps of 8 pixels


@functools.lru_cache(maxsize=8)
def _digits_split(seed):
    """{split: (x float64 standardised, labels int64)}, read-only, for one split seed."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise ImportError("vgkern.datasets.digits needs scikit-learn: "
                          "pip install 'vgkern[sweep]'") from err
    d = load_digits()
    x = np.asarray(d.data, dtype=np.float64)
    labels = np.asarray(d.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, labels, test_size=TEST_FRACTION, random_state=seed, stratify=labels)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    out = {}
    for split, xs, ys in (("train", x_train, y_train), ("test", x_test, y_test)):
        xs = (xs - mean) / std
        ys = np.ascontiguousarray(ys)
        xs.setflags(write=False)
        ys.setflags(write=False)
        out[split] = (xs, ys)
    return out


def digits(split: str = "train", seed: int = 0, dtype: "str | np.dtype" = "float32",
           sequence: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One split of sklearn's 8x8 digits -> (x, labels), new writable arrays.

    split: "train" (1437 images) or "test" (360), stratified by class.
    seed: the split's shuffle (sklearn's random_state, an integer >= 0); the same seed gives the
        same split on every machine.
    dtype: "float32" (default) or "float64", the dtype of x.
    sequence: False -> x: (N, 64), one row per image; True -> x: (8, N, 8), the image read row by
        row (T = 8 time steps of 8 pixels, the (T, B, I) layout LSTM and RNN take).
    Returns x: (N, 64) or (8, N, 8), standardised with the training split's per-pixel mean and
    standard deviation, and labels: (N,) int64 in 0..9.
    """
    split = _checks.choice("vgkern.datasets.digits: split", split, SPLITS)
    seed = _checks.size("vgkern.datasets.digits: seed", seed, low=0)
    dtype = _checks.dtype_name("vgkern.datasets.digits: dtype", dtype)
    sequence = _checks.flag("vgkern.datasets.digits: sequence", sequence)
    x, labels = _digits_split(seed)[split]
    x = x.astype(dtype)
    if sequence:
        x = np.ascontiguousarray(as_sequence(x))
    return x, labels.copy()


def as_sequence(x: np.ndarray) -> np.ndarray:
    """Images read row by row: x: (N, 64) -> (8, N, 8), a view (transpose) of x, not contiguous;
    np.ascontiguousarray it before a net takes it."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != DIGITS_FEATURES:
        raise ValueError(f"vgkern.datasets.as_sequence: x must have shape (N, {DIGITS_FEATURES}), "
                         f"got {x.shape}")
    return x.reshape(len(x), DIGITS_ROWS, DIGITS_FEATURES // DIGITS_ROWS).transpose(1, 0, 2)


def digits_arrays(split: str = "train", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The cached, read-only float64 arrays of digits(split, seed), what a sweep draws its
    batches from without a copy per call -> x: (N, 64), labels: (N,)."""
    split = _checks.choice("vgkern.datasets.digits_arrays: split", split, SPLITS)
    return _digits_split(_checks.size("vgkern.datasets.digits_arrays: seed", seed, low=0))[split]
