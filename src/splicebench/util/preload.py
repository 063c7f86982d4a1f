"""Importing a module in the background while the caller waits on something else."""

from __future__ import annotations

import gc
import importlib
import threading


def preload(module: str) -> threading.Thread:
    """Start importing `module` (a dotted name) in a thread and return it; join() it before work
    that must not share the CPU with the import.

    The cyclic garbage collector is paused while the import runs, and the objects alive when it
    ends are frozen (gc.freeze: refcounting still frees them, the collector no longer traverses
    them). Importing pandas, scipy.stats and matplotlib creates about a million long-lived objects
    that every full collection would walk again, during the import, while the report is built and
    at the interpreter's exit: about 0.4 s of CPU here, for some 2,000 unreachable objects the
    import leaves behind and no collection then frees.

    The thread is not a daemon: an interpreter that exits early waits for the import to end
    instead of tearing down a half-imported extension module. An import that fails is left for the
    module's real import to raise, with its own traceback, where the module is used."""

    def load() -> None:
        collecting = gc.isenabled()
        gc.disable()
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 (raised again by the real import)
            pass
        finally:
            if collecting:
                gc.enable()
            gc.freeze()

    t = threading.Thread(target=load, name=f"preload-{module}")
    t.start()
    return t
