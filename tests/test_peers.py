"""Peer proxies (NGINX, HAProxy): config values validated, hostile ones refused, configs accepted by
the real programs, and the real programs run, proxy byte exact and stop cleanly.

Unit tests cover the pure parts (validation, rendering, parsers of captured output); the e2e tests
run the Debian nginx and haproxy binaries in front of a real sb-echo-naive, driven by sb-client.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import socket
from pathlib import Path

import pandas as pd
import pytest

from progs import descendants, run_client, running_server
from splicebench.cli import commands
from splicebench.programs import peers
from splicebench.results import rundir as results
from splicebench.errors import ProcError
from splicebench.hosts.local import LocalHost
from splicebench.programs.peers import PeerError, peer_config, render

MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def good(**over):
    args = dict(listen_host="127.0.0.1", listen_port=20001, upstream_host="127.0.0.1",
                upstream_port=7, workdir="/tmp/splicebench-peer.abc123", stream_module=MODULE)
    args.update(over)
    return args


# ---------------------------------------------------------------------------------------------
# validation: bad and hostile values, each with its exact message

BAD = [
    ({"listen_host": "localhost"}, "listen address: expected a numeric IP address, got 'localhost'"),
    ({"listen_host": "127.0.0.1; include /etc/passwd"},
     "listen address: expected a numeric IP address, got '127.0.0.1; include /etc/passwd'"),
    ({"listen_host": 2130706433}, "listen address: expected a numeric IP address, got 2130706433"),
    ({"upstream_host": "10.0.0.1:80"}, "upstream address: expected a numeric IP address, got '10.0.0.1:80'"),
    ({"upstream_host": "fe80::1%eth0"}, "upstream address: scoped IPv6 addresses are not supported, "
                                        "got 'fe80::1%eth0'"),
    ({"upstream_host": "1.2.3.4\n}\nserver {"},
     "upstream address: expected a numeric IP address, got '1.2.3.4\\n}\\nserver {'"),
    ({"listen_port": "80"}, "listen port: expected an integer from 1 to 65535, got '80'"),
    ({"listen_port": 0}, "listen port: expected an integer from 1 to 65535, got 0"),
    ({"upstream_port": 65536}, "upstream port: expected an integer from 1 to 65535, got 65536"),
    ({"upstream_port": True}, "upstream port: expected an integer from 1 to 65535, got True"),
    ({"upstream_port": "7; proxy_pass evil"},
     "upstream port: expected an integer from 1 to 65535, got '7; proxy_pass evil'"),
    ({"workdir": "tmp/x"}, "work directory: expected an absolute path of letters, digits and . _ + - /, "
                           "got 'tmp/x'"),
    ({"workdir": "/tmp/x;rm -rf /"}, "work directory: expected an absolute path of letters, digits and "
                                     ". _ + - /, got '/tmp/x;rm -rf /'"),
    ({"workdir": "/tmp/../etc"}, "work directory: expected an absolute path of letters, digits and "
                                 ". _ + - /, got '/tmp/../etc'"),
    ({"workdir": "/tmp/a b"}, "work directory: expected an absolute path of letters, digits and "
                              ". _ + - /, got '/tmp/a b'"),
    ({"stream_module": "/x.so;\nuser root"}, "stream module: expected an absolute path of letters, "
                                             "digits and . _ + - /, got '/x.so;\\nuser root'"),
    ({"options": {"workers": "2"}}, "workers: expected an integer from 1 to 64, got '2'"),
    ({"options": {"workers": 0}}, "workers: expected an integer from 1 to 64, got 0"),
    ({"options": {"buffer": 10}}, "buffer: expected an integer from 1024 to 67108864, got 10"),
    ({"options": {"sndbuf": -1}}, "sndbuf: expected an integer from 0 to 1073741824, got -1"),
    ({"options": {"rcvbuf": 1.5}}, "rcvbuf: expected an integer from 0 to 1073741824, got 1.5"),
    ({"options": {"user": "root"}}, "nginx: unknown option 'user'; known: workers, buffer, sndbuf, rcvbuf"),
]


@pytest.mark.unit
@pytest.mark.parametrize("over,message", BAD)
def test_bad_and_hostile_values_are_rejected(over, message) -> None:
    with pytest.raises(PeerError) as e:
        peer_config("nginx", **good(**over))
    assert str(e.value) == message


@pytest.mark.unit
def test_unknown_peer_is_rejected() -> None:
    with pytest.raises(PeerError, match="unknown peer 'apache'; known: nginx, haproxy, "):
        peer_config("apache", **good())


PRINTED = [  # (variant, field the template prints, hostile value)
    ("nginx", "upstream", "1.2.3.4:80;\n    server evil:1"),
    ("nginx", "listen", "127.0.0.1:1 ssl"),
    ("nginx", "workdir", "/tmp/x}\nhttp {"),
    ("nginx", "stream_module", "/x.so;\nuser root"),
    ("haproxy-splice", "upstream", "1.2.3.4:80 check\nlisten evil"),
    ("haproxy-splice", "listen", "127.0.0.1:1\n    use_backend evil"),
    ("haproxy-splice", "workdir", "/tmp/x\n    lua-load /tmp/evil.lua"),
]


@pytest.mark.unit
@pytest.mark.parametrize("variant,field,value", PRINTED)
def test_render_refuses_a_hostile_value_that_bypassed_validation(variant: str, field: str,
                                                                 value: str) -> None:
    """Defence in depth: the template environment itself refuses unsafe words."""
    cfg = dataclasses.replace(peer_config(variant, **good()), **{field: value})
    with pytest.raises(PeerError) as e:
        render(cfg)
    assert str(e.value) == (f"refusing to write {value!r} into a peer config: only letters, digits "
                            f"and . _ / : [ ] + - are allowed there")


@pytest.mark.unit
def test_render_refuses_anything_but_a_validated_config() -> None:
    with pytest.raises(PeerError, match="takes a PeerConfig"):
        render({"variant": "nginx"})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# rendering


@pytest.mark.unit
def test_nginx_config_runs_in_the_foreground_with_its_files_in_the_work_directory() -> None:
    text = render(peer_config("nginx", **good(upstream_host="::1", options={"sndbuf": 65536})))
    lines = [ln.strip() for ln in text.splitlines()]
    assert f"load_module {MODULE};" in lines
    assert "daemon off;" in lines and "worker_processes 1;" in lines and "master_process off;" in lines
    assert "pid /tmp/splicebench-peer.abc123/nginx.pid;" in lines
    assert "lock_file /tmp/splicebench-peer.abc123/nginx.lock;" in lines
    assert "error_log stderr warn;" in lines
    assert "proxy_half_close on;" in lines and "tcp_nodelay on;" in lines
    assert "server [::1]:7;" in lines
    assert "listen 127.0.0.1:20001 backlog=4096 sndbuf=65536;" in lines
    assert "http" not in text  # the stream module only: no HTTP temp paths outside the work dir


@pytest.mark.unit
def test_nginx_with_a_built_in_stream_module_loads_nothing() -> None:
    text = render(peer_config("nginx", **good(stream_module="")))
    assert "load_module" not in text


@pytest.mark.unit
@pytest.mark.parametrize("variant,present,absent", [
    ("haproxy", ["nosplice"], ["option splice"]),
    ("haproxy-splice-auto", ["option splice-auto"], ["nosplice", "splice-request"]),
    ("haproxy-splice", ["option splice-request", "option splice-response"], ["nosplice", "splice-auto"]),
])
def test_haproxy_variants(variant: str, present: list[str], absent: list[str]) -> None:
    text = render(peer_config(variant, **good(listen_host="::1")))
    lines = [ln.strip() for ln in text.splitlines()]
    assert "mode tcp" in lines and "nbthread 1" in lines
    assert "bind [::1]:20001" in lines and "server backend 127.0.0.1:7" in lines
    assert "pidfile /tmp/splicebench-peer.abc123/haproxy.pid" in lines
    for p in present:
        assert p in lines
    for a in absent:
        assert not any(a in ln for ln in lines), a


# ---------------------------------------------------------------------------------------------
# parsers, on output captured from the Debian 12 programs

NGINX_V = ("nginx version: nginx/1.22.1\nbuilt with OpenSSL 3.0.22 25 Aug 2026\nTLS SNI support enabled\n"
           "configure arguments: --with-cc-opt='-g -O2 -fPIC' --prefix=/usr/share/nginx "
           "--conf-path=/etc/nginx/nginx.conf --modules-path=/usr/lib/nginx/modules --with-compat "
           "--with-stream_ssl_module --with-stream=dynamic --with-stream_geoip_module=dynamic\n")
HAPROXY_V = ("HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/\n"
             "Status: long-term supported branch - will stop receiving fixes around Q2 2027.\n")


@pytest.mark.unit
def test_parsers_of_captured_output() -> None:
    assert peers.parse_version("nginx", "nginx version: nginx/1.22.1\n") == "1.22.1"
    assert peers.parse_version("haproxy", HAPROXY_V) == "2.6.12-1+deb12u4"
    assert peers.parse_version("haproxy", "command not found") is None
    assert peers.parse_stream_module(NGINX_V) == MODULE
    assert peers.parse_stream_module(NGINX_V.replace("--with-stream=dynamic", "--with-stream")) == ""
    assert peers.parse_stream_module(NGINX_V.replace("--with-stream=dynamic", "")) is None
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:8417 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 62\n"
        "   1: 0100007F:9C40 0100007F:8417 01 00000000:00000000 00:00000000 00000000     0        0 63\n"
    )
    tcp6 = ("  sl  local_address                         remote_address                        st\n"
            "   0: 00000000000000000000000001000000:4E21 00000000000000000000000000000000:0000 0A\n")
    tcp6 = tcp6.replace(" 0A\n", " 0A 00000000:00000000 00:00000000 00000000     0        0 64\n")
    assert peers.parse_listening_ports(tcp, tcp6) == ({0x8417: {62}, 0x4E21: {64}},
                                                      {0x8417, 0x9C40, 0x4E21})


@pytest.mark.unit
def test_every_peer_has_packages_and_a_template() -> None:
    for v in peers.VARIANTS.values():
        assert v.program in peers.PACKAGES
        assert (Path(peers.__file__).parent / "templates" / "peers" / v.template).is_file()
    assert peers.programs_of(["naive", "haproxy-splice", "nginx"]) == {"haproxy", "nginx"}
    assert [p.name for p in peers.packages_for(["nginx"])] == ["nginx", "libnginx-mod-stream"]


# ---------------------------------------------------------------------------------------------
# the real programs


@pytest.fixture
def no_peer_leftovers():
    """No process and no peer work directory of this test survives it."""
    before = set(Path("/tmp").glob("splicebench-peer.*"))
    yield
    assert descendants() == [], descendants()
    left = set(Path("/tmp").glob("splicebench-peer.*")) - before
    assert left == set(), left


@pytest.mark.e2e
@pytest.mark.parametrize("variant", sorted(peers.VARIANTS))
def test_generated_config_is_accepted_by_the_program(variant: str, tmp_path: Path) -> None:
    host = LocalHost()
    module = peers.stream_module(host) if variant == "nginx" else ""
    cfg = peer_config(variant, **good(workdir=str(tmp_path), stream_module=module))
    path = tmp_path / peers.config_name(variant)
    path.write_text(render(cfg))
    peers.check_config(host, variant, str(path), str(tmp_path))  # nginx -t / haproxy -c


@pytest.mark.e2e
def test_a_config_the_program_refuses_is_reported(tmp_path: Path) -> None:
    cfg = peer_config("nginx", **good(workdir=str(tmp_path), stream_module="/nonexistent/stream.so"))
    path = tmp_path / "nginx.conf"
    path.write_text(render(cfg))
    with pytest.raises(PeerError, match=r"(?s)nginx rejected the generated configuration .*stream\.so"):
        peers.check_config(LocalHost(), "nginx", str(path), str(tmp_path))


@pytest.mark.e2e
def test_versions_are_read_from_the_programs() -> None:
    v = peers.versions(LocalHost(), ["nginx", "haproxy", "no-such-proxy"])
    assert v["no-such-proxy"] is None
    assert v["nginx"] and v["nginx"][0].isdigit() and "." in v["nginx"]
    assert v["haproxy"] and v["haproxy"][0].isdigit()


@pytest.mark.e2e
def test_port_picking_avoids_ports_in_use() -> None:
    host = LocalHost()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert peers.is_listening(host, port)
        assert not peers.is_listening(host, port, pgid=os.getpgid(0) + 10**7)  # not that group's
        for _ in range(50):
            assert peers.pick_port(host) != port
    assert not peers.is_listening(host, port)


@pytest.mark.e2e
@pytest.mark.parametrize("variant", sorted(peers.VARIANTS))
def test_peer_proxies_byte_exact_and_stops_cleanly(variant: str, no_peer_leftovers) -> None:
    host = LocalHost()
    with running_server("naive") as backend:
        p = peers.start(variant, host, listen_host="127.0.0.1", upstream_host="127.0.0.1",
                        upstream_port=backend.port, deadman_s=300)
        try:
            ready = p.wait_json_event("ready", 1)
            assert ready["pid"] == p.pid and peers.is_listening(host, ready["port"])
            assert Path(p.workdir, peers.config_name(variant)).is_file()
            connect = f"127.0.0.1:{ready['port']}"
            for workload, opts, per_conn in (
                ("stream", {"conns": 2, "bytes": 20_000_003}, 20_000_003),
                ("pingpong", {"conns": 4, "msg_size": 1000, "round_trips": 50}, 50_000),
                ("burst", {"conns": 50, "burst_size": 100_000, "bursts": 2}, 200_000),
            ):
                res = run_client(connect, workload, timeout=60, **opts)
                r = res.result
                assert res.returncode == 0 and r["ok"], (workload, r["errors"], res.stderr)
                assert r["bytes_verified"] == opts["conns"] * per_conn
            user, sys_ = p.cpu_times()
            assert user + sys_ > 0  # 40 MB went through its process group
            p.signal(signal.SIGTERM)
            assert p.wait(10) == 0, p.stderr()
            summary = p.wait_json_event("summary", 1)
            assert summary["synthesized"] is True and summary["server"] == variant
            assert summary["cpu_user_s"] + summary["cpu_sys_s"] == pytest.approx(user + sys_, abs=0.05)
            lines = [json.loads(x) for x in p.stdout().splitlines() if x.startswith("{")]
            assert [x["event"] for x in lines] == ["ready", "summary"]
            assert not Path(p.workdir).exists()
        finally:
            p.kill()


@pytest.mark.unit
def test_nginx_with_several_workers_has_a_master() -> None:
    text = render(peer_config("nginx", **good(options={"workers": 2})))
    assert "master_process on;" in text and "worker_processes 2;" in text


@pytest.mark.e2e
def test_nginx_cpu_counts_its_workers_not_only_the_master(no_peer_leftovers) -> None:
    host = LocalHost()
    with running_server("naive") as backend:
        p = peers.start("nginx", host, listen_host="127.0.0.1", upstream_host="127.0.0.1",
                        upstream_port=backend.port, options={"workers": 2}, deadman_s=300)
        try:
            res = run_client(f"127.0.0.1:{p.ready['port']}", "stream", bytes=200_000_000, timeout=60)
            assert res.result["ok"]
            group = p.cpu_times()
            master = p.inner.cpu_times()  # /proc/PID/stat of the master alone
            assert sum(group) > sum(master) + 0.02, (group, master)
        finally:
            p.kill()


@pytest.mark.e2e
@pytest.mark.parametrize("variant", ["nginx", "haproxy"])
def test_a_peer_that_cannot_start_leaves_nothing_behind(variant: str, no_peer_leftovers) -> None:
    host = LocalHost()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(ProcError) as e:
            peers.start(variant, host, listen_host="127.0.0.1", upstream_host="127.0.0.1",
                        upstream_port=9, listen_port=taken, deadman_s=60)
        assert str(e.value).startswith(f"{variant} on host local exited with code 1; stderr: ")
        assert "Address already in use" in str(e.value)


# ---------------------------------------------------------------------------------------------
# a proxy scenario through the whole tool: plan, runner, results, report

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
@pytest.mark.privileged
def test_proxy_scenario_runs_end_to_end(tmp_path: Path, use_cache, no_leftovers, no_peer_leftovers) -> None:
    scenario = tmp_path / "proxy.yaml"
    scenario.write_text(
        "name: proxy-e2e\n"
        "servers: [proxy-naive, proxy-splice, proxy-sockmap, nginx, haproxy-splice]\n"
        "backend: {name: naive}\n"
        "workload: {type: stream, bytes: 4MiB, conns: 2}\n"
        "repetitions: {warmup: 0, measured: 2}\n"
        "timeout: 30s\n")
    paths = commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports"))
    res = commands.run(paths, str(scenario), log=lambda m: None, progress_stream=io.StringIO())
    assert res.status == "complete" and res.counts == {"ok": 12}, res.counts
    run = results.list_runs(tmp_path / "results")[0]
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["peers"]["local"]) == {"nginx", "haproxy"}
    assert all(manifest["peers"]["local"].values())
    assert [s["label"] for s in manifest["scenario"]["servers"]][0] == "direct"
    samples = pd.read_csv(run / "samples.csv")
    assert list(samples["server"].unique()) == ["direct", "proxy-naive", "proxy-splice", "proxy-sockmap",
                                                "nginx", "haproxy-splice"]
    assert (samples["bytes_verified"] == 2 * 4 * 2**20).all()
    assert (samples["server_host"] == "local").all()
    proxied = samples[samples["server"] != "direct"]
    for _, row in proxied.iterrows():  # the backend's own output is kept next to the proxy's
        assert f"raw/{row['sample_id']}.backend.jsonl" in row["raw_files"].split()
    own = samples[samples["server"].isin(["proxy-naive", "proxy-splice", "proxy-sockmap"])]
    assert (own["server_bytes_in"] == 2 * 4 * 2**20).all() and (own["server_bytes_out"] == 2 * 4 * 2**20).all()
    html = res.report.read_text()
    assert 'id="proxies"' in html and "vs proxy-naive" in html and "vs nginx" in html and "vs haproxy-splice" in html
