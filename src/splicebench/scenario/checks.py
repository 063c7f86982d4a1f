"""Checks of one value against one rule, each failure one ScenarioError in the house shape (pure).

    FILE: FIELD.PATH: PROBLEM; found FOUND, allowed: ALLOWED (did you mean 'HINT'?)

`Checker` knows the file name and the value kinds of registry.py (names, integers, sizes, booleans,
choices); validation.py walks the sections of a scenario with it.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, Sequence

from splicebench.errors import ScenarioError
from splicebench.registry import WORKLOAD_FIELDS, Option
from splicebench.scenario.model import NAME_ALLOWED, NAME_RE
from splicebench.units import format_size, parse_size


def found(value: Any) -> str:
    """How a found value is quoted in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__}"


class Checker:
    """Checks values of the file `source`; every method returns the checked value or raises."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, problem: str, value: Any, allowed: str, hint: str | None = None) -> None:
        msg = f"{self.source}: {path}: {problem}; found {value}, allowed: {allowed}"
        if hint:
            msg += f" (did you mean {hint!r}?)"
        raise ScenarioError(msg)

    def mapping(self, value: Any, path: str, keys: Sequence[str], what: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(path, "not a mapping", found(value), what)
        for key in value:
            if not isinstance(key, str) or key not in keys:
                hint = closest(key, keys)
                self.fail(join_path(path, str(key)), "unknown key", found(key), ", ".join(keys), hint)
        return value

    def name(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            self.fail(path, "not a string", found(value), NAME_ALLOWED)
        if not NAME_RE.match(value):
            self.fail(path, "not a valid name", found(value), NAME_ALLOWED)
        return value

    def integer(self, value: Any, path: str, minimum: int, maximum: int | None = None) -> int:
        allowed = f"an integer >= {minimum}"
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, "not an integer", found(value), allowed)
        if value < minimum:
            problem = "must be positive" if minimum == 1 else f"must be at least {minimum}"
            self.fail(path, problem, found(value), allowed)
        if maximum is not None and value > maximum:
            self.fail(path, "too large for the program", found(value), f"an integer from {minimum} to {maximum}")
        return value

    def size(self, value: Any, path: str, minimum: int, maximum: int | None = None) -> int:
        allowed = f"a size >= {format_size(minimum)}, e.g. 64, '64B', '128KiB', '100MiB', '1GiB'"
        try:
            n = parse_size(value)
        except ValueError:
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                self.fail(path, "must not be negative", found(value), allowed)
            self.fail(path, "not a size", found(value), allowed)
        if n < minimum:
            self.fail(path, "must be positive" if minimum == 1 else "too small", found(value), allowed)
        if maximum is not None and n > maximum:
            top = format_size(maximum)
            top += "" if top == f"{maximum}B" else f" ({maximum} bytes)"
            self.fail(path, "too large for the program", found(value), f"a size from {format_size(minimum)} to {top}")
        return n

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, "not a boolean", found(value), "true or false")
        return value

    def option(self, opt: Option, value: Any, path: str) -> Any:
        if opt.kind == "size":
            return self.size(value, path, opt.minimum, opt.maximum)
        if opt.kind == "int":
            return self.integer(value, path, opt.minimum, opt.maximum)
        if opt.kind == "bool":
            return self.boolean(value, path)
        if not isinstance(value, str) or value not in opt.choices:
            self.fail(path, "not a valid choice", found(value), ", ".join(opt.choices), closest(value, opt.choices))
        return value

    def workload_value(self, key: str, value: Any, path: str) -> int:
        f = WORKLOAD_FIELDS[key]
        if f.kind == "size":
            return self.size(value, path, f.minimum, f.maximum)
        return self.integer(value, path, f.minimum, f.maximum)


def join_path(path: str, key: str) -> str:
    """The field path of `key` inside the mapping at `path`."""
    return key if path == "(top level)" else f"{path}.{key}"


def closest(value: Any, choices: Iterable[str]) -> str | None:
    """The choice a mistyped string most likely meant, or None (the '(did you mean ...?)' hint)."""
    if not isinstance(value, str):
        return None
    hits = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return hits[0] if hits else None
