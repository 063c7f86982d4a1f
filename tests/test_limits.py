"""Program limits: validation knows every bound the programs enforce, and refuses more before a run.

The registry is the one source of truth in Python; the programs hold the same bounds in C. These
tests hold the two against each other by asking each built program (a value one above the bound
must be its usage error naming exactly that bound; the bound itself must pass), and check that
every bounded option in the C sources has a registry entry.
"""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from splicebench import registry, scenario
from splicebench.cli import commands
from splicebench.errors import PreflightError, ProgramUsageError, ScenarioError
from splicebench.hosts.local import LocalHost
from splicebench.results import rundir
from splicebench.run import preflight
from splicebench.util.preload import preload
from splicebench.scenario import plan
from splicebench.registry import CLIENT_PROGRAM, SEED_MAX, SERVERS, WORKLOAD_FIELDS

REPO = Path(__file__).resolve().parents[1]

# (program, flag, maximum) for every bound a scenario can reach, from the registry.
BOUNDS = sorted({(k.program, o.flag, o.maximum) for k in SERVERS.values() if k.built
                 for o in k.all_options().values() if o.maximum is not None}
                | {(CLIENT_PROGRAM, f.flag, f.maximum) for f in WORKLOAD_FIELDS.values()}
                | {(CLIENT_PROGRAM, "--seed", SEED_MAX)})
# Bounded options that scenarios never set: the sampler's own flags, given by the runner.
NOT_FROM_SCENARIOS = {("sb-cpustat", flag) for flag in ("--pid", "--interval-us", "--keep-s")}


def _base_argv(program: str) -> list[str]:
    if program == CLIENT_PROGRAM:
        return ["--connect", "127.0.0.1:9", "--workload", "stream", "--timeout", "1"]
    kind = next(k for k in SERVERS.values() if k.program == program)
    return ["--listen", "127.0.0.1:0"] + (["--upstream", "127.0.0.1:9"] if kind.role == registry.PROXY else [])


@pytest.mark.e2e
@pytest.mark.parametrize("program, flag, maximum", BOUNDS, ids=[f"{p} {f}" for p, f, _ in BOUNDS])
def test_each_program_enforces_exactly_the_registry_bound(programs, program, flag, maximum):
    exe = programs.program(program)
    over = subprocess.run([exe, *_base_argv(program), flag, str(maximum + 1)], capture_output=True, text=True,
                          timeout=30)
    assert over.returncode == 2, (over.returncode, over.stderr)
    if maximum == 2**64 - 1:  # beyond uint64: the number itself does not parse
        assert f"{flag}: expected a non-negative integer, got '{maximum + 1}'" in over.stderr, over.stderr
    else:
        assert f"{flag}: {maximum + 1} is larger than the maximum {maximum}" in over.stderr, over.stderr
    # The bound itself passes that option's check: a later unknown option is the usage error instead.
    at = subprocess.run([exe, *_base_argv(program), flag, str(maximum), "--no-such-option"], capture_output=True,
                        text=True, timeout=30)
    assert at.returncode == 2 and "larger than the maximum" not in at.stderr, at.stderr


