"""Reading a scenario: a name or path -> a file -> YAML text -> a validated Scenario.

Everything about files and YAML syntax lives here (resolving a name in scenarios/, UTF-8, duplicate
keys, YAML errors with their line and column); the data then goes to `validation.validate`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable

import yaml

from splicebench.errors import ScenarioError
from splicebench.scenario.model import LOCAL, NAME_RE, Scenario
from splicebench.scenario.validation import validate


def resolve(name_or_path: str, scenarios_dir: Path) -> Path:
    """A scenario name from scenarios/ ('loopback-100mib') or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = scenarios_dir / f"{name_or_path}.yaml"
    if NAME_RE.match(name_or_path) and candidate.is_file():
        return candidate
    known = available(scenarios_dir)
    hint = difflib.get_close_matches(name_or_path, known, n=1)
    msg = f"no scenario {name_or_path!r}: not a file and not in {scenarios_dir}/ (available: {', '.join(known) or 'none'})"
    if hint:
        msg += f"; did you mean {hint[0]!r}?"
    raise ScenarioError(msg)


def available(scenarios_dir: Path) -> list[str]:
    return sorted(p.stem for p in scenarios_dir.glob("*.yaml"))


def load(path: Path, known_hosts: Iterable[str] = (LOCAL,)) -> Scenario:
    """Read and validate a scenario file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not UTF-8 text") from None
    return parse(text, str(path), known_hosts=known_hosts, default_name=Path(path).stem)


def parse(text: str, source: str = "<string>", *, known_hosts: Iterable[str] = (LOCAL,),
          default_name: str | None = None) -> Scenario:
    """Parse YAML text and validate it; ScenarioError names `source` and the field.

    Without a 'name' key the scenario is named after `default_name`, else after source's file stem."""
    if default_name is None:
        default_name = Path(source).stem
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except _DuplicateKey as e:
        raise ScenarioError(f"{source}: line {e.line}: duplicate key; found {e.key!r} twice in one mapping, "
                            f"allowed: each key once") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(top level)"
        raise ScenarioError(f"{source}: {where}: not valid YAML; found {e.problem}, allowed: YAML text") from None
    except yaml.YAMLError as e:
        raise ScenarioError(f"{source}: (top level): not valid YAML; found {e}, allowed: YAML text") from None
    return validate(data, source, known_hosts=known_hosts, default_name=default_name)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int):
        self.key, self.line = key, line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hashable = key in seen
            except TypeError:
                continue
            if hashable:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
