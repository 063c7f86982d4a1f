"""The one Jinja2 Environment of the reports: view-model in, HTML text out.

Autoescape is on for every template; StrictUndefined turns a misspelt field into an error instead
of an empty cell. Templates in report/templates/ only loop and print already-formatted strings;
the only `|safe` is for the SVG charts that charts.py makes.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

_ENV: Environment | None = None


def environment() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = Environment(loader=PackageLoader("splicebench.report", "templates"), autoescape=True,
                           undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return _ENV


def render(template: str, view: Any) -> str:
    """The named template rendered with the view-model as `v`."""
    return environment().get_template(template).render(v=view)
