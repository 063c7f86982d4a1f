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
from pathlib import Path

import pytest

from splicebench import registry, scenario
from splicebench.cli import commands
from splicebench.errors import PreflightError, ProgramUsageError, ScenarioError
from splicebench.hosts.local import LocalHost
from splicebench.results import rundir
from splicebench.run import preflight
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
                   "sockmap_common.c": ["sb-echo-sockmap", "sb-proxy-sockmap"]}
    missing = []
    for name, flag in sorted(found):
        progs = programs_of.get(name, ["sb-" + name.removesuffix(".c").replace("_", "-")])
        missing += [f"{p} {flag} ({name})" for p in progs if (p, flag) not in known]
    assert found and missing == [], f"bounded in C but unknown to validation: {missing}"


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
def test_problems_name_host_limit_need_and_what_to_change(tmp_path):
    sc = _load(tmp_path, "servers: [splice]\nworkload: {type: pingpong, conns: 600}\n"
                         "repetitions: {warmup: 0, measured: 1}\n")
    errors, warnings = preflight.problems(preflight.needs(plan.build_plan(sc)), {"local": SMALL})
    assert errors == [
        "host local: sb-client opens 600 connections to one address, the ephemeral port range 40000-40499 has "
        "500 ports: widen net.ipv4.ip_local_port_range or lower conns",
        "host local: sb-echo-splice needs 1,832 open files for 600 connections, its RLIMIT_NOFILE hard limit is "
        "1,000: raise it (nofile in /etc/security/limits.conf, or ulimit -Hn as root) or lower conns",
    ]
    assert warnings == ["host local: 600 connections arrive at sb-echo-splice at once, its accept queue holds 128 "
                        "(net.core.somaxconn 128): connection set-up may wait for SYN retries; raise "
                        "net.core.somaxconn to avoid it"]
    roomy = preflight.Limits(nofile_hard=None, port_range=(1024, 65535), somaxconn=4096)
    assert preflight.problems(preflight.needs(plan.build_plan(sc)), {"local": roomy}) == ([], [])


@pytest.mark.e2e
def test_a_scenario_beyond_this_hosts_limits_fails_before_anything_runs(tmp_path):
    lim = preflight.read_limits(LocalHost())
    conns = 999_999  # within sb-client's bound, beyond any default port range
    p = tmp_path / "big.yaml"
    p.write_text(f"servers: [naive]\nworkload: {{type: pingpong, conns: {conns}}}\n")
    paths = commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports"))
    logged: list[str] = []
    with pytest.raises(PreflightError) as e:
        commands.run(paths, str(p), log=logged.append, provision_deps=False)
    lines = str(e.value).splitlines()
    assert lines[0] == "the scenario does not fit these hosts' limits (nothing was run):"
    assert (f"host local: sb-client opens {conns:,} connections to one address, the ephemeral port range "
            f"{lim.port_range[0]}-{lim.port_range[1]} has {lim.ports:,} ports: widen net.ipv4.ip_local_port_range "
            f"or lower conns") in lines
    if lim.nofile_hard is not None and lim.nofile_hard < conns + preflight.FD_SLACK:
        assert any(ln.startswith(f"host local: sb-client needs {conns + preflight.FD_SLACK:,} open files")
                   for ln in lines)
    assert not (tmp_path / "results").exists() and not any("built" in m for m in logged)


@pytest.mark.e2e
def test_a_programs_usage_error_stops_the_run_with_its_message(tmp_path, use_cache, no_leftovers, monkeypatch):
    # Validation would refuse this chunk; let it through once to see what the runner does when the
    # client itself refuses its command line.
    from dataclasses import replace

    monkeypatch.setitem(registry.WORKLOAD_FIELDS, "chunk", replace(WORKLOAD_FIELDS["chunk"], maximum=1 << 30))
    p = tmp_path / "usage.yaml"
    p.write_text("servers: [naive, splice]\nworkload: {type: stream, bytes: 1MiB, chunk: 65MiB}\n"
                 "repetitions: {warmup: 1, measured: 2}\n")
    paths = commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports"))
    with pytest.raises(ProgramUsageError) as e:
        commands.run(paths, str(p), log=lambda m: None, progress_stream=io.StringIO())
    msg = str(e.value)
    assert msg.startswith("sb-client: --chunk: 68157440 is larger than the maximum 67108864 "
                          "(a program refused its command line: the run stopped at once")
    assert e.value.exit_code == 2 and "\n" not in msg
    run_dir = next((tmp_path / "results").iterdir())
    rows = rundir.load_samples(run_dir).to_dict("records")
    assert [r["status"] for r in rows] == ["failed"] + ["skipped"] * 5  # every planned sample has a row
    manifest = rundir.load_manifest(run_dir)
    assert manifest["status"] == "stopped" and manifest["reason"].startswith("usage error: sb-client: ")
