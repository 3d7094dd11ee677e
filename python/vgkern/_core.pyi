# The compiled extension (csrc/, pybind11) has no generated stubs: every attribute is typed Any,
# so that type checkers accept the calls into it without checking them. The typed surface of
# vgkern is the Python layer (mlp.py, recurrent.py, ops.py, ...), which checks every argument
# before calling in here.
from typing import Any

def __getattr__(name: str) -> Any: ...
