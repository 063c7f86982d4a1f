"""Scenario files: YAML text -> validated, frozen dataclasses (pure).

A scenario names the servers to compare, one workload for the load client, how many warm-up and
measured repetitions to run, and optionally a matrix of parameter values to sweep. Everything is
validated before anything runs; the first problem found becomes one `ScenarioError` whose message
has the shape

    FILE: FIELD.PATH: PROBLEM; found FOUND, allowed: ALLOWED

The same tables (registry.py) drive validation and `json_schema()`, the JSON Schema published for
editors in scenarios/schema.json.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from splicebench.errors import ScenarioError
from splicebench.registry import COMMON_SERVER_OPTIONS, ECHO, PROXY, SERVERS, WORKLOAD_FIELDS, WORKLOADS, Option
from splicebench.units import DURATION_HELP, format_size, parse_duration, parse_size

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_ALLOWED = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"

TOP_KEYS = (
    "name",
    "description",
    "servers",
    "workload",
    "repetitions",
    "baseline",
    "stop_on_failure",
    "timeout",
    "seed",
    "matrix",
    "placement",
    "backend",
)
SERVER_KEYS = ("name", "label", "options")
REPETITION_KEYS = ("warmup", "measured", "min", "max", "target_ci_width")
PLACEMENT_KEYS = ("server", "clients")
BACKEND_KEYS = ("name", "options", "host")
# With a `backend` section the servers are proxies, and this row measures the backend alone.
DIRECT = "direct"
MATRIX_SERVER_KEYS = tuple(COMMON_SERVER_OPTIONS)  # server options a matrix may sweep (all servers)

DEFAULT_WARMUP = 1
DEFAULT_MEASURED = 5
# Adaptive repetitions (repetitions.target_ci_width): 6 is the smallest count whose distribution-free
# 95 % CI of the median is defined (stats.min_n_for_median_ci).
DEFAULT_ADAPTIVE_MIN = 6
DEFAULT_ADAPTIVE_MAX = 30
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_SEED = 1
LOCAL = "local"


# ---------------------------------------------------------------------------------------------
# Dataclasses


@dataclass(frozen=True)
class ServerConfig:
    """One server entry: a label unique in the scenario, the server kind and its options."""

    label: str
    kind: str
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Backend:
    """The echo server behind a proxy scenario's proxies; host None = the proxy's host."""

    kind: str
    options: tuple[tuple[str, Any], ...] = ()
    host: str | None = None


@dataclass(frozen=True)
class Placement:
    """Which host runs the server and which hosts run a client each; 'local' is this machine."""

    server: str = LOCAL
    clients: tuple[str, ...] = (LOCAL,)


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: the workload parameters and server-option overrides it fixes."""

    index: int
    values: tuple[tuple[str, Any], ...]  # the matrix keys and their values at this point
    workload: tuple[tuple[str, int], ...]  # full client parameters of the workload type
    server_overrides: tuple[tuple[str, Any], ...]  # common server options set by the matrix

    @property
    def label(self) -> str:
        return " ".join(f"{k}={format_param(k, v)}" for k, v in self.values)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    servers: tuple[ServerConfig, ...]
    workload_type: str
    workload: tuple[tuple[str, int], ...]  # parameters set outside the matrix, defaults filled in
    warmup: int
    measured: int
    baseline: str
    stop_on_failure: bool
    timeout_s: float
    seed: int
    matrix: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    # Where the servers run; several placements run every server on each (e.g. one per machine).
    placements: tuple[Placement, ...] = (Placement(),)
    # Proxy scenarios: client -> proxy (placement.server) -> backend; servers[0] is DIRECT.
    backend: Backend | None = None
    source: str = "<string>"
    # Adaptive repetitions: with target_ci_width set, `measured` is the maximum; the runner stops a
    # cell's measured rounds once every server's 95 % CI of the median throughput is at most this
    # fraction of the median wide, after at least min_measured rounds (stats.enough_repetitions).
    min_measured: int | None = None
    target_ci_width: float | None = None

    @property
    def placement(self) -> Placement:
        """The first (usually the only) placement."""
        return self.placements[0]

    def server(self, label: str) -> ServerConfig:
        for s in self.servers:
            if s.label == label:
                return s
        raise KeyError(label)

    def cells(self) -> list[Cell]:
        """Cartesian product of the matrix, in the order keys and values are written."""
        keys = [k for k, _ in self.matrix]
        combos = itertools.product(*[vals for _, vals in self.matrix]) if keys else [()]
        cells = []
        for i, combo in enumerate(combos):
            values = tuple(zip(keys, combo))
            wl = dict(self.workload)
            overrides = {}
            for k, v in values:
                if k in WORKLOAD_FIELDS:
                    wl[k] = v
                else:
                    overrides[k] = v
            ordered = tuple((k, wl[k]) for k in WORKLOADS[self.workload_type])
            cells.append(Cell(i, values, ordered, tuple(sorted(overrides.items()))))
        return cells

    def samples_total(self) -> int:
        return len(self.cells()) * len(self.placements) * len(self.servers) * (self.warmup + self.measured)

    def to_dict(self) -> dict[str, Any]:
        """Canonical, fully resolved form (JSON-able); parsing it again gives an equal scenario."""
        places = [{"server": p.server, "clients": list(p.clients)} for p in self.placements]
        return {
            "name": self.name,
            "description": self.description,
            "servers": [{"name": s.kind, "label": s.label, "options": dict(s.options)} for s in self.servers],
            "workload": {"type": self.workload_type, **dict(self.workload)},
            "repetitions": ({"warmup": self.warmup, "measured": self.measured} if self.target_ci_width is None
                            else {"warmup": self.warmup, "min": self.min_measured, "max": self.measured,
                                  "target_ci_width": self.target_ci_width}),
            "baseline": self.baseline,
            "stop_on_failure": self.stop_on_failure,
            "timeout": self.timeout_s,
            "seed": self.seed,
            **({"matrix": {k: list(v) for k, v in self.matrix}} if self.matrix else {}),
            "placement": places[0] if len(places) == 1 else places,
            **({"backend": {"name": self.backend.kind, "options": dict(self.backend.options),
                            **({"host": self.backend.host} if self.backend.host else {})}}
               if self.backend else {}),
        }