@pytest.mark.unit
def test_every_bounded_option_in_the_c_sources_is_in_the_registry():
    known = {(p, f) for p, f, _ in BOUNDS} | NOT_FROM_SCENARIOS
    found = set()
    for src in [*(REPO / "servers").glob("*.c"), *(REPO / "bpf").glob("*.c")]:
        for flag in re.findall(r'net_parse_u64\("(--[a-z-]+)"', src.read_text()):
            found.add((src.name, flag))
    programs_of = {"client.c": [CLIENT_PROGRAM], "net.c": [k.program for k in SERVERS.values() if k.built],
                   "sockmap_common.c": ["sb-echo-sockmap", "sb-proxy-sockmap"],
                   "uring.c": ["sb-echo-uring", "sb-proxy-uring"]}

    def callers(call: str) -> list[str]:
        return ["sb-" + src.name.removesuffix(".c").replace("_", "-")
                for src in [*(REPO / "servers").glob("*.c"), *(REPO / "bpf").glob("*.c")]
                if call in src.read_text() and src.name not in ("net.c", "proxy.c")]

    # net.c parses --workers for the programs that call net_parse_workers, directly or through
    # proxy.c's proxy_opt (the user-space proxies' shared options, --upstream-sources too).
    proxies = callers("proxy_opt(")
    with_workers = callers("net_parse_workers(arg)") + proxies
    assert "sb-echo-sockmap" in with_workers  # its worker processes
    assert {"sb-proxy-naive", "sb-proxy-splice"} <= set(proxies)
    missing = []
    for name, flag in sorted(found):
        progs = programs_of.get(name, ["sb-" + name.removesuffix(".c").replace("_", "-")])
        if (name, flag) == ("net.c", "--workers"):
            progs = with_workers
        if (name, flag) == ("proxy.c", "--upstream-sources"):
            progs = proxies
        missing += [f"{p} {flag} ({name})" for p in progs if (p, flag) not in known]
    assert found and missing == [], f"bounded in C but unknown to validation: {missing}"


# Upper bounds the C sources check without net_parse_u64, each with where validation holds it.
OTHER_UPPER_BOUNDS = {
    ("client.c", "bytes per connection too large (at most 2^50)"): "registry.PAYLOAD_MAX, PAYLOAD_FACTORS",
    ("cpustat.c", "at most %d --pid options"): "the runner's own flags, never from scenarios",
    ("net.c", "%s: %llu is larger than the maximum %llu"): "net_parse_u64 itself",
    ("client.c", "%s: %s is larger than the maximum %d"): "registry.STALL_MAX_S (--stall; --timeout: the runner's)",
}


@pytest.mark.unit
def test_no_bound_in_the_c_sources_escapes_the_scan():
    calls = literal = 0
    other = set()
    for src in [*(REPO / "servers").glob("*.c"), *(REPO / "bpf").glob("*.c")]:
        text = src.read_text()
        calls += len(re.findall(r"(?<!uint64_t )net_parse_u64\(", text))
        literal += len(re.findall(r'net_parse_u64\("--[a-z-]+"', text))
        for fmt in re.findall(r'net_usage_error\(\s*"([^"]*)"', text):
            if re.search(r"at most|too large|larger than", fmt):
                other.add((src.name, fmt))
    # A flag passed as a variable would hide its bound from the scan above.
    assert calls == literal > 0
    assert other == set(OTHER_UPPER_BOUNDS), "a new upper bound: add it to the registry and to this table"


@pytest.mark.e2e
@pytest.mark.parametrize("workload, a, b", [("pingpong", "--msg-size", "--round-trips"),
                                            ("burst", "--burst-size", "--bursts")])
def test_the_client_bounds_bytes_per_connection_as_the_registry_says(programs, workload, a, b):
    exe = programs.program(CLIENT_PROGRAM)
    assert registry.PAYLOAD_MAX == 1 << 50 and workload in registry.PAYLOAD_FACTORS

    def client(x: int, y: int, connect: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, "--connect", connect, "--workload", workload, a, str(x), b, str(y)],
                              capture_output=True, text=True, timeout=30)

    over = client(1 << 30, (1 << 20) + 1, "127.0.0.1:9")
    assert over.returncode == 2 and "bytes per connection too large (at most 2^50)" in over.stderr, over.stderr
    # Exactly the bound passes that check: the address, checked next, is the usage error instead.
    at = client(1 << 30, 1 << 20, "no-address")
    assert at.returncode == 2 and "--connect: expected ADDR:PORT" in at.stderr, at.stderr


