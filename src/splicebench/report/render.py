"""The one Jinja2 Environment of the reports: view-model in, HTML text out.

Autoescape is on for every template; StrictUndefined turns a misspelt field into an error instead
of an empty cell. Templates in report/templates/ only loop and print already-formatted strings;
the only `|safe` is for the SVG charts that charts.py makes.

Compiling the templates takes about 0.1 s of every report; their compiled code is kept in this
host's cache (<cache>/jinja, util/cache.py), keyed by each template's source, so that a changed
template is compiled again. A cache that cannot be created or written only costs that time.
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import BytecodeCache, Environment, FileSystemBytecodeCache, PackageLoader, StrictUndefined

from splicebench.util.cache import cache_base


@functools.cache
def environment() -> Environment:
    """The process's one Environment (environment.cache_clear() makes the next call build a new one)."""
    return Environment(loader=PackageLoader("splicebench.report", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       bytecode_cache=_bytecode_cache())


def _bytecode_cache() -> BytecodeCache | None:
    """Compiled templates in <cache>/jinja (written atomically by Jinja2), or None where the
    directory cannot be made."""
    path = cache_base() / "jinja"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return FileSystemBytecodeCache(str(path))


def render(template: str, view: Any) -> str:
    """The named template rendered with the view-model as `v`."""
    return environment().get_template(template).render(v=view)
