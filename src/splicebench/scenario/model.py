"""The scenario model: frozen dataclasses a validated scenario file becomes (pure).

What a run needs to know and nothing about YAML: the servers to compare, the workload, the repetitions,
the matrix of parameter values and its cells, where things run. The constants here (names, defaults,
the DIRECT row) are shared by the validator and the JSON Schema generator; `to_dict` gives the canonical
form that validates back to an equal Scenario, and `format_param` is how a parameter value is shown.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from splicebench.registry import ACCEL_NONE, COMMON_SERVER_OPTIONS, SERVERS, WORKERS, WORKLOAD_FIELDS, WORKLOADS
from splicebench.units import format_size

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_ALLOWED = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
# With a `backend` section the servers are proxies, and this row measures the backend alone.
DIRECT = "direct"
# Server options a matrix may sweep: the common ones (all servers) and `workers` (the servers that have
# it; the others, such as the SOCKMAP loaders, keep their one thread).
MATRIX_SERVER_KEYS = (*COMMON_SERVER_OPTIONS, WORKERS)

DEFAULT_WARMUP = 1
DEFAULT_MEASURED = 5
# Adaptive repetitions (repetitions.target_ci_width): 6 is the smallest count whose distribution-free
# 95 % CI of the median is defined (stats.min_n_for_median_ci).
DEFAULT_ADAPTIVE_MIN = 6
DEFAULT_ADAPTIVE_MAX = 30
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_SEED = 1
LOCAL = "local"

# Kernel settings (`sysctls:` and matrix keys): dotted names under /proc/sys, and values of digits,
# letters and a few separators (the kernel's own formats: "4096 131072 6291456", "cubic", "0").
SYSCTL_TOPS = ("abi", "debug", "dev", "fs", "kernel", "net", "user", "vm")
SYSCTL_NAME_RE = re.compile(r"^(" + "|".join(SYSCTL_TOPS) + r")(\.[A-Za-z0-9_-]{1,64}){1,8}$")
SYSCTL_NAME_ALLOWED = ("a sysctl name: " + ", ".join(SYSCTL_TOPS) + " then dot-separated parts of letters, "
                       "digits, '_' or '-', e.g. net.ipv4.tcp_rmem")
SYSCTL_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:,+-]+( [A-Za-z0-9_.:,+-]+){0,15}$")  # words joined by one space
SYSCTL_VALUE_SCHEMA_PATTERN = r"^\s*[A-Za-z0-9_.:,+-]+(\s+[A-Za-z0-9_.:,+-]+){0,15}\s*$"  # as written
SYSCTL_VALUE_ALLOWED = ("an integer, or text of up to 16 words of letters, digits and _.:,+- separated by "
                        "spaces, e.g. 4194304 or '4096 131072 6291456'")


def is_sysctl(key: object) -> bool:
    """Whether a scenario key (a matrix key) names a kernel setting rather than a parameter."""
    return isinstance(key, str) and "." in key


def sysctl_value(value: object) -> str | None:
    """A sysctl value as written to /proc/sys (words joined by one space), or None if not allowed."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    text = " ".join(str(value).split())
    return text if len(text) <= 256 and SYSCTL_VALUE_RE.match(text) else None


# An accelerated server's label: the label as written, this separator, the mode (a written label
# cannot contain it).
ACCEL_LABEL_SEP = "+"


@dataclass(frozen=True)
class ServerConfig:
    """One server entry: a label unique in the scenario, the server kind and its options; with
    `accelerate`, one entry per mode (label 'naive' and 'naive+sk_msg')."""

    label: str
    kind: str
    options: tuple[tuple[str, Any], ...] = ()
    accelerate: str = ACCEL_NONE  # registry.ACCEL_MODES: how every program of its samples runs

    @property
    def base_label(self) -> str:
        """The label as the scenario wrote it (without the acceleration mode)."""
        if self.accelerate == ACCEL_NONE:
            return self.label
        return self.label.removesuffix(ACCEL_LABEL_SEP + self.accelerate)


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
    # Kernel settings of this cell on every host: the scenario's `sysctls` with the matrix's values.
    sysctls: tuple[tuple[str, str], ...] = ()

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
    # CPU placement: (role, CPU list) for the roles of registry.CPU_ROLES the scenario pins.
    cpus: tuple[tuple[str, str], ...] = ()
    # One more round per server after the measured rounds, recorded with perf record (results/perf.py);
    # never counted in the statistics.
    profile: bool = False
    # Kernel settings on every host for the whole run (name -> value as written to /proc/sys); a
    # matrix key that is a sysctl name sweeps one (Cell.sysctls holds each cell's full set).
    sysctls: tuple[tuple[str, str], ...] = ()
    # SOCKMAP acceleration modes (registry.ACCEL_MODES): every server runs once per mode, in pairs.
    accelerate: tuple[str, ...] = (ACCEL_NONE,)

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
            sysctls = dict(self.sysctls)
            for k, v in values:
                if k in WORKLOAD_FIELDS:
                    wl[k] = v
                elif is_sysctl(k):
                    sysctls[k] = v
                else:
                    overrides[k] = v
            ordered = tuple((k, wl[k]) for k in WORKLOADS[self.workload_type])
            cells.append(Cell(i, values, ordered, tuple(sorted(overrides.items())), tuple(sorted(sysctls.items()))))
        return cells

    def sysctl_names(self) -> list[str]:
        """Every kernel setting the run changes: the `sysctls` section's and the matrix's."""
        return sorted({k for k, _ in self.sysctls} | {k for k, _ in self.matrix if is_sysctl(k)})

    def samples_total(self) -> int:
        rounds = self.warmup + self.measured + (1 if self.profile else 0)
        return len(self.cells()) * len(self.placements) * len(self.servers) * rounds

    def to_dict(self) -> dict[str, Any]:
        """Canonical, fully resolved form (JSON-able); parsing it again gives an equal scenario."""
        places = [{"server": p.server, "clients": list(p.clients)} for p in self.placements]
        return {
            "name": self.name,
            "description": self.description,
            "servers": [{"name": s.kind, "label": s.base_label, "options": dict(s.options)} for s in self.servers
                        if s.accelerate == self.accelerate[0]],
            "workload": {"type": self.workload_type, **dict(self.workload)},
            "repetitions": ({"warmup": self.warmup, "measured": self.measured} if self.target_ci_width is None
                            else {"warmup": self.warmup, "min": self.min_measured, "max": self.measured,
                                  "target_ci_width": self.target_ci_width}),
            "baseline": self.baseline,
            "stop_on_failure": self.stop_on_failure,
            "profile": self.profile,
            "timeout": self.timeout_s,
            "seed": self.seed,
            **({"sysctls": dict(self.sysctls)} if self.sysctls else {}),
            **({"matrix": {k: list(v) for k, v in self.matrix}} if self.matrix else {}),
            "placement": places[0] if len(places) == 1 else places,
            **({"backend": {"name": self.backend.kind, "options": dict(self.backend.options),
                            **({"host": self.backend.host} if self.backend.host else {})}}
               if self.backend else {}),
            **({"cpus": dict(self.cpus)} if self.cpus else {}),
            **({"accelerate": list(self.accelerate)} if self.accelerate != (ACCEL_NONE,) else {}),
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
    if key == WORKERS:
        return "int"
    return None


def options_for(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of `options` that server kind `kind` has (a matrix `workers` skips the others)."""
    known = SERVERS[kind].all_options()
    return {k: v for k, v in options.items() if k in known}