@pytest.mark.unit
def test_peers_refuse_exactly_beyond_the_registry_bounds():
    from splicebench.programs import peers

    kind = SERVERS["nginx"]
    assert kind.peer and peers.MAX_CONNS == registry.PEER_MAX_CONNS
    base = dict(listen_host="127.0.0.1", listen_port=20001, upstream_host="127.0.0.1", upstream_port=20002,
                workdir="/tmp/x")
    for key, opt in kind.all_options().items():
        assert opt.maximum is not None, key
        cfg = peers.peer_config("nginx", **base, options={key: opt.maximum})
        assert getattr(cfg, key) == opt.maximum
        with pytest.raises(peers.PeerError, match=f"^{key}: expected an integer from {opt.minimum} to {opt.maximum},"):
            peers.peer_config("nginx", **base, options={key: opt.maximum + 1})


def _load(tmp_path: Path, text: str):
    p = tmp_path / "limits.yaml"
    p.write_text(text)
    return scenario.load(p)


OVER = [
    ("servers: [naive]\nworkload: {type: stream, conns: 100000000}\n",
     "workload.conns: too large for the program; found 100000000, allowed: an integer from 1 to 1000000"),
    ("servers: [{name: splice, options: {pipe_size: 1TiB}}]\nworkload: {type: stream}\n",
     "servers[0].options.pipe_size: too large for the program; found '1TiB', "
     "allowed: a size from 4KiB to 1GiB (1073741824 bytes)"),
    ("servers: [{name: naive, options: {buf: 2GiB}}]\nworkload: {type: stream}\n",
     "servers[0].options.buf: too large for the program; found '2GiB', "
     "allowed: a size from 1B to 1GiB (1073741824 bytes)"),
    ("servers: [naive]\nworkload: {type: stream, chunk: 65MiB}\n",
     "workload.chunk: too large for the program; found '65MiB', "
     "allowed: a size from 1B to 64MiB (67108864 bytes)"),
    ("servers: [naive, sockmap]\nworkload: {type: pingpong}\nmatrix: {sndbuf: [64KiB, 1GiB]}\n",
     "matrix.sndbuf[1]: too large for the program; found '1GiB', allowed: a size from 0B to 1073741823B"),
    ("servers: [{name: sockmap, options: {max_conns: 20000000}}]\nworkload: {type: stream}\n",
     "servers[0].options.max_conns: too large for the program; found 20000000, "
     "allowed: an integer from 1 to 16777216"),
    ("servers: [sockmap]\nworkload: {type: pingpong, conns: 70000}\n",
     "servers[0].options.max_conns: the map holds fewer connections than the scenario opens "
     "(70000 conns x 1 client(s) = 70000); found 65536, allowed: max_conns >= 70000 (at most 16777216)"),
    ("servers: [{name: proxy-sockmap, options: {max_conns: 10}}]\nbackend: {name: naive}\n"
     "workload: {type: pingpong}\nmatrix: {conns: [1, 11]}\n",
     "servers[0].options.max_conns: the map holds fewer connections than the scenario opens "
     "(11 conns x 1 client(s) = 11); found 10, allowed: max_conns >= 11 (at most 16777216)"),
    ("servers: [naive]\nworkload: {type: pingpong, msg_size: 1GiB, round_trips: 2000000}\n",
     "workload.round_trips: bytes per connection too large for the program (msg_size 1073741824 x round_trips "
     "2000000); found 2147483648000000, allowed: msg_size x round_trips <= 1125899906842624 (1024TiB)"),
    ("servers: [naive]\nworkload: {type: burst, burst_size: 1TiB}\nmatrix: {bursts: [1, 1025]}\n",
     "matrix.bursts: bytes per connection too large for the program (burst_size 1099511627776 x bursts 1025); "
     "found 1126999418470400, allowed: burst_size x bursts <= 1125899906842624 (1024TiB)"),
    ("servers: [proxy-naive, nginx]\nbackend: {name: naive}\nworkload: {type: pingpong}\n"
     "matrix: {conns: [100, 5000]}\n",
     "matrix.conns: more connections than servers[1] (nginx) is configured for (5000 conns x 1 client(s) = "
     "5000); found 5000, allowed: conns x clients <= 4096 with a peer proxy"),
    ("servers: [{name: haproxy, options: {buffer: 128MiB}}]\nbackend: {name: naive}\nworkload: {type: stream}\n",
     "servers[0].options.buffer: too large for the program; found '128MiB', "
     "allowed: a size from 1KiB to 64MiB (67108864 bytes)"),
    ("servers: [{name: nginx, options: {workers: 65}}]\nbackend: {name: naive}\nworkload: {type: stream}\n",
     "servers[0].options.workers: too large for the program; found 65, allowed: an integer from 1 to 64"),
    ("servers: [{name: nginx, options: {sndbuf: 2GiB}}]\nbackend: {name: naive}\nworkload: {type: stream}\n",
     "servers[0].options.sndbuf: too large for the program; found '2GiB', allowed: a size from 0B to 1GiB "
     "(1073741824 bytes)"),
    ("servers: [naive]\nworkload: {type: pingpong}\nseed: 18446744073709551616\n",
     "seed: too large for the program; found 18446744073709551616, allowed: an integer from 0 to "
     "18446744073709551615"),
]


