"""Old names kept for one release after a rename: each use warns (DeprecationWarning, naming the
new name) and then does exactly what the new name does.

Renamed after 0.1.0 (one API shape for MLP, LSTM and RNN; removed in the release after):
    LSTM.x_grad, RNN.x_grad               -> input_grad (as MLP.input_grad)
    MLP.backward/step(input_grad=flag)    -> compute_input_grad=flag (input_grad is the result)
"""
import warnings


class _Unset:
    """The default of a deprecated keyword: tells "not given" from any value."""

    def __repr__(self):
        return "<deprecated>"  # as help() shows it


UNSET = _Unset()


def warn_renamed(old, new, stacklevel):
    """Warns that `old` is now `new`; `stacklevel` counts from here to the user's line."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed_keyword(owner, old, old_value, new, new_value, new_default):
    """The value of keyword `new`, taking the deprecated keyword `old` (UNSET when not given).
    Both given is refused: which one was meant?"""
    if old_value is UNSET:
        return new_value
    warn_renamed(f"{owner}({old}=...)", f"{new}=...", stacklevel=4)
    if new_value is not new_default:
        raise TypeError(f"{owner}: got both {new}= and its deprecated name {old}=; give {new} only")
    return old_value


class RenamedAttribute:
    """A class attribute `old` that reads and writes the attribute `new` after a warning."""

    def __init__(self, new):
        self.new = new

    def __set_name__(self, owner, name):
        self.old = name

    def _warn(self, obj):
        owner = type(obj).__name__
        warn_renamed(f"{owner}.{self.old}", f"{owner}.{self.new}", stacklevel=4)

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        self._warn(obj)
        return getattr(obj, self.new)

    def __set__(self, obj, value):
        self._warn(obj)
        setattr(obj, self.new, value)
