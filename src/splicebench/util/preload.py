"""Importing a module in the background while the caller waits on something else."""

from __future__ import annotations

import importlib
import threading


def preload(module: str) -> threading.Thread:
    """Start importing `module` (a dotted name) in a thread and return it; join() it before work
    that must not share the CPU with the import.

    The thread is not a daemon: an interpreter that exits early waits for the import to end
    instead of tearing down a half-imported extension module. An import that fails is left for the
    module's real import to raise, with its own traceback, where the module is used."""

    def load() -> None:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 (raised again by the real import)
            pass

    t = threading.Thread(target=load, name=f"preload-{module}")
    t.start()
    return t
