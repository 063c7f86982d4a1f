"""Plans: interleaved order, ids, argv for servers and client."""

from __future__ import annotations

import pytest

from splicebench import scenario
from splicebench.scenario.plan import build_plan, expected_bytes

pytestmark = pytest.mark.unit


def plan_of(text):
    return build_plan(scenario.parse(text, "p.yaml"))


def test_repetitions_are_interleaved_abcabc_with_warmup_first():
    p = plan_of("servers: [naive, splice, sockmap]\nworkload: {type: stream}\nrepetitions: {warmup: 1, measured: 2}")
    assert [(s.server.label, s.phase, s.repetition, s.round) for s in p.samples] == [
        ("naive", "warmup", 1, 1), ("splice", "warmup", 1, 1), ("sockmap", "warmup", 1, 1),
        ("naive", "measured", 1, 2), ("splice", "measured", 1, 2), ("sockmap", "measured", 1, 2),
        ("naive", "measured", 2, 3), ("splice", "measured", 2, 3), ("sockmap", "measured", 2, 3),
    ]
    assert [s.seq for s in p.samples] == list(range(9))
    assert p.samples[0].id == "0001-c0-naive-w1"
    assert p.samples[-1].id == "0009-c0-sockmap-m2"
    assert len({s.id for s in p.samples}) == 9


def test_matrix_cells_run_one_after_another():
    p = plan_of("servers: [naive, splice]\nworkload: {type: pingpong, round_trips: 50}\n"
                "matrix: {msg_size: [64B, 1KiB], conns: [1, 4]}\nrepetitions: {warmup: 0, measured: 1}")
    assert [(s.cell.label, s.server.label) for s in p.samples] == [
        ("msg_size=64B conns=1", "naive"), ("msg_size=64B conns=1", "splice"),
        ("msg_size=64B conns=4", "naive"), ("msg_size=64B conns=4", "splice"),
        ("msg_size=1KiB conns=1", "naive"), ("msg_size=1KiB conns=1", "splice"),
        ("msg_size=1KiB conns=4", "naive"), ("msg_size=1KiB conns=4", "splice"),
    ]
    s = p.samples[6]
    assert s.client_argv("/b/sb-client", "127.0.0.1:9") == [
        "/b/sb-client", "--connect", "127.0.0.1:9", "--workload", "pingpong", "--conns", "4",
        "--msg-size", "1024", "--round-trips", "50", "--seed", "1", "--timeout", "120"]
    assert expected_bytes(p.scenario, s) == 1024 * 50 * 4


def test_server_argv_maps_options_and_matrix_overrides():
    p = plan_of("servers: [{name: naive, options: {buf: 64KiB}}, {name: splice, options: {pipe_size: 256KiB}},\n"
                "  {name: sockmap, options: {map: sockmap, parser: true, max_conns: 16}}]\n"
                "workload: {type: stream, bytes: 1MiB}\nmatrix: {sndbuf: [0, 4MiB]}\n"
                "repetitions: {warmup: 0, measured: 1}")
    argv = [s.server_argv(f"/b/{s.server_kind.program}") for s in p.samples]
    assert argv[0] == ["/b/sb-echo-naive", "--listen", "127.0.0.1:0", "--buf", "65536", "--sndbuf", "0"]
    assert argv[1] == ["/b/sb-echo-splice", "--listen", "127.0.0.1:0", "--pipe-size", "262144", "--sndbuf", "0"]
    assert argv[5] == ["/b/sb-echo-sockmap", "--listen", "127.0.0.1:0", "--map", "sockmap", "--max-conns", "16",
                       "--parser", "--sndbuf", "4194304"]
    assert p.samples[3].params() == {"conns": 1, "bytes": 1 << 20, "chunk": 128 << 10, "buf": 65536,
                                     "sndbuf": 4 << 20}


def test_hostile_values_stay_single_argv_words():
    # Labels and values never pass through a shell; a label with shell syntax cannot even validate.
    with pytest.raises(scenario.ScenarioError):
        plan_of("servers: [{name: naive, label: 'x; rm -rf /'}]\nworkload: {type: stream}")


def test_programs_needed_per_host():
    p = plan_of("servers: [naive, sockmap]\nworkload: {type: stream}")
    assert p.programs() == {"local": {"sb-echo-naive", "sb-echo-sockmap", "sb-client"}}
    assert p.hosts() == ["local"]
