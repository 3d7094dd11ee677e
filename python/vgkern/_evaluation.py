"""Held-out metrics: a net's loss and accuracy on labelled data, without gradients or statistics.

MLP.evaluate(x, labels): cross entropy of the outputs (the logits) and the fraction of examples
whose largest output is the label. LSTM/RNN.evaluate(x_seq, labels, readout): the same for a
read-out MLP on the last hidden state h_T, the form in which a recurrent net classifies (the
sweeps' row-by-row digits task trains exactly this pair).

What evaluation leaves as it was: parameters, gradients, the statistics switch, the train/eval
mode and the batch-norm running statistics (the forward runs in eval mode: batch norm uses its
running statistics, as torch's model.eval() would; the mode is restored afterwards). What it
overwrites: the activations the last forward saved for a backward, so call forward or step
again before a backward.
"""
import contextlib

import numpy as np

from . import _checks


def labels_input(labels, what, rows):
    """Integer class labels: a 1-D numpy integer array with `rows` entries, as int64."""
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray of integer class labels, got "
                        f"{type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{what} must hold integer class labels, got dtype {labels.dtype}")
    if labels.shape != (rows,):
        raise ValueError(f"{what} must have shape ({rows},) (one label per example), got "
                         f"{labels.shape}")
    return labels.astype(np.int64, copy=False)


def cross_entropy_accuracy(logits, labels, what):
    """logits: (B, C), labels: (B,) int64 in [0, C) -> (loss, accuracy): the mean softmax cross
    entropy, computed in float64 (log-sum-exp shifted by the row maximum), and the fraction of
    rows whose argmax is the label (ties: the first maximum, as numpy.argmax)."""
    classes = logits.shape[1]
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        bad = labels[(labels < 0) | (labels >= classes)][0]
        raise ValueError(f"{what}: labels must be in [0, {classes}) (the net has {classes} "
                         f"outputs), got {bad}")
    if not len(labels):
        raise ValueError(f"{what}: no examples to evaluate (0 rows)")
    z = np.asarray(logits, dtype=np.float64)
    shift = z.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        log_norm = np.log(np.exp(z - shift).sum(axis=1)) + shift[:, 0]
        loss = float(np.mean(log_norm - z[np.arange(len(z)), labels]))
    accuracy = float(np.mean(np.argmax(z, axis=1) == labels))
    return loss, accuracy


@contextlib.contextmanager
def inference(*nets):
    """Statistics off and eval mode (where a net has modes) for the block; both restored."""
    saved = [(net, net._core.stats, getattr(net._core, "training", None)) for net in nets]
    try:
        for net, _, training in saved:
            net._core.stats = False
            if training is not None:
                net._core.training = False
        yield
    finally:
        for net, stats, training in saved:
            net._core.stats = stats
            if training is not None:
                net._core.training = training


def evaluate_mlp(net, x, labels):
    """MLP.evaluate's work (see there)."""
    what = "MLP.evaluate"
    rows = _checks.shape_of(x)[0] if _checks.is_device_array(x) or isinstance(x, np.ndarray) \
        else None
    if rows is None:
        raise TypeError(f"{what}: x must be a numpy.ndarray, got {type(x).__name__}")
    labels = labels_input(labels, f"{what}: labels", rows)
    with inference(net):
        logits = net.forward(x)
    return cross_entropy_accuracy(logits, labels, what)


def evaluate_recurrent(net, x_seq, labels, readout):
    """LSTM/RNN.evaluate's work (see there)."""
    from .mlp import MLP

    what = f"{type(net).__name__}.evaluate"
    if not isinstance(readout, MLP):
        raise TypeError(f"{what}: readout must be a vgkern.MLP taking the hidden state "
                        f"(sizes[0] = hidden_size = {net.hidden_size}), got "
                        f"{type(readout).__name__}")
    if readout.sizes[0] != net.hidden_size:
        raise ValueError(f"{what}: readout must take the hidden state: readout.sizes[0] must be "
                         f"{net.hidden_size}, got {readout.sizes[0]}")
    if readout.dtype != net.dtype:
        raise TypeError(f"{what}: readout must have the net's dtype {net.dtype.name}, got "
                        f"{readout.dtype.name}")
    if not (_checks.is_device_array(x_seq) or isinstance(x_seq, np.ndarray)):
        raise TypeError(f"{what}: x_seq must be a numpy.ndarray, got {type(x_seq).__name__}")
    shape = _checks.shape_of(x_seq)
    if len(shape) != 3:
        raise ValueError(f"{what}: x_seq must have 3 dimensions (T, B, I), got shape {shape}")
    labels = labels_input(labels, f"{what}: labels", shape[1])
    with inference(net, readout):
        h_last = net.forward(x_seq)[1]
        if isinstance(h_last, tuple):  # LSTM: (h_T, c_T)
            h_last = h_last[0]
        logits = readout.forward(np.ascontiguousarray(h_last))
    return cross_entropy_accuracy(logits, labels, what)