def format_param(key: str, value: Any) -> str:
    """How a parameter value is shown in labels: sizes in units, the rest as is."""
    kind = _param_kind(key)
    if kind == "size" and isinstance(value, int):
        return format_size(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _param_kind(key: str) -> str | None:
    if key in WORKLOAD_FIELDS:
        return WORKLOAD_FIELDS[key].kind
    if key in COMMON_SERVER_OPTIONS:
        return COMMON_SERVER_OPTIONS[key].kind
    return None


# ---------------------------------------------------------------------------------------------
# Loading


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


# ---------------------------------------------------------------------------------------------
# Validation


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


class _Checker:
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
                hint = _close(key, keys)
                self.fail(_join(path, str(key)), "unknown key", found(key), ", ".join(keys), hint)
        return value

    def name(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            self.fail(path, "not a string", found(value), NAME_ALLOWED)
        if not NAME_RE.match(value):
            self.fail(path, "not a valid name", found(value), NAME_ALLOWED)
        return value

    def integer(self, value: Any, path: str, minimum: int) -> int:
        allowed = f"an integer >= {minimum}"
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, "not an integer", found(value), allowed)
        if value < minimum:
            problem = "must be positive" if minimum == 1 else f"must be at least {minimum}"
            self.fail(path, problem, found(value), allowed)
        return value

    def size(self, value: Any, path: str, minimum: int) -> int:
        allowed = f"a size >= {format_size(minimum)}, e.g. 64, '64B', '128KiB', '100MiB', '1GiB'"
        try:
            n = parse_size(value)
        except ValueError:
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                self.fail(path, "must not be negative", found(value), allowed)
            self.fail(path, "not a size", found(value), allowed)
        if n < minimum:
            self.fail(path, "must be positive" if minimum == 1 else "too small", found(value), allowed)
        return n

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, "not a boolean", found(value), "true or false")
        return value

    def option(self, opt: Option, value: Any, path: str) -> Any:
        if opt.kind == "size":
            return self.size(value, path, opt.minimum)
        if opt.kind == "int":
            return self.integer(value, path, opt.minimum)
        if opt.kind == "bool":
            return self.boolean(value, path)
        if not isinstance(value, str) or value not in opt.choices:
            self.fail(path, "not a valid choice", found(value), ", ".join(opt.choices), _close(value, opt.choices))
        return value

    def workload_value(self, key: str, value: Any, path: str) -> int:
        f = WORKLOAD_FIELDS[key]
        if f.kind == "size":
            return self.size(value, path, f.minimum)
        return self.integer(value, path, f.minimum)


