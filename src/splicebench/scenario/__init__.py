"""Scenario files: YAML text -> validated, frozen dataclasses (pure).

A scenario names the servers to compare, one workload for the load client, how many warm-up and
measured repetitions to run, and optionally a matrix of parameter values to sweep. Everything is
validated before anything runs; the first problem found becomes one `ScenarioError` whose message
has the shape

    FILE: FIELD.PATH: PROBLEM; found FOUND, allowed: ALLOWED

The rooms: model.py (the frozen dataclasses and shared constants), reading.py (name or path -> file
-> YAML -> Scenario), validation.py (parsed data -> Scenario) with checks.py (one value against one
rule), schema.py (the JSON Schema published for editors in scenarios/schema.json, generated from the
same registry tables as the validator), and plan.py (Scenario -> ordered samples). This module only
re-exports the public surface, so importers say `scenario.load`, `scenario.Scenario`, ...
"""

from __future__ import annotations

from splicebench.errors import ScenarioError
from splicebench.scenario.checks import found
from splicebench.scenario.model import (
    DEFAULT_ADAPTIVE_MAX,
    DEFAULT_ADAPTIVE_MIN,
    DEFAULT_MEASURED,
    DEFAULT_SEED,
    DEFAULT_TIMEOUT_S,
    DEFAULT_WARMUP,
    DIRECT,
    LOCAL,
    MATRIX_SERVER_KEYS,
    NAME_ALLOWED,
    NAME_RE,
    Backend,
    Cell,
    Placement,
    Scenario,
    ServerConfig,
    format_param,
)
from splicebench.scenario.reading import available, load, parse, resolve
from splicebench.scenario.schema import json_schema, json_schema_text
from splicebench.scenario.validation import (
    BACKEND_KEYS,
    PLACEMENT_KEYS,
    REPETITION_KEYS,
    SERVER_KEYS,
    TOP_KEYS,
    validate,
)

__all__ = [
    # reading and validating
    "ScenarioError",
    "available",
    "load",
    "parse",
    "resolve",
    "validate",
    # the model
    "Backend",
    "Cell",
    "Placement",
    "Scenario",
    "ServerConfig",
    "format_param",
    # the format's names, defaults and keys
    "BACKEND_KEYS",
    "DEFAULT_ADAPTIVE_MAX",
    "DEFAULT_ADAPTIVE_MIN",
    "DEFAULT_MEASURED",
    "DEFAULT_SEED",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_WARMUP",
    "DIRECT",
    "LOCAL",
    "MATRIX_SERVER_KEYS",
    "NAME_ALLOWED",
    "NAME_RE",
    "PLACEMENT_KEYS",
    "REPETITION_KEYS",
    "SERVER_KEYS",
    "TOP_KEYS",
    "found",
    # the JSON Schema
    "json_schema",
    "json_schema_text",
]
