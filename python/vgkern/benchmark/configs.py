"""The shapes a benchmark runs: an MLP step (W, B, L, activation, batch norm) or an LSTM step
(H, B, T, I), with their names, nominal GEMM flop counts and the bench scripts' spellings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = ["MlpConfig", "LstmConfig", "Config", "parse_mlp_configs", "parse_lstm_configs",
           "ACTIVATIONS"]

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "elu")


@dataclass(frozen=True)
class MlpConfig:
    """One MLP training step: L dense layers W -> W on a batch of B, MSE loss; with batch norm,
    BatchNorm1d (train mode) between the GEMM and the activation of every hidden layer."""

    width: int  # W
    batch: int  # B
    layers: int  # L, sizes [W] * (L + 1)
    activation: str = "tanh"  # hidden layers; the last layer is identity
    batch_norm: bool = False

    model = "mlp"

    def __post_init__(self):
        if min(self.width, self.batch, self.layers) < 1:
            raise ValueError(f"MlpConfig: width, batch and layers must be >= 1, got "
                             f"{self.width}, {self.batch}, {self.layers}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"MlpConfig: activation must be one of {ACTIVATIONS}, got "
                             f"{self.activation!r}")
        if self.batch_norm and (self.layers < 2 or self.batch < 2):
            raise ValueError(f"MlpConfig: batch norm needs layers >= 2 and batch >= 2, got "
                             f"layers={self.layers}, batch={self.batch}")

    @property
    def name(self) -> str:
        """Short label for tables, e.g. "64x256x50:tanh" (width x batch x layers:activation)."""
        return f"{self.width}x{self.batch}x{self.layers}:{self.activation}" + (
            ":bn" if self.batch_norm else "")

    @property
    def sizes(self) -> list[int]:
        """Layer widths [W] * (L + 1), as MLP(sizes) takes them."""
        return [self.width] * (self.layers + 1)

    def flops(self, impl: str = "") -> float:
        """GEMM flops of one step: 3 GEMMs per layer (forward, dW, dx), 2 per multiply-add."""
        return 6.0 * self.batch * self.width * self.width * self.layers

    def as_dict(self) -> dict:
        """The configuration as a JSON-ready dict (the `config` of a bench JSON row)."""
        return {"width": self.width, "batch": self.batch, "layers": self.layers,
                "activation": self.activation, "batch_norm": self.batch_norm, "loss": "mse"}


@dataclass(frozen=True)
class LstmConfig:
    """One LSTM training step: T time steps of a batch of B, input size I, hidden size H; MSE
    on the last hidden state, backpropagation through time."""

    hidden: int  # H
    batch: int  # B
    steps: int  # T
    input: int = 0  # I; 0 means I = H

    model = "lstm"

    def __post_init__(self):
        if self.input == 0:
            object.__setattr__(self, "input", self.hidden)
        if min(self.hidden, self.batch, self.steps, self.input) < 1:
            raise ValueError(f"LstmConfig: hidden, batch, steps and input must be >= 1, got "
                             f"{self.hidden}, {self.batch}, {self.steps}, {self.input}")

    @property
    def name(self) -> str:
        """Short label for tables, e.g. "128x64x50" (hidden x batch x steps[x input])."""
        base = f"{self.hidden}x{self.batch}x{self.steps}"
        return base if self.input == self.hidden else f"{base}x{self.input}"

    def flops(self, impl: str = "") -> float:
        """GEMM flops of one step: forward X W_ih^T and h W_hh^T, backward dh, dW_ih, dW_hh, dx
        (3 GEMMs per weight), 2 per multiply-add, G = 4H gate columns (H for the RNN row)."""
        gates = 1 if impl == "vgkern_rnn" else 4
        return 6.0 * self.steps * self.batch * gates * self.hidden * (self.input + self.hidden)

    def as_dict(self) -> dict:
        """The configuration as a JSON-ready dict (the `config` of a bench JSON row)."""
        return {"hidden": self.hidden, "batch": self.batch, "steps": self.steps,
                "input": self.input, "loss": "mse (last hidden state)"}


Config = Union[MlpConfig, LstmConfig]


def parse_mlp_configs(text: str) -> list[MlpConfig]:
    """'WxBxL[:activation][:bn]' items, comma separated (e.g. '64x256x50:tanh:bn');
    the activation defaults to tanh."""
    configs = []
    for item in text.split(","):
        item = item.strip()
        shape, *tags = item.split(":")
        acts = [t for t in tags if t != "bn"]
        try:
            w, b, l = (int(v) for v in shape.lower().split("x"))
            (act,) = acts or ["tanh"]
            configs.append(MlpConfig(w, b, l, act, "bn" in tags))
        except ValueError as err:
            raise ValueError(f"--configs: expected WxBxL[:activation][:bn], got {item!r} "
                             f"({err})") from None
    return configs


def parse_lstm_configs(text: str) -> list[LstmConfig]:
    """'HxBxT' (input size I = H) or 'HxBxTxI' items, comma separated."""
    configs = []
    for item in text.split(","):
        item = item.strip()
        try:
            v = [int(s) for s in item.lower().split("x")]
            if len(v) not in (3, 4):
                raise ValueError("3 or 4 sizes")
            configs.append(LstmConfig(*v))
        except (TypeError, ValueError) as err:
            raise ValueError(f"--configs: expected HxBxT or HxBxTxI, got {item!r} "
                             f"({err})") from None
    return configs