def validate(data: Any, source: str = "<string>", *, known_hosts: Iterable[str] = (LOCAL,),
             default_name: str | None = None) -> Scenario:
    """Validate parsed YAML data; return the Scenario or raise ScenarioError for the first problem."""
    c = _Checker(source)
    top_allowed = "a mapping with keys " + ", ".join(TOP_KEYS)
    if data is None:
        c.fail("(top level)", "empty file", "nothing", top_allowed)
    c.mapping(data, "(top level)", TOP_KEYS, top_allowed)

    # name, description
    if "name" in data:
        name = c.name(data["name"], "name")
    elif default_name is not None and NAME_RE.match(default_name):
        name = default_name
    else:
        c.fail("name", "missing", "nothing", NAME_ALLOWED)
    description = data.get("description", "")
    if not isinstance(description, str):
        c.fail("description", "not a string", found(description), "text")

    # servers
    if "servers" not in data:
        c.fail("servers", "missing", "nothing", "a non-empty list of servers, e.g. [naive, splice, sockmap]")
    servers = _servers(c, data["servers"])
    backend = _backend(c, data["backend"], tuple(known_hosts)) if "backend" in data else None
    servers = _roles(c, servers, backend)

    # workload
    if "workload" not in data:
        c.fail("workload", "missing", "nothing", "a mapping with 'type' (" + ", ".join(sorted(WORKLOADS)) + ")")
    wl = data["workload"]
    if not isinstance(wl, Mapping):
        c.fail("workload", "not a mapping", found(wl), "a mapping with 'type' and workload parameters")
    wtype = wl.get("type")
    if "type" not in wl:
        c.fail("workload.type", "missing", "nothing", ", ".join(sorted(WORKLOADS)))
    if not isinstance(wtype, str) or wtype not in WORKLOADS:
        c.fail("workload.type", "unknown workload", found(wtype), ", ".join(sorted(WORKLOADS)),
               _close(wtype, WORKLOADS))
    applicable = WORKLOADS[wtype]
    for key in wl:
        if key == "type":
            continue
        if isinstance(key, str) and key in WORKLOAD_FIELDS and key not in applicable:
            c.fail(_join("workload", key), f"does not apply to workload type {wtype!r}", found(key),
                   ", ".join(("type",) + applicable))
        if not isinstance(key, str) or key not in applicable:
            c.fail(_join("workload", str(key)), "unknown key", found(key), ", ".join(("type",) + applicable),
                   _close(key, applicable))
    params = {k: WORKLOAD_FIELDS[k].default for k in applicable}
    for key in applicable:
        if key in wl:
            params[key] = c.workload_value(key, wl[key], f"workload.{key}")

    # repetitions
    warmup, measured = DEFAULT_WARMUP, DEFAULT_MEASURED
    min_measured, target_ci_width = None, None
    if "repetitions" in data:
        reps = c.mapping(data["repetitions"], "repetitions", REPETITION_KEYS,
                         "a mapping with keys warmup, measured")
        if "warmup" in reps:
            warmup = c.integer(reps["warmup"], "repetitions.warmup", 0)
        if "measured" in reps:
            measured = c.integer(reps["measured"], "repetitions.measured", 1)
        min_measured, target_ci_width, adaptive_max = _adaptive(c, reps)
        if adaptive_max is not None:
            measured = adaptive_max

    # baseline
    labels = [s.label for s in servers]
    if "baseline" in data:
        baseline = data["baseline"]
        if not isinstance(baseline, str) or baseline not in labels:
            c.fail("baseline", "not one of the scenario's servers", found(baseline), ", ".join(labels),
                   _close(baseline, labels))
    else:
        default = "proxy-naive" if backend else "naive"
        baseline = default if default in labels else labels[0]

    stop = c.boolean(data["stop_on_failure"], "stop_on_failure") if "stop_on_failure" in data else False

    timeout_s = DEFAULT_TIMEOUT_S
    if "timeout" in data:
        try:
            timeout_s = parse_duration(data["timeout"])
        except ValueError:
            c.fail("timeout", "not a duration", found(data["timeout"]), DURATION_HELP)
        if timeout_s <= 0:
            c.fail("timeout", "must be positive", found(data["timeout"]), DURATION_HELP)

    seed = c.integer(data["seed"], "seed", 0) if "seed" in data else DEFAULT_SEED

    # matrix
    matrix: list[tuple[str, tuple[Any, ...]]] = []
    if "matrix" in data:
        matrix = _matrix(c, data["matrix"], wtype, wl, servers)

    placements = _placements(c, data["placement"], tuple(known_hosts)) if "placement" in data else (Placement(),)

    swept = {k for k, _ in matrix}
    params = {k: v for k, v in params.items() if k not in swept}

    return Scenario(
        name=name,
        description=description.strip(),
        servers=tuple(servers),
        workload_type=wtype,
        workload=tuple(params.items()),
        warmup=warmup,
        measured=measured,
        baseline=baseline,
        stop_on_failure=stop,
        timeout_s=timeout_s,
        seed=seed,
        matrix=tuple(matrix),
        placements=placements,
        backend=backend,
        source=source,
        min_measured=min_measured,
        target_ci_width=target_ci_width,
    )


