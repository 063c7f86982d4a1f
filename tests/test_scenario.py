"""Scenario validation: good files load, every bad input gets its one exact message, the published
JSON Schema matches the validator."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from splicebench import scenario
from splicebench.errors import ScenarioError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "scenarios"
OK = "servers: [naive]\nworkload: {type: stream}\n"
SIZE = "a size >= 1B, e.g. 64, '64B', '128KiB', '100MiB', '1GiB'"
DUR = "seconds as a number, or a string like '500ms', '90s', '2m', '1h'"
TOP = ("name, description, servers, workload, repetitions, baseline, stop_on_failure, timeout, seed, "
       "matrix, placement, backend")
KINDS = ("haproxy, haproxy-splice, haproxy-splice-auto, naive, nginx, proxy-naive, proxy-sockmap, proxy-splice, "
         "sockmap, splice")
PROXIES = "proxy-naive, proxy-splice, proxy-sockmap, nginx, haproxy, haproxy-splice-auto, haproxy-splice"

# (YAML text, exact message, whether the JSON Schema can reject it too)
BAD = [
    (OK + "repetition: {measured: 3}",
     f"bad.yaml: repetition: unknown key; found 'repetition', allowed: {TOP} (did you mean 'repetitions'?)", True),
    ("servers: [naive]\nworkload: {type: stream, byte: 1MiB}",
     "bad.yaml: workload.byte: unknown key; found 'byte', allowed: type, conns, bytes, chunk (did you mean 'bytes'?)",
     True),
    ("servers: [naive]\nworkload: {type: stream, msg_size: 64B}",
     "bad.yaml: workload.msg_size: does not apply to workload type 'stream'; found 'msg_size', "
     "allowed: type, conns, bytes, chunk", True),
    ("servers: [naive]\nworkload: {type: stram}",
     "bad.yaml: workload.type: unknown workload; found 'stram', allowed: burst, pingpong, stream "
     "(did you mean 'stream'?)", True),
    ("servers: [naive]\nworkload: {bytes: 1MiB}",
     "bad.yaml: workload.type: missing; found nothing, allowed: burst, pingpong, stream", True),
    ("servers: [naive]\nworkload: [stream]",
     "bad.yaml: workload: not a mapping; found a list, allowed: a mapping with 'type' and workload parameters", True),
    ("servers: [naive, splise]\nworkload: {type: stream}",
     f"bad.yaml: servers[1]: unknown server; found 'splise', allowed: {KINDS} (did you mean 'splice'?)",
     True),
    ("servers: [{name: epoll}]\nworkload: {type: stream}",
     f"bad.yaml: servers[0].name: unknown server; found 'epoll', allowed: {KINDS}", True),
    ("servers: [{name: naive, options: {bufsize: 4096}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.bufsize: unknown option for server 'naive'; found 'bufsize', "
     "allowed: buf, rcvbuf, sndbuf (did you mean 'buf'?)", True),
    ("servers: [{name: sockmap, options: {map: array}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.map: not a valid choice; found 'array', allowed: sockhash, sockmap", True),
    ("servers: [{name: sockmap, options: {parser: yes please}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.parser: not a boolean; found 'yes please', allowed: true or false", True),
    ("servers: naive\nworkload: {type: stream}",
     f"bad.yaml: servers: not a list; found 'naive', allowed: a non-empty list of server names ({KINDS}) "
     "or mappings with keys name, label, options", True),
    ("servers: []\nworkload: {type: stream}",
     f"bad.yaml: servers: empty list; found an empty list, allowed: a non-empty list of server names ({KINDS}) "
     "or mappings with keys name, label, options", True),
    # proxy scenarios (a `backend` section)
    ("servers: [proxy-naive]\nworkload: {type: stream}",
     "bad.yaml: servers[0]: a proxy needs a 'backend' section; found 'proxy-naive', allowed: echo servers, "
     "or add e.g. backend: {name: naive}", False),
    ("servers: [proxy-naive, splice]\nbackend: {name: naive}\nworkload: {type: stream}",
     "bad.yaml: servers[1]: not a proxy (with a 'backend' section the servers are proxies); found 'splice', "
     f"allowed: {PROXIES} (did you mean 'proxy-splice'?)", False),
    ("servers: [nginx]\nbackend: {name: haproxy}\nworkload: {type: stream}",
     "bad.yaml: backend.name: not an echo server; found 'haproxy', allowed: naive, splice, sockmap", True),
    ("servers: [nginx]\nbackend: {options: {buf: 1MiB}}\nworkload: {type: stream}",
     "bad.yaml: backend.name: missing; found nothing, allowed: naive, splice, sockmap", True),
    ("servers: [nginx]\nbackend: {name: naive, options: {pipe_size: 1MiB}}\nworkload: {type: stream}",
     "bad.yaml: backend.options.pipe_size: unknown option for server 'naive'; found 'pipe_size', "
     "allowed: buf, rcvbuf, sndbuf", False),
    ("servers: [nginx]\nbackend: {name: naive, host: lab9}\nworkload: {type: stream}",
     "bad.yaml: backend.host: unknown host; found 'lab9', allowed: local", False),
    ("servers: [{name: splice, label: direct}, nginx]\nbackend: {name: naive}\nworkload: {type: stream}",
     "bad.yaml: servers[0]: the label 'direct' is the backend without a proxy; found 'splice', allowed: "
     "name 'naive' with the backend's options, or another label", False),
    ("servers: [{name: nginx, options: {workers: 0}}]\nbackend: {name: naive}\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.workers: must be positive; found 0, allowed: an integer >= 1", True),
    ("workload: {type: stream}",
     "bad.yaml: servers: missing; found nothing, allowed: a non-empty list of servers, e.g. [naive, splice, sockmap]",
     True),
    ("servers: [naive, naive]\nworkload: {type: stream}",
     "bad.yaml: servers[1]: duplicate server label; found 'naive', allowed: each label once (give repeated "
     "servers a distinct 'label')", False),
    ("servers: [naive]\nworkload: {type: stream, bytes: 100MB2}",
     f"bad.yaml: workload.bytes: not a size; found '100MB2', allowed: {SIZE}", True),
    ("servers: [naive]\nworkload: {type: stream, bytes: 10 MiBs}",
     f"bad.yaml: workload.bytes: not a size; found '10 MiBs', allowed: {SIZE}", True),
    ("servers: [naive]\nworkload: {type: stream, bytes: 1.5B}",
     f"bad.yaml: workload.bytes: not a size; found '1.5B', allowed: {SIZE}", False),
    ("servers: [naive]\nworkload: {type: stream, bytes: true}",
     f"bad.yaml: workload.bytes: not a size; found true, allowed: {SIZE}", True),
    ("servers: [naive]\nworkload: {type: stream, chunk: 0}",
     f"bad.yaml: workload.chunk: must be positive; found 0, allowed: {SIZE}", True),
    ("servers: [naive]\nworkload: {type: stream, bytes: -1}",
     f"bad.yaml: workload.bytes: must not be negative; found -1, allowed: {SIZE}", True),
    ("servers: [naive]\nworkload: {type: stream, conns: 0}",
     "bad.yaml: workload.conns: must be positive; found 0, allowed: an integer >= 1", True),
    ("servers: [naive]\nworkload: {type: stream, conns: -3}",
     "bad.yaml: workload.conns: must be positive; found -3, allowed: an integer >= 1", True),
    ("servers: [naive]\nworkload: {type: stream, conns: four}",
     "bad.yaml: workload.conns: not an integer; found 'four', allowed: an integer >= 1", True),
    ("servers: [naive]\nworkload: {type: stream, conns: 1.5}",
     "bad.yaml: workload.conns: not an integer; found 1.5, allowed: an integer >= 1", True),
    (OK + "repetitions: {measured: 0}",
     "bad.yaml: repetitions.measured: must be positive; found 0, allowed: an integer >= 1", True),
    (OK + "repetitions: {warmup: -1}",
     "bad.yaml: repetitions.warmup: must be at least 0; found -1, allowed: an integer >= 0", True),
    (OK + "repetitions: 5",
     "bad.yaml: repetitions: not a mapping; found 5, allowed: a mapping with keys warmup, measured", True),
    (OK + "matrix: {}",
     "bad.yaml: matrix: empty matrix; found an empty mapping, allowed: a mapping of parameter -> non-empty list "
     "of values; parameters: conns, bytes, chunk, sndbuf, rcvbuf", True),
    (OK + "matrix: {conns: []}",
     "bad.yaml: matrix.conns: empty list; found an empty list, allowed: a non-empty list of values", True),
    (OK + "matrix: {conns: 4}",
     "bad.yaml: matrix.conns: not a list; found 4, allowed: a non-empty list of values", True),
    (OK + "matrix: {conns: [1, 1]}",
     "bad.yaml: matrix.conns[1]: duplicate value; found 1, allowed: distinct values", True),
    ("servers: [naive]\nworkload: {type: pingpong}\nmatrix: {msgsize: [64B]}",
     "bad.yaml: matrix.msgsize: unknown matrix key; found 'msgsize', allowed: conns, msg_size, round_trips, "
     "sndbuf, rcvbuf (did you mean 'msg_size'?)", True),
    (OK + "matrix: {servers: [naive, splice]}",
     "bad.yaml: matrix.servers: servers cannot be a matrix key; found 'servers', allowed: conns, bytes, chunk, "
     "sndbuf, rcvbuf (every server in 'servers' runs at every matrix point)", True),
    ("servers: [naive]\nworkload: {type: pingpong}\nmatrix: {msg_size: [64B, big]}",
     f"bad.yaml: matrix.msg_size[1]: not a size; found 'big', allowed: {SIZE}", True),
    (OK + "matrix: {msg_size: [64B]}",
     "bad.yaml: matrix.msg_size: does not apply to workload type 'stream'; found 'msg_size', allowed: conns, "
     "bytes, chunk, sndbuf, rcvbuf", False),
    ("servers: [naive]\nworkload: {type: stream, conns: 2}\nmatrix: {conns: [1, 8]}",
     "bad.yaml: matrix.conns: also set in workload.conns; found 'conns', allowed: each parameter in one place",
     False),
    ("servers: [naive, splice]\nworkload: {type: stream}\nbaseline: epoll",
     "bad.yaml: baseline: not one of the scenario's servers; found 'epoll', allowed: naive, splice", False),
    (OK + "timeout: soon", f"bad.yaml: timeout: not a duration; found 'soon', allowed: {DUR}", True),
    (OK + "timeout: 0", f"bad.yaml: timeout: must be positive; found 0, allowed: {DUR}", True),
    (OK + "stop_on_failure: maybe",
     "bad.yaml: stop_on_failure: not a boolean; found 'maybe', allowed: true or false", True),
    (OK + "seed: -2", "bad.yaml: seed: must be at least 0; found -2, allowed: an integer >= 0", True),
    ("name: my scenario\n" + OK,
     "bad.yaml: name: not a valid name; found 'my scenario', allowed: 1-64 letters, digits, '.', '_' or '-', "
     "starting with a letter or digit", True),
    (OK + "placement: {server: db1}",
     "bad.yaml: placement.server: unknown host; found 'db1', allowed: local", False),
    (OK + "placement: {clients: []}",
     "bad.yaml: placement.clients: empty list; found an empty list, allowed: a non-empty list of hosts (local)",
     True),
    ("servers: [naive\nworkload: {type: stream}",
     "bad.yaml: line 2, column 9: not valid YAML; found expected ',' or ']', but got ':', allowed: YAML text", None),
    (OK + "servers: [splice]",
     "bad.yaml: line 3: duplicate key; found 'servers' twice in one mapping, allowed: each key once", None),
    ("", f"bad.yaml: (top level): empty file; found nothing, allowed: a mapping with keys {TOP}", None),
    ("- naive\n- splice", f"bad.yaml: (top level): not a mapping; found a list, allowed: a mapping with keys {TOP}",
     True),
]


@pytest.mark.parametrize("text,message,_", BAD, ids=[m.split(": ")[1] + f"-{i}" for i, (_, m, _s) in enumerate(BAD)])
def test_bad_input_gets_its_exact_message(text, message, _):
    with pytest.raises(ScenarioError) as exc:
        scenario.parse(text, "bad.yaml")
    assert str(exc.value) == message


def test_bad_table_is_big_enough():
    assert len(BAD) >= 20


@pytest.fixture(scope="module")
def schema():
    data = json.loads((SCENARIOS / "schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(data)
    return jsonschema.Draft202012Validator(data)


def test_published_schema_is_generated_from_the_validator_tables():
    assert (SCENARIOS / "schema.json").read_text() == scenario.json_schema_text(), \
        "scenarios/schema.json is stale: run `invoke schema`"


@pytest.mark.parametrize("text,message,schema_rejects", [b for b in BAD if b[2] is not None],
                         ids=[f"{i}" for i, b in enumerate(BAD) if b[2] is not None])
def test_schema_agrees_with_validator_on_bad_inputs(schema, text, message, schema_rejects):
    data = yaml.safe_load(text)
    errors = list(schema.iter_errors(data))
    assert bool(errors) == schema_rejects, (message, [e.message for e in errors])


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_passes_the_schema(schema, path):
    errors = [e.message for e in schema.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize("name", ["loopback-100mib", "loopback-pingpong", "loopback-burst", "loopback-sweep"])
def test_shipped_loopback_scenarios_validate(name):
    sc = scenario.load(SCENARIOS / f"{name}.yaml")
    assert sc.name == name
    assert [s.label for s in sc.servers] == ["naive", "splice", "sockmap"]
    assert sc.description
    assert sc.placement == scenario.Placement("local", ("local",))


def test_loopback_100mib_is_what_the_readme_promises():
    sc = scenario.load(SCENARIOS / "loopback-100mib.yaml")
    assert sc.workload_type == "stream"
    assert dict(sc.workload)["bytes"] == 100 << 20
    assert dict(sc.workload)["conns"] == 1
    assert sc.warmup >= 1 and sc.measured >= 5
    assert sc.baseline == "naive"


def test_sweep_has_a_matrix_of_sizes_and_connection_counts():
    sc = scenario.load(SCENARIOS / "loopback-sweep.yaml")
    keys = [k for k, _ in sc.matrix]
    assert "msg_size" in keys and "conns" in keys
    cells = sc.cells()
    assert len(cells) == len(dict(sc.matrix)["msg_size"]) * len(dict(sc.matrix)["conns"])
    assert cells[0].label == "msg_size=64B conns=1"


def test_defaults_and_sizes():
    sc = scenario.parse("servers: [naive, {name: sockmap, label: sm-parser, options: {parser: true, sndbuf: 4MiB}}]\n"
                        "workload: {type: burst, burst_size: 64KiB}\n", "x.yaml")
    assert sc.name == "x"
    assert sc.warmup == 1 and sc.measured == 5 and sc.timeout_s == 120 and sc.seed == 1
    assert sc.baseline == "naive"
    assert dict(sc.workload) == {"conns": 1, "burst_size": 65536, "bursts": 10}
    assert sc.servers[1] == scenario.ServerConfig("sm-parser", "sockmap", (("parser", True), ("sndbuf", 4 << 20)))


def test_baseline_defaults_to_the_first_server_without_naive():
    sc = scenario.parse("servers: [splice, sockmap]\nworkload: {type: stream}\n", "x.yaml")
    assert sc.baseline == "splice"


def test_resolved_form_parses_back_to_the_same_scenario():
    sc = scenario.load(SCENARIOS / "loopback-sweep.yaml")
    again = scenario.validate(json.loads(json.dumps(sc.to_dict())), str(sc.source))
    assert again == sc


def test_known_hosts_extend_placement():
    sc = scenario.parse(OK + "placement: {server: lab1, clients: [lab2, lab3]}", "x.yaml",
                        known_hosts=("local", "lab1", "lab2", "lab3"))
    assert sc.placement == scenario.Placement("lab1", ("lab2", "lab3"))


def test_resolve_names_and_paths(tmp_path):
    assert scenario.resolve("loopback-100mib", SCENARIOS) == SCENARIOS / "loopback-100mib.yaml"
    f = tmp_path / "mine.yaml"
    f.write_text(OK)
    assert scenario.resolve(str(f), SCENARIOS) == f
    with pytest.raises(ScenarioError) as exc:
        scenario.resolve("loopback-100mb", SCENARIOS)
    assert "did you mean 'loopback-100mib'?" in str(exc.value)
