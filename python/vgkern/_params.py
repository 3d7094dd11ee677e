"""Parameters held by a native object: per-layer numpy views into one flat buffer."""
import numpy as np


class ParameterList:
    """Per-layer numpy views into a net's flat buffer. `lst[i][...] = a` writes in place;
    `lst[i] = a` copies `a` in after checking shape and dtype."""

    def __init__(self, name, arrays):
        self._name = name
        self._arrays = arrays

    def __len__(self):
        return len(self._arrays)

    def __getitem__(self, i):
        return self._arrays[i]

    def __iter__(self):
        return iter(self._arrays)

    def __setitem__(self, i, value):
        target = self._arrays[i]
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ValueError(f"{self._name}[{i}] must have shape {target.shape}, got {value.shape}")
        if value.dtype != target.dtype:
            raise TypeError(f"{self._name}[{i}] must have dtype {target.dtype}, got {value.dtype} "
                            "(vgkern never casts silently)")
        target[...] = value

    def __repr__(self):
        return f"ParameterList({self._name}: {[a.shape for a in self._arrays]})"



class NativeParameters:
    """Flat params/grads views of a native core (self._core, self._params, self._grads) and
    the statistics switch."""

    @property
    def params(self):
        """All parameters as one flat array; writes take effect."""
        return self._params

    @params.setter
    def params(self, value):
        # `net.params -= lr * net.grads` works in place and then assigns the same array back
        if value is not self._params:
            ParameterList("params", [self._params])[0] = value

    @property
    def grads(self):
        """All gradients, laid out like params (net.params -= lr * net.grads is an SGD step)."""
        return self._grads

    @property
    def stats(self):
        """Whether forward/backward compute statistics (False: report fields are NaN)."""
        return self._core.stats

    @stats.setter
    def stats(self, on):
        self._core.stats = bool(on)
