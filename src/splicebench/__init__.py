"""splicebench: load-test orchestration for Linux TCP echo data paths (naive, splice, SOCKMAP)."""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("splicebench")
except PackageNotFoundError:  # running from a checkout without `pip install -e .`
    __version__ = "0+unknown"
