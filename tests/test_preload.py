"""util.preload: a module imported in a background thread is the module the caller then uses, and a
module that fails to import fails where it is really imported, with its own error."""

from __future__ import annotations

import gc
import importlib
import sys

import pytest

from splicebench.util.preload import preload

pytestmark = pytest.mark.unit


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A directory on sys.path for modules written by the test; they leave sys.modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_preloaded_module_is_imported_once_and_reused(package):
    (package / "sb_preload_ok.py").write_text("import threading\nLOADED_BY = threading.current_thread().name\n"
                                              "COUNT = [0]\nCOUNT[0] += 1\n")
    t = preload("sb_preload_ok")
    t.join(timeout=30)
    assert not t.is_alive()
    assert "sb_preload_ok" in sys.modules
    mod = importlib.import_module("sb_preload_ok")
    assert mod.LOADED_BY == "preload-sb_preload_ok"  # imported by the thread, not by this one
    assert mod.COUNT == [1]


def test_failing_import_is_raised_by_the_real_import(package):
    (package / "sb_preload_bad.py").write_text("raise RuntimeError('broken on purpose')\n")
    t = preload("sb_preload_bad")
    t.join(timeout=30)
    assert not t.is_alive() and "sb_preload_bad" not in sys.modules
    with pytest.raises(RuntimeError, match="broken on purpose"):
        importlib.import_module("sb_preload_bad")


def test_missing_module_is_reported_where_it_is_used(package):
    t = preload("sb_preload_missing")
    t.join(timeout=30)
    with pytest.raises(ModuleNotFoundError, match="sb_preload_missing"):
        importlib.import_module("sb_preload_missing")


def test_the_import_runs_without_the_cyclic_collector_and_its_objects_end_frozen(package):
    """The collector is paused while the import runs (the module sees it disabled), enabled again
    afterwards, and what the import created is in the permanent generation (gc.freeze)."""
    (package / "sb_preload_gc.py").write_text(
        "import gc\nCOLLECTING = gc.isenabled()\nOBJECTS = [[i] for i in range(20000)]\n")
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        t = preload("sb_preload_gc")
        t.join(timeout=60)
        mod = importlib.import_module("sb_preload_gc")
        assert mod.COLLECTING is False and gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(mod.OBJECTS)
        # A collector disabled by the caller stays disabled.
        gc.disable()
        preload("sb_preload_missing_too").join(timeout=60)
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