@pytest.mark.unit
@pytest.mark.parametrize("text, message", OVER, ids=[m.split(":")[0] for _, m in OVER])
def test_over_the_limit_fails_validation_with_one_line(tmp_path, text, message):
    with pytest.raises(ScenarioError) as e:
        _load(tmp_path, text)
    assert str(e.value) == f"{tmp_path / 'limits.yaml'}: {message}"
    assert "\n" not in str(e.value)


@pytest.mark.unit
def test_the_bounds_themselves_are_accepted(tmp_path):
    sc = _load(tmp_path, "servers: [{name: splice, options: {pipe_size: 1GiB}}, {name: sockmap, options: "
                         "{max_conns: 1000000}}]\nworkload: {type: stream, conns: 1000000, chunk: 64MiB}\n")
    assert dict(sc.workload)["conns"] == 1_000_000


# --- preflight: the hosts' limits --------------------------------------------------------------

SMALL = preflight.Limits(nofile_hard=1000, port_range=(40000, 40499), somaxconn=128)


@pytest.mark.unit
def test_needs_count_the_descriptors_each_program_holds(tmp_path):
    sc = _load(tmp_path, "servers: [proxy-naive, proxy-splice, nginx]\nbackend: {name: splice}\n"
                         "workload: {type: pingpong, conns: 100}\nrepetitions: {warmup: 0, measured: 1}\n")
    got = {n.program: (n.fds, n.ports_to_one_peer, n.arriving) for n in preflight.needs(plan.build_plan(sc))}
    assert got == {"sb-client": (132, 100, 0), "sb-echo-splice": (332, 0, 100), "sb-proxy-naive": (232, 100, 100),
                   "sb-proxy-splice": (632, 100, 100), "nginx": (232, 100, 100)}


@pytest.mark.unit
def test_latency_under_load_counts_the_bulk_streams_beside_the_ping_pong_connections(tmp_path):
    sc = _load(tmp_path, "servers: [naive]\nworkload: {type: latency-under-load, conns: 300, bulk_conns: 200}\n"
                         "repetitions: {warmup: 0, measured: 1}\n")
    got = {n.program: (n.conns, n.fds, n.ports_to_one_peer, n.arriving) for n in preflight.needs(plan.build_plan(sc))}
    # The server holds both kinds at once; the client's busiest process holds the ping-pong ones.
    assert got == {"sb-client": (500, 300 + preflight.FD_SLACK, 500, 0),
                   "sb-echo-naive": (500, 500 + preflight.FD_SLACK, 0, 500)}
    errors, _ = preflight.problems(preflight.needs(plan.build_plan(sc)),
                                   {"local": preflight.Limits(nofile_hard=400, port_range=(40000, 40999), somaxconn=4096)})
    assert len(errors) == 1 and "sb-echo-naive needs 532 open files for 500 connections" in errors[0]


