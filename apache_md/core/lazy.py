"""A module imported at its first use: `cryptography` is a third of an idle worker's
memory, and a worker whose certificates did not change needs none of it (their
summaries come from the store's certificate cache, store/certcache.py)."""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class Lazy:
    """Stands for the module `name`: the first attribute asked for imports it (through
    the import system, so threads that ask at once wait for one import)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)
