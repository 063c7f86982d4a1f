"""Plans: interleaved order, ids, argv for servers and client; scenario values stay one argv word each."""

from __future__ import annotations

import re

import pytest

from splicebench import scenario
from splicebench.errors import ScenarioError
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
    assert p.samples[3].params() == {"conns": 1, "bytes": 1 << 20, "chunk": 128 << 10, "threads": 1,
                                     "source_addrs": 0, "procs": 1, "stall": 10, "hold": 0, "buf": 65536, "sndbuf": 4 << 20}


def test_a_workers_matrix_reaches_the_servers_that_have_workers_only():
    p = plan_of("servers: [proxy-naive]\nbackend: {name: splice}\n"
                "workload: {type: pingpong, conns: 4}\nmatrix: {workers: [1, 2], threads: [1, 2]}\n"
                "repetitions: {warmup: 0, measured: 1}")
    argv = {(s.cell.index, s.server.label): s.server_argv(f"/b/{s.server_kind.program}") for s in p.samples}
    assert argv[(3, "proxy-naive")][-2:] == ["--workers", "2"]
    assert argv[(3, "direct")][-2:] == ["--workers", "2"]  # the backend too: splice has workers
    assert [a for a in p.samples if a.cell.index == 3][0].client_args[-6:-4] == ("--threads", "2")
    q = plan_of("servers: [naive, sockmap, uring]\nworkload: {type: stream, conns: 2}\nmatrix: {workers: [2]}\n"
                "repetitions: {warmup: 0, measured: 1}")
    got = {s.server.label: s.server_argv(f"/b/{s.server_kind.program}") for s in q.samples}
    assert got["naive"][-2:] == got["sockmap"][-2:] == ["--workers", "2"]  # sockmap: worker processes
    assert "--workers" not in got["uring"]
    # One connection and two threads: the client gets the one thread it can use.
    r = plan_of("servers: [naive]\nworkload: {type: pingpong, conns: 1, threads: 2}\n"
                "repetitions: {warmup: 0, measured: 1}")
    assert "--threads" not in r.samples[0].client_args


# Accepted by the format, awkward for a shell: free text with quotes, $, backticks and globs; labels and a
# name using every punctuation a name allows; sizes and a duration written with spaces.
HOSTILE = (
    "name: 0.x_-y\n"
    "description: \"it's \\\"quoted\\\"; $(rm -rf /) `id` && echo $HOME | tee /tmp/x *\"\n"
    "servers: [{name: proxy-naive, label: a.b_c-1},\n"
    "          {name: proxy-sockmap, label: 9-lives..x, options: {parser: true, max_conns: 16}}]\n"
    "backend: {name: sockmap, options: {map: sockhash, sndbuf: ' 64 KiB '}}\n"
    "workload: {type: stream, bytes: ' 1 MiB ', chunk: 64KiB}\n"
    "timeout: ' 90s '\nseed: 7\nrepetitions: {warmup: 0, measured: 1}\n"
)
# Program paths and addresses as the runner might pass them, with spaces, quotes and $ of their own.
SRV, BACKEND, CLIENT = "/opt/sb dir/$x/sb-proxy", "/b it's/sb-echo-sockmap", "/c 'x'; $(id)/sb-client"
UP, CONNECT = "127.0.0.1:4001", "127.0.0.1:4002"


def command_lines(s):
    """The argv lists the runner starts for one sample: server, backend (proxy samples), client."""
    lines = [s.server_argv(SRV, UP if s.backend else None), s.client_argv(CLIENT, CONNECT)]
    return lines + ([s.backend_argv(BACKEND)] if s.backend else [])