@pytest.mark.unit
def test_every_built_server_has_its_descriptors_per_connection(tmp_path):
    sc = _load(tmp_path, "servers: [naive, splice, sockmap, uring]\nworkload: {type: stream, conns: 10}\n"
                         "repetitions: {warmup: 0, measured: 1}\n")
    got = {n.program: n.fds for n in preflight.needs(plan.build_plan(sc))}
    assert got["sb-echo-uring"] == 3 * 10 + preflight.FD_SLACK  # a socket and, in splice mode, a pipe
    assert {k.program for k in SERVERS.values() if k.built} <= set(preflight.FDS_PER_CONN)

@pytest.mark.unit
def test_worker_processes_divide_the_descriptors_one_process_needs(tmp_path):
    """RLIMIT_NOFILE is per process: a program spread over processes needs what its busiest one holds (the
    client's slice exactly, a server's SO_REUSEPORT share with REUSEPORT_SKEW_PERCENT to spare)."""
    sc = _load(tmp_path, "servers:\n  - {name: naive, options: {workers: 4, processes: true}}\n"
                         "  - {name: splice, options: {workers: 2, processes: true}}\n"
                         "  - {name: sockmap, options: {workers: 4}}\n  - {name: uring}\n"
                         "workload: {type: pingpong, conns: 1000, threads: 4, procs: 3}\n"
                         "repetitions: {warmup: 0, measured: 1}\n")
    wants = preflight.needs(plan.build_plan(sc))
    got = {n.program: (n.fds, n.procs) for n in wants}
    slack = preflight.FD_SLACK
    # client: threads of 250 connections, process 2 runs two of them
    assert got == {"sb-client": (500 + slack, 3), "sb-echo-naive": (275 + slack, 4), "sb-echo-sockmap": (275 + slack, 4),
                   "sb-echo-splice": (3 * 550 + slack, 2), "sb-echo-uring": (3 * 1000 + slack, 1)}
    lim = preflight.Limits(nofile_hard=1000, port_range=(32768, 60999), somaxconn=4096)
    errors, _ = preflight.problems(wants, {"local": lim})
    assert errors == [
        "host local: sb-echo-splice needs 1,682 open files in each of 2 processes for 1,000 connections, its "
        "RLIMIT_NOFILE hard limit is 1,000: raise it (nofile in /etc/security/limits.conf, or ulimit -Hn as root) "
        "or lower conns, or spread it over more processes (workers with processes: true)",
        "host local: sb-echo-uring needs 3,032 open files for 1,000 connections, its RLIMIT_NOFILE hard limit is "
        "1,000: raise it (nofile in /etc/security/limits.conf, or ulimit -Hn as root) or lower conns",
    ]


@pytest.mark.unit
def test_problems_name_host_limit_need_and_what_to_change(tmp_path):
    sc = _load(tmp_path, "servers: [splice]\nworkload: {type: pingpong, conns: 600}\n"
                         "repetitions: {warmup: 0, measured: 1}\n")
    errors, warnings = preflight.problems(preflight.needs(plan.build_plan(sc)), {"local": SMALL})
    assert errors == [
        "host local: sb-client opens 600 connections to one address, the ephemeral port range 40000-40499 has "
        "500 ports: widen net.ipv4.ip_local_port_range or lower conns (or spread sb-client over more source_addrs)",
        "host local: sb-echo-splice needs 1,832 open files for 600 connections, its RLIMIT_NOFILE hard limit is "
        "1,000: raise it (nofile in /etc/security/limits.conf, or ulimit -Hn as root) or lower conns, or spread it "
        "over more processes (workers with processes: true)",
    ]
    assert warnings == ["host local: 600 connections arrive at sb-echo-splice at once, its accept queue holds 128 "
                        "(net.core.somaxconn 128): connection set-up may wait for SYN retries; raise "
                        "net.core.somaxconn to avoid it"]
    roomy = preflight.Limits(nofile_hard=None, port_range=(1024, 65535), somaxconn=4096)
    assert preflight.problems(preflight.needs(plan.build_plan(sc)), {"local": roomy}) == ([], [])