def _adaptive(c: _Checker, reps: Mapping[str, Any]) -> tuple[int | None, float | None, int | None]:
    """(min, target_ci_width, max) of adaptive repetitions, or Nones for a fixed count."""
    if "target_ci_width" not in reps:
        for key in ("min", "max"):
            if key in reps:
                c.fail(f"repetitions.{key}", "only applies with repetitions.target_ci_width", found(reps[key]),
                       "measured: N for a fixed count, or min, max and target_ci_width for adaptive repetitions")
        return None, None, None
    width = reps["target_ci_width"]
    allowed = "a fraction of the median greater than 0 and at most 1, e.g. 0.05 for 5 %"
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        c.fail("repetitions.target_ci_width", "not a number", found(width), allowed)
    if not 0 < width <= 1:
        c.fail("repetitions.target_ci_width", "out of range", found(width), allowed)
    if "measured" in reps:
        c.fail("repetitions.measured", "does not combine with target_ci_width", found(reps["measured"]),
               "min and max bound the measured repetitions when target_ci_width is set")
    lo = c.integer(reps["min"], "repetitions.min", 1) if "min" in reps else DEFAULT_ADAPTIVE_MIN
    hi = c.integer(reps["max"], "repetitions.max", 1) if "max" in reps else max(lo, DEFAULT_ADAPTIVE_MAX)
    if hi < lo:
        c.fail("repetitions.max", "smaller than repetitions.min", found(hi), f"an integer >= {lo}")
    return lo, float(width), hi


def _servers(c: _Checker, value: Any) -> list[ServerConfig]:
    kinds = ", ".join(sorted(SERVERS))
    allowed = f"a non-empty list of server names ({kinds}) or mappings with keys name, label, options"
    if not isinstance(value, list):
        c.fail("servers", "not a list", found(value), allowed)
    if not value:
        c.fail("servers", "empty list", found(value), allowed)
    out: list[ServerConfig] = []
    labels: set[str] = set()
    for i, entry in enumerate(value):
        path = f"servers[{i}]"
        kpath = path
        if isinstance(entry, str):
            entry = {"name": entry}
        elif isinstance(entry, Mapping):
            kpath = f"{path}.name"
            c.mapping(entry, path, SERVER_KEYS, "keys name, label, options")
            if "name" not in entry:
                c.fail(f"{path}.name", "missing", "nothing", kinds)
        else:
            c.fail(path, "not a server", found(entry), allowed)
        kind = entry["name"]
        if not isinstance(kind, str) or kind not in SERVERS:
            c.fail(kpath, "unknown server", found(kind), kinds, _close(kind, SERVERS))
        label = c.name(entry["label"], f"{path}.label") if "label" in entry else kind
        if label in labels:
            c.fail(path, "duplicate server label", found(label),
                   "each label once (give repeated servers a distinct 'label')")
        labels.add(label)
        opts = _server_options(c, kind, entry["options"], f"{path}.options") if "options" in entry else {}
        out.append(ServerConfig(label, kind, tuple(sorted(opts.items()))))
    return out