def test_hostile_values_stay_single_argv_words():
    sc = scenario.parse(HOSTILE, "h.yaml")
    assert sc.description == "it's \"quoted\"; $(rm -rf /) `id` && echo $HOME | tee /tmp/x *"
    assert [s.label for s in sc.servers] == ["direct", "a.b_c-1", "9-lives..x"]
    p = build_plan(sc)
    by_label = {s.server.label: s for s in p.samples}
    assert command_lines(by_label["9-lives..x"]) == [
        [SRV, "--listen", "127.0.0.1:0", "--upstream", UP, "--max-conns", "16", "--parser"],
        [CLIENT, "--connect", CONNECT, "--workload", "stream", "--conns", "1", "--bytes", "1048576",
         "--chunk", "65536", "--seed", "7", "--timeout", "90"],
        [BACKEND, "--listen", "127.0.0.1:0", "--map", "sockhash", "--sndbuf", "65536"],
    ]
    assert by_label["direct"].server_argv(BACKEND) == [
        BACKEND, "--listen", "127.0.0.1:0", "--map", "sockhash", "--sndbuf", "65536"]
    free_text = (sc.name, sc.description, *(s.label for s in sc.servers))
    for s in p.samples:
        for argv in command_lines(s):
            assert all(type(w) is str for w in argv)
            assert argv[0] in (SRV, BACKEND, CLIENT)
            for w in argv[1:]:
                assert w in (UP, CONNECT, "127.0.0.1:0") or re.fullmatch(r"--[a-z-]+|\d+|[a-z]+", w), (s.id, w)
            for text in free_text:  # if it ever reaches a command line, then whole, as one word
                assert all(text == w or text not in w for w in argv), (s.id, text)


NAME = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
W = "workload: {type: stream}\n"
# Shell syntax where the format has no room for it: each refused with its one message.
HOSTILE_REFUSED = [
    ("servers: [{name: naive, label: 'x; rm -rf /'}]\n" + W,
     f"h.yaml: servers[0].label: not a valid name; found 'x; rm -rf /', allowed: {NAME}"),
    ("servers: [{name: naive, label: $HOME}]\n" + W,
     f"h.yaml: servers[0].label: not a valid name; found '$HOME', allowed: {NAME}"),
    ("servers: [{name: naive, label: '-rf'}]\n" + W,
     f"h.yaml: servers[0].label: not a valid name; found '-rf', allowed: {NAME}"),
    ("servers: [{name: naive, label: 'two words'}]\n" + W,
     f"h.yaml: servers[0].label: not a valid name; found 'two words', allowed: {NAME}"),
    ("servers: [{name: naive, label: \"it's\"}]\n" + W,
     f"h.yaml: servers[0].label: not a valid name; found \"it's\", allowed: {NAME}"),
    ("name: '$(id)'\nservers: [naive]\n" + W, f"h.yaml: name: not a valid name; found '$(id)', allowed: {NAME}"),
    ("servers: [{name: sockmap, options: {map: 'sockhash; reboot'}}]\n" + W,
     "h.yaml: servers[0].options.map: not a valid choice; found 'sockhash; reboot', allowed: sockhash, sockmap "
     "(did you mean 'sockhash'?)"),
    ("servers: [naive]\nworkload: {type: stream, bytes: '1MiB; rm -rf /'}\n",
     "h.yaml: workload.bytes: not a size; found '1MiB; rm -rf /', allowed: a size >= 1B, e.g. 64, '64B', '128KiB', "
     "'100MiB', '1GiB'"),
    ("servers: [naive]\n" + W + "timeout: '$(sleep 9)'\n",
     "h.yaml: timeout: not a duration; found '$(sleep 9)', allowed: seconds as a number, or a string like '500ms', "
     "'90s', '2m', '1h'"),
    ("servers: [naive]\n" + W + "seed: '7; id'\n", "h.yaml: seed: not an integer; found '7; id', allowed: an integer >= 0"),
]


@pytest.mark.parametrize("text,message", HOSTILE_REFUSED, ids=[m.split(": ")[1] for _, m in HOSTILE_REFUSED])
def test_hostile_values_the_format_refuses(text, message):
    with pytest.raises(ScenarioError) as exc:
        build_plan(scenario.parse(text, "h.yaml"))
    assert str(exc.value) == message


def test_programs_needed_per_host():
    p = plan_of("servers: [naive, sockmap]\nworkload: {type: stream}")
    assert p.programs() == {"local": {"sb-echo-naive", "sb-echo-sockmap", "sb-client"}}
    assert p.hosts() == ["local"]


def test_acceleration_needs_root_on_every_host_of_its_samples():
    from splicebench.run.privileges import needs_root
    assert needs_root(plan_of("servers: [naive]\nworkload: {type: stream}")) == {}
    need = needs_root(plan_of("servers: [naive]\naccelerate: [none, sk_msg]\nworkload: {type: stream}"))
    assert list(need) == ["local"] and len(need["local"]) == 1 and need["local"][0].startswith("accelerate sk_msg")