@pytest.mark.unit
def test_nginx_is_held_to_the_soft_limit_it_keeps(tmp_path):
    sc = _load(tmp_path, "servers: [proxy-naive, nginx]\nbackend: {name: naive}\n"
                         "workload: {type: pingpong, conns: 600}\nrepetitions: {warmup: 0, measured: 1}\n")
    lim = preflight.Limits(nofile_hard=100_000, port_range=(1024, 65535), somaxconn=4096, nofile_soft=1024)
    errors, _ = preflight.problems(preflight.needs(plan.build_plan(sc)), {"local": lim})
    assert errors == ["host local: nginx needs 1,232 open files for 600 connections, its RLIMIT_NOFILE soft limit "
                      "is 1,024: raise it (nofile in /etc/security/limits.conf, or ulimit -n as root) or lower conns"]


def _preflight_lines(conns: int, lim: preflight.Limits) -> list[str]:
    """The lines preflight prints for `servers: [naive]` with `conns` on this host, in its order (per program:
    open files, then ports). sb-client and sb-echo-naive each hold one descriptor per connection."""
    need = conns + preflight.FD_SLACK
    over = lim.nofile_hard is not None and need > lim.nofile_hard
    nofile = [f"host local: {prog} needs {need:,} open files for {conns:,} connections, its RLIMIT_NOFILE hard "
              f"limit is {lim.nofile_hard:,}: raise it (nofile in /etc/security/limits.conf, or ulimit -Hn as "
              f"root) or lower conns, or spread it over more processes ({preflight.SPLITS[prog]})"
              for prog in (CLIENT_PROGRAM, "sb-echo-naive")] if over else ["", ""]
    ports = (f"host local: sb-client opens {conns:,} connections to one address, the ephemeral port range "
             f"{lim.port_range[0]}-{lim.port_range[1]} has {lim.ports:,} ports: widen "
             f"net.ipv4.ip_local_port_range or lower conns (or spread sb-client over more source_addrs)") \
        if conns > lim.ports else ""
    return [ln for ln in (nofile[0], ports, nofile[1]) if ln]


def _nofile_case(lim: preflight.Limits) -> tuple[str, list[str]]:
    """conns one beyond this host's real open-file hard limit (RLIMIT_NOFILE), and the lines expected."""
    if lim.nofile_hard is None or lim.nofile_hard - preflight.FD_SLACK + 1 > 1_000_000:
        pytest.fail(f"RLIMIT_NOFILE hard limit {lim.nofile_hard} is beyond what one client can open: "
                    f"lower it (ulimit -Hn) to run this case")
    conns = lim.nofile_hard - preflight.FD_SLACK + 1
    return str(conns), _preflight_lines(conns, lim)


# Scenarios beyond a program's or this host's limits: (id, scenario text with {conns}, expected error).
# Validation errors are one line ("FILE: FIELD: ..."); preflight lists every problem under one heading.
BEFORE_ANY_SAMPLE = [
    ("validation conns", "servers: [naive]\nworkload: {type: stream, conns: 100000000}\n",
     lambda lim, p: ("", [f"{p}: workload.conns: too large for the program; found 100000000, "
                          "allowed: an integer from 1 to 1000000"])),
    ("validation pipe_size", "servers: [{name: splice, options: {pipe_size: 1TiB}}]\nworkload: {type: stream}\n",
     lambda lim, p: ("", [f"{p}: servers[0].options.pipe_size: too large for the program; found '1TiB', "
                          "allowed: a size from 4KiB to 1GiB (1073741824 bytes)"])),
    ("validation max_conns", "servers: [naive, {name: sockmap, options: {max_conns: 1000}}]\n"
                             "workload: {type: pingpong, conns: 1001}\n",
     lambda lim, p: ("", [f"{p}: servers[1].options.max_conns: the map holds fewer connections than the "
                          "scenario opens (1001 conns x 1 client(s) = 1001); found 1000, allowed: max_conns >= "
                          "1001 (at most 16777216)"])),
    ("preflight open files", "servers: [naive]\nworkload: {type: pingpong, conns: {conns}}\n",
     lambda lim, p: _nofile_case(lim)),
    ("preflight ports", "servers: [naive]\nworkload: {type: pingpong, conns: {conns}}\n",
     lambda lim, p: ("999999", _preflight_lines(999_999, lim))),  # beyond any default port range
]