def _server_options(c: _Checker, kind: str, raw: Any, path: str) -> dict[str, Any]:
    known = SERVERS[kind].all_options()
    if not isinstance(raw, Mapping):
        c.fail(path, "not a mapping", found(raw), ", ".join(sorted(known)))
    opts: dict[str, Any] = {}
    for key, val in raw.items():
        opath = _join(path, str(key))
        if not isinstance(key, str) or key not in known:
            c.fail(opath, f"unknown option for server {kind!r}", found(key), ", ".join(sorted(known)),
                   _close(key, known))
        opts[key] = c.option(known[key], val, opath)
    return opts


def _backend(c: _Checker, value: Any, known_hosts: tuple[str, ...]) -> Backend:
    echo = [k for k, s in SERVERS.items() if s.role == ECHO]
    b = c.mapping(value, "backend", BACKEND_KEYS, "a mapping with keys name, options, host")
    if "name" not in b:
        c.fail("backend.name", "missing", "nothing", ", ".join(echo))
    kind = b["name"]
    if not isinstance(kind, str) or kind not in SERVERS or SERVERS[kind].role != ECHO:
        c.fail("backend.name", "not an echo server", found(kind), ", ".join(echo), _close(kind, echo))
    opts = _server_options(c, kind, b["options"], "backend.options") if "options" in b else {}
    host = b.get("host")
    if host is not None and (not isinstance(host, str) or host not in known_hosts):
        c.fail("backend.host", "unknown host", found(host), ", ".join(known_hosts), _close(host, known_hosts))
    return Backend(kind, tuple(sorted(opts.items())), host)


def _roles(c: _Checker, servers: list[ServerConfig], backend: Backend | None) -> list[ServerConfig]:
    """Without a backend: echo servers only. With one: proxies only, and the DIRECT row first."""
    proxies = [k for k, s in SERVERS.items() if s.role == PROXY]
    if backend is None:
        for i, s in enumerate(servers):
            if SERVERS[s.kind].role == PROXY:
                c.fail(f"servers[{i}]", "a proxy needs a 'backend' section", found(s.kind),
                       "echo servers, or add e.g. backend: {name: naive}")
        return servers
    direct = ServerConfig(DIRECT, backend.kind, backend.options)
    out = [direct]
    for i, s in enumerate(servers):
        if s.label == DIRECT:
            if s != direct:
                c.fail(f"servers[{i}]", "the label 'direct' is the backend without a proxy", found(s.kind),
                       f"name {backend.kind!r} with the backend's options, or another label")
            continue
        if SERVERS[s.kind].role != PROXY:
            c.fail(f"servers[{i}]", "not a proxy (with a 'backend' section the servers are proxies)",
                   found(s.kind), ", ".join(proxies), _close(s.kind, proxies))
        out.append(s)
    if len(out) == 1:
        c.fail("servers", "no proxy", "only 'direct'", ", ".join(proxies))
    return out


