"""Package names imported on first use (PEP 562), for data_prep's and job's __init__.

`import job` runs in every worker before it unpickles a kernel; importing the whole pipeline there
(scikit-learn, matplotlib) would cost each worker seconds. May use: the standard library only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(namespace: dict, exports: dict[str, str]) -> tuple[Callable, Callable]:
    """(__getattr__, __dir__) for the module whose globals are `namespace`: exports maps a public name to
    the module that defines it; the first access imports it and caches it in `namespace`."""
    package = namespace["__name__"]

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