@pytest.mark.e2e
@pytest.mark.parametrize("text, expect", [c[1:] for c in BEFORE_ANY_SAMPLE], ids=[c[0] for c in BEFORE_ANY_SAMPLE])
def test_a_scenario_beyond_the_limits_fails_before_any_sample_runs(tmp_path, no_leftovers, monkeypatch, text, expect):
    lim = preflight.read_limits(LocalHost())  # this host's real limits, not NOTES.md's
    preloads: list[str] = []
    monkeypatch.setattr(commands, "preload", lambda module: preloads.append(module) or preload(module))
    p = tmp_path / "big.yaml"
    conns, lines = expect(lim, p)
    p.write_text(text.replace("{conns}", conns))
    paths = commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports"))
    logged: list[str] = []
    with pytest.raises((ScenarioError, PreflightError)) as e:
        commands.run(paths, str(p), log=logged.append, provision_deps=False)
    got = str(e.value).splitlines()
    if isinstance(e.value, PreflightError):  # every problem at once, under one heading
        assert got == ["the scenario does not fit these hosts' limits (nothing was run):"] + lines
    else:
        assert got == lines
    # Nothing was built, started or recorded: no results directory, so no raw files either.
    assert not (tmp_path / "results").exists() and not any("built" in m for m in logged)
    # Nor was the report's import started, which the exit would have to wait for (its thread is not a daemon).
    assert preloads == []


def _loosen_client_chunk(monkeypatch) -> None:
    monkeypatch.setitem(registry.WORKLOAD_FIELDS, "chunk", replace(WORKLOAD_FIELDS["chunk"], maximum=1 << 30))


def _loosen_proxy_buf(monkeypatch) -> None:
    kind = SERVERS["proxy-naive"]
    buf = replace(kind.options["buf"], maximum=1 << 40)
    monkeypatch.setitem(registry.SERVERS, "proxy-naive", replace(kind, options={**kind.options, "buf": buf}))


# A program refusing its command line, let through validation by loosening one registry bound in this
# process: (id, loosen, scenario, the program's message, statuses of the planned samples in order).
USAGE_ERRORS = [
    ("client", _loosen_client_chunk,
     "servers: [naive, splice]\nworkload: {type: stream, bytes: 1MiB, chunk: 65MiB}\n"
     "repetitions: {warmup: 1, measured: 2}\n",
     "sb-client: --chunk: 68157440 is larger than the maximum 67108864", ["failed"] + ["skipped"] * 5),
    # The direct row (client -> backend) runs first and passes; the proxy then refuses its --buf.
    ("proxy", _loosen_proxy_buf,
     "servers: [{name: proxy-naive, options: {buf: 2GiB}}]\nbackend: {name: naive}\n"
     "workload: {type: stream, bytes: 1MiB}\nrepetitions: {warmup: 0, measured: 2}\n",
     "sb-proxy-naive: --buf: 2147483648 is larger than the maximum 1073741824", ["ok", "failed", "skipped", "skipped"]),
]


@pytest.mark.e2e
@pytest.mark.parametrize("loosen, text, message, statuses", [c[1:] for c in USAGE_ERRORS],
                         ids=[c[0] for c in USAGE_ERRORS])