def _matrix(c: _Checker, value: Any, wtype: str, wl: Mapping[str, Any],
            servers: Sequence[ServerConfig]) -> list[tuple[str, tuple[Any, ...]]]:
    keys = WORKLOADS[wtype] + MATRIX_SERVER_KEYS
    allowed = "a mapping of parameter -> non-empty list of values; parameters: " + ", ".join(keys)
    if not isinstance(value, Mapping):
        c.fail("matrix", "not a mapping", found(value), allowed)
    if not value:
        c.fail("matrix", "empty matrix", found(value), allowed)
    out = []
    for key, vals in value.items():
        path = _join("matrix", str(key))
        if key == "servers" or key == "server":
            c.fail(path, "servers cannot be a matrix key", found(key),
                   ", ".join(keys) + " (every server in 'servers' runs at every matrix point)")
        if isinstance(key, str) and key in WORKLOAD_FIELDS and key not in keys:
            c.fail(path, f"does not apply to workload type {wtype!r}", found(key), ", ".join(keys))
        if not isinstance(key, str) or key not in keys:
            c.fail(path, "unknown matrix key", found(key), ", ".join(keys), _close(key, keys))
        if key in wl:
            c.fail(path, f"also set in workload.{key}", found(key), "each parameter in one place")
        for s in servers:
            if key in dict(s.options):
                c.fail(path, f"also set in the options of server {s.label!r}", found(key),
                       "each parameter in one place")
        if not isinstance(vals, list):
            c.fail(path, "not a list", found(vals), "a non-empty list of values")
        if not vals:
            c.fail(path, "empty list", found(vals), "a non-empty list of values")
        parsed = []
        for i, v in enumerate(vals):
            vpath = f"{path}[{i}]"
            if key in WORKLOAD_FIELDS:
                n = c.workload_value(key, v, vpath)
            else:
                n = c.option(COMMON_SERVER_OPTIONS[key], v, vpath)
            if n in parsed:
                c.fail(vpath, "duplicate value", found(v), "distinct values")
            parsed.append(n)
        out.append((key, tuple(parsed)))
    return out


def _placements(c: _Checker, value: Any, known_hosts: tuple[str, ...]) -> tuple[Placement, ...]:
    """One placement (a mapping) or several (a non-empty list of mappings, distinct)."""
    if not isinstance(value, list):
        return (_placement(c, value, known_hosts, "placement"),)
    if not value:
        c.fail("placement", "empty list", found(value), "a mapping with keys server, clients, or a non-empty "
                                                        "list of them")
    out: list[Placement] = []
    for i, v in enumerate(value):
        p = _placement(c, v, known_hosts, f"placement[{i}]")
        if p in out:
            c.fail(f"placement[{i}]", "duplicate placement", found(v), "distinct placements")
        out.append(p)
    return tuple(out)


def _placement(c: _Checker, value: Any, known_hosts: tuple[str, ...], path: str) -> Placement:
    p = c.mapping(value, path, PLACEMENT_KEYS, "a mapping with keys server, clients")
    hosts = ", ".join(known_hosts)
    server = p.get("server", LOCAL)
    if not isinstance(server, str) or server not in known_hosts:
        c.fail(f"{path}.server", "unknown host", found(server), hosts, _close(server, known_hosts))
    clients = p.get("clients", [LOCAL])
    if not isinstance(clients, list):
        c.fail(f"{path}.clients", "not a list", found(clients), f"a non-empty list of hosts ({hosts})")
    if not clients:
        c.fail(f"{path}.clients", "empty list", found(clients), f"a non-empty list of hosts ({hosts})")
    for i, h in enumerate(clients):
        if not isinstance(h, str) or h not in known_hosts:
            c.fail(f"{path}.clients[{i}]", "unknown host", found(h), hosts, _close(h, known_hosts))
    return Placement(server, tuple(clients))


def _join(path: str, key: str) -> str:
    return key if path == "(top level)" else f"{path}.{key}"


def _close(value: Any, choices: Iterable[str]) -> str | None:
    if not isinstance(value, str):
        return None
    hits = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return hits[0] if hits else None


# ---------------------------------------------------------------------------------------------
# JSON Schema for editors (scenarios/schema.json is this, written by `invoke schema`)


