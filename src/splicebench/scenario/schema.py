"""The JSON Schema of a scenario file, for editors (scenarios/schema.json, written by `invoke schema`).

Generated from the same registry tables and model constants as the validator, so the two agree;
tests/test_scenario.py checks both on the table of bad inputs.
"""

from __future__ import annotations

import json
from typing import Any

from splicebench.registry import (ACCEL_MODES, CPU_MAX, COMMON_SERVER_OPTIONS, ECHO, SEED_MAX, SERVERS, WORKERS,
                                  WORKLOAD_FIELDS, WORKLOADS, Option)
from splicebench.scenario.model import (
    DEFAULT_ADAPTIVE_MAX,
    DEFAULT_ADAPTIVE_MIN,
    DEFAULT_MEASURED,
    DEFAULT_TIMEOUT_S,
    DEFAULT_WARMUP,
    NAME_RE,
    SYSCTL_NAME_RE,
    SYSCTL_VALUE_SCHEMA_PATTERN,
    format_param,
)


def _bounds(minimum: int, maximum: int | None) -> dict[str, Any]:
    return {"minimum": minimum} if maximum is None else {"minimum": minimum, "maximum": maximum}


def _size_schema(minimum: int, maximum: int | None = None) -> dict[str, Any]:
    return {
        "oneOf": [
            {"type": "integer", **_bounds(minimum, maximum)},
            {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?\s*$"},
        ]
    }


def _option_schema(opt: Option) -> dict[str, Any]:
    if opt.kind == "size":
        s = _size_schema(opt.minimum, opt.maximum)
    elif opt.kind == "int":
        s = {"type": "integer", **_bounds(opt.minimum, opt.maximum)}
    elif opt.kind == "bool":
        s = {"type": "boolean"}
    else:
        s = {"enum": list(opt.choices)}
    return {**s, "description": opt.help}


def _field_schema(name: str) -> dict[str, Any]:
    f = WORKLOAD_FIELDS[name]
    s = (_size_schema(f.minimum, f.maximum) if f.kind == "size"
         else {"type": "integer", **_bounds(f.minimum, f.maximum)})
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
    workers = next(s.options[WORKERS] for s in SERVERS.values() if WORKERS in s.options)
    matrix_values[WORKERS] = {"type": "array", "minItems": 1, "uniqueItems": True, "items": _option_schema(workers),
                              "description": "worker threads of the servers that have them (the others keep one)"}
    sysctl_value = {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": SYSCTL_VALUE_SCHEMA_PATTERN}]}
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
            "profile": {"type": "boolean", "description": "after the measured rounds, one more round per server "
                                                         "recorded with perf record -a -g (not in the statistics)"},
            "timeout": {**duration, "description": f"client deadline per sample (default {DEFAULT_TIMEOUT_S:g}s)"},
            "seed": {"type": "integer", "minimum": 0, "maximum": SEED_MAX},
            "matrix": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "properties": matrix_values,
                "patternProperties": {SYSCTL_NAME_RE.pattern: {"type": "array", "minItems": 1, "uniqueItems": True,
                                                               "items": sysctl_value}},
                "description": "parameters (or sysctl names) to sweep; every combination runs every server",
            },
            "sysctls": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": SYSCTL_NAME_RE.pattern},
                "additionalProperties": sysctl_value,
                "description": "kernel settings on every host for the run, restored afterwards (README: Kernel "
                               "settings)",
            },
            "placement": {
                "oneOf": [placement, {"type": "array", "minItems": 1, "uniqueItems": True, "items": placement}],
                "description": "where the server and the clients run; a list runs every server at each "
                               "placement (default: all on local)",
            },
            "backend": backend,
            "cpus": {
                "type": "object",
                "additionalProperties": False,
                "properties": {role: {"oneOf": [{"type": "integer", "minimum": 0, "maximum": CPU_MAX},
                                                {"type": "string", "pattern": r"^\s*\d+(-\d+)?(\s*,\s*\d+(-\d+)?)*\s*$"}],
                                      "description": what}
                               for role, what in (("server", "CPUs of the server, proxy or peer (taskset -c)"),
                                                  ("backend", "CPUs of the backend (taskset -c)"),
                                                  ("client", "CPUs of sb-client's threads (--cpus)"))},
                "description": "CPU placement, e.g. {server: '0', client: '1'}; checked against each host's "
                               "CPUs before the run",
            },
            "accelerate": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"enum": list(ACCEL_MODES)},
                "description": "SOCKMAP acceleration: every server (and its backend and clients) runs once per "
                               "mode, side by side; sk_msg runs them in a cgroup whose local TCP sockets are "
                               "short-circuited by sockops + sk_msg (default [none])",
            },
        },
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"
