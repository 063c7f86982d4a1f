"""Where this host keeps its caches: $SPLICEBENCH_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/splicebench."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping


def cache_base(environ: Mapping[str, str] | None = None) -> Path:
    """The cache directory of this host (builds, the arm64 image, compiled report templates)."""
    env = os.environ if environ is None else environ
    if env.get("SPLICEBENCH_CACHE"):
        return Path(env["SPLICEBENCH_CACHE"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "splicebench"