def _size_schema(minimum: int) -> dict[str, Any]:
    return {
        "oneOf": [
            {"type": "integer", "minimum": minimum},
            {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?\s*$"},
        ]
    }


def _option_schema(opt: Option) -> dict[str, Any]:
    if opt.kind == "size":
        s = _size_schema(opt.minimum)
    elif opt.kind == "int":
        s = {"type": "integer", "minimum": opt.minimum}
    elif opt.kind == "bool":
        s = {"type": "boolean"}
    else:
        s = {"enum": list(opt.choices)}
    return {**s, "description": opt.help}


def _field_schema(name: str) -> dict[str, Any]:
    f = WORKLOAD_FIELDS[name]
    s = _size_schema(f.minimum) if f.kind == "size" else {"type": "integer", "minimum": f.minimum}
    return {**s, "description": f"{f.help} (default {format_param(name, f.default)})"}


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a scenario file, generated from the same tables as validate()."""
    name = {"type": "string", "pattern": NAME_RE.pattern}
    server_entries = []
    for kind, sk in sorted(SERVERS.items()):
        server_entries.append({
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"const": kind, "description": sk.description},
                "label": name,
                "options": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {k: _option_schema(o) for k, o in sorted(sk.all_options().items())},
                },
            },
        })
    workloads = []
    for wtype, fields in sorted(WORKLOADS.items()):
        workloads.append({
            "type": "object",
            "additionalProperties": False,
            "required": ["type"],
            "properties": {"type": {"const": wtype}, **{k: _field_schema(k) for k in fields}},
        })
    matrix_values = {}
    for k in WORKLOAD_FIELDS:
        matrix_values[k] = {"type": "array", "minItems": 1, "uniqueItems": True, "items": _field_schema(k)}
    for k, o in COMMON_SERVER_OPTIONS.items():
        matrix_values[k] = {"type": "array", "minItems": 1, "uniqueItems": True, "items": _option_schema(o)}
    placement = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "server": {"type": "string", "description": "host running the server (default local)"},
            "clients": {"type": "array", "minItems": 1, "items": {"type": "string"},
                        "description": "hosts running one client each (default [local])"},
        },
    }
    duration = {
        "oneOf": [
            {"type": "number", "exclusiveMinimum": 0},
            {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
        ]
    }
    backend = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"enum": sorted(k for k, s in SERVERS.items() if s.role == ECHO)},
            "options": {"type": "object"},
            "host": {"type": "string", "description": "host running the backend (default: the proxy's)"},
        },
        "description": "makes the servers proxies in front of this echo server; a 'direct' row "
                       "(client -> backend) is measured alongside",
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "splicebench-scenario.schema.json",
        "title": "splicebench scenario",
        "description": "A scenario for `invoke run --scenario FILE`. Field meanings: README.md.",
        "type": "object",
        "additionalProperties": False,
        "required": ["servers", "workload"],
        "properties": {
            "name": {**name, "description": "defaults to the file name without .yaml"},
            "description": {"type": "string"},
            "servers": {
                "type": "array",
                "minItems": 1,
                "items": {"oneOf": [{"enum": sorted(SERVERS)}, *server_entries]},
            },
            "workload": {"oneOf": workloads},
            "repetitions": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "warmup": {"type": "integer", "minimum": 0, "description": f"default {DEFAULT_WARMUP}"},
                    "measured": {"type": "integer", "minimum": 1, "description": f"default {DEFAULT_MEASURED}"},
                    "target_ci_width": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                                        "description": "adaptive repetitions: stop when the 95 % CI of the median "
                                                       "throughput is at most this fraction of the median wide"},
                    "min": {"type": "integer", "minimum": 1,
                            "description": f"adaptive: at least this many (default {DEFAULT_ADAPTIVE_MIN})"},
                    "max": {"type": "integer", "minimum": 1,
                            "description": f"adaptive: at most this many (default {DEFAULT_ADAPTIVE_MAX})"},
                },
                "not": {"required": ["measured", "target_ci_width"]},
            },
            "baseline": {"type": "string", "description": "label of the server ratios are computed against; "
                                                          "default naive (or the first server)"},
            "stop_on_failure": {"type": "boolean", "description": "stop the run at the first failed sample"},
            "timeout": {**duration, "description": f"client deadline per sample (default {DEFAULT_TIMEOUT_S:g}s)"},
            "seed": {"type": "integer", "minimum": 0},
            "matrix": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "properties": matrix_values,
                "description": "parameters to sweep; every combination runs every server",
            },
            "placement": {
                "oneOf": [placement, {"type": "array", "minItems": 1, "uniqueItems": True, "items": placement}],
                "description": "where the server and the clients run; a list runs every server at each "
                               "placement (default: all on local)",
            },
            "backend": backend,
        },
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"