def test_a_programs_usage_error_stops_the_run_with_its_message(tmp_path, use_cache, no_leftovers, monkeypatch,
                                                               loosen, text, message, statuses):
    loosen(monkeypatch)
    p = tmp_path / "usage.yaml"
    p.write_text(text)
    paths = commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports"))
    with pytest.raises(ProgramUsageError) as e:
        commands.run(paths, str(p), log=lambda m: None, progress_stream=io.StringIO())
    run_dir = next((tmp_path / "results").iterdir())
    assert str(e.value) == (f"{message} (a program refused its command line: the run stopped at once; "
                            f"its samples are in {run_dir})")
    assert e.value.exit_code == 2
    rows = rundir.load_samples(run_dir).to_dict("records")
    assert [r["status"] for r in rows] == statuses  # every planned sample has a row
    failed = next(r for r in rows if r["status"] == "failed")
    assert message in failed["error"]
    manifest = rundir.load_manifest(run_dir)
    assert manifest["status"] == "stopped" and manifest["reason"] == f"usage error: {message}"


@pytest.mark.e2e
def test_check_shows_this_hosts_limits(tmp_path):
    lim = preflight.read_limits(LocalHost())
    paths = commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports"))
    rows = {what: (status, detail) for status, what, detail in commands.check(paths, LocalHost())}
    hard = "unlimited" if lim.nofile_hard is None else f"{lim.nofile_hard:,}"
    assert rows["open files (hard limit)"][1].startswith(f"{hard} per process")
    assert rows["ephemeral ports"] == ("ok", f"{lim.port_range[0]}-{lim.port_range[1]}: {lim.ports:,} connections "
                                             f"from one address to one destination")
    assert rows["accept queue"][1].endswith(f"(net.core.somaxconn {lim.somaxconn:,})")


@pytest.mark.unit
def test_source_addresses_divide_the_clients_ports_and_cpus_are_checked(tmp_path):
    sc = _load(tmp_path, "servers: [naive]\nworkload: {type: pingpong, conns: 600, source_addrs: 2}\n"
                         "repetitions: {warmup: 0, measured: 1}\ncpus: {server: 1, client: '0-2'}\n")
    wants = preflight.needs(plan.build_plan(sc))
    assert {n.program: (n.ports_to_one_peer, n.cpus) for n in wants} == {
        "sb-client": (300, ("client", "0,1,2")), "sb-echo-naive": (0, ("server", "1"))}
    lim = preflight.Limits(nofile_hard=None, port_range=(40000, 40499), somaxconn=4096, ncpus=2)
    errors, _ = preflight.problems(wants, {"local": lim})
    assert errors == ["host local: sb-client is placed on CPU 2 (cpus.client: 0,1,2), the host has 2 CPU(s) (0-1): "
                      "change cpus.client"]


@pytest.mark.e2e
def test_preflight_takes_the_accept_queue_the_scenario_sets(tmp_path):
    """A scenario's own net.core.somaxconn is what the listeners get: preflight judges the accept queue by
    it (only its warning depends on it), whatever the host holds now."""
    logged: dict[int, list[str]] = {}
    for somaxconn in (1024, 65535):
        sc = _load(tmp_path, "servers: [{name: naive, options: {workers: 4, processes: true}}]\n"
                             "workload: {type: pingpong, conns: 8000, threads: 2, procs: 2, source_addrs: 2}\n"
                             f"sysctls: {{net.core.somaxconn: {somaxconn}}}\nrepetitions: {{warmup: 0, measured: 1}}\n")
        logged[somaxconn] = []
        found = preflight.check(plan.build_plan(sc), {"local": LocalHost()}, log=logged[somaxconn].append)
        assert found["local"] == preflight.read_limits(LocalHost())  # what the host holds, as read
    assert logged[1024] == ["warning: host local: 2,200 connections arrive at sb-echo-naive at once, its accept "
                            "queue holds 1,024 (net.core.somaxconn 1,024): connection set-up may wait for SYN "
                            "retries; raise net.core.somaxconn to avoid it"]
    assert logged[65535] == []
