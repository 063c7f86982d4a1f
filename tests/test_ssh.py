"""SSH hosts against real sshd in lab namespaces: host keys, quoting, background programs, cleanup."""

from __future__ import annotations

import dataclasses
import secrets
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from splicebench.lab import netns as lab
from splicebench.errors import CommandFailed, HostError, ProcError
from splicebench.hosts.inventory import load_inventory, parse_inventory
from splicebench.hosts.host_keys import ChangedHostKey, UnknownHostKey
from splicebench.hosts.connection import HostUnreachable
from splicebench.hosts.ssh import SSHHost
from splicebench.hosts.trust import trust_host

pytestmark = [pytest.mark.privileged]


def _cfg() -> lab.LabConfig:
    # State in /tmp/<prefix> (removed by lab.down), not in pytest's tmp_path.
    return lab.LabConfig(prefix="sbt" + secrets.token_hex(2), subnet=lab.free_subnet())


@pytest.fixture(scope="module")
def labenv():
    cfg = _cfg()
    lb = lab.up(3, cfg)
    yield lb
    lab.down(cfg)


@pytest.fixture
def inv(labenv):
    return load_inventory(labenv.inventory)


@pytest.fixture
def hosts(inv):
    opened: dict[str, SSHHost] = {}

    def get(name: str) -> SSHHost:
        if name not in opened:
            opened[name] = SSHHost(inv.get(name), inv)
        return opened[name]
    yield get
    for h in opened.values():
        h.close()


def keygen_fingerprint(labenv, i: int) -> str:
    pub = labenv.config.state / "hosts" / str(i) / "ssh_host_ed25519_key.pub"
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


# --- host keys ---------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_and_nothing_is_written(inv, labenv, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(labenv.known_hosts.read_text().splitlines()[0] + "\n")  # lab1 only
    before = kh.read_bytes()
    spec = dataclasses.replace(inv.get("lab2"), known_hosts=(str(kh),))
    with pytest.raises(UnknownHostKey) as e:
        SSHHost(spec, inv).run(["true"])
    msg = str(e.value)
    assert "host lab2 (root@" in msg and labenv.hosts[1].address in msg
    assert keygen_fingerprint(labenv, 2) in msg
    assert "invoke hosts.trust lab2" in msg
    assert kh.read_bytes() == before


def test_missing_known_hosts_file_refuses_every_host(inv, tmp_path):
    spec = dataclasses.replace(inv.get("lab1"), known_hosts=(str(tmp_path / "absent"),))
    with pytest.raises(UnknownHostKey, match="not in .*absent"):
        SSHHost(spec, inv).run(["true"])
    assert not (tmp_path / "absent").exists()


def test_changed_host_key_is_refused(inv, labenv, tmp_path):
    # known_hosts claims lab1's key for lab2's address: lab2 now "offers a different key".
    lines = labenv.known_hosts.read_text().splitlines()
    key1 = lines[0].split(maxsplit=1)[1]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{labenv.hosts[1].address} {key1}\n")
    spec = dataclasses.replace(inv.get("lab2"), known_hosts=(str(kh),))
    with pytest.raises(ChangedHostKey) as e:
        SSHHost(spec, inv).run(["true"])
    msg = str(e.value)
    assert msg.startswith("HOST KEY CHANGED for host lab2")
    assert keygen_fingerprint(labenv, 1) in msg and keygen_fingerprint(labenv, 2) in msg
    assert f"ssh-keygen -R {labenv.hosts[1].address}" in msg


def test_trust_shows_the_fingerprint_before_writing(inv, labenv, tmp_path):
    kh = tmp_path / "kh"
    spec = dataclasses.replace(inv.get("lab3"), known_hosts=(str(kh),))
    inv2 = dataclasses.replace(inv, known_hosts_file=kh)
    shown: list[str] = []

    def decline(message: str) -> bool:
        shown.append(message)
        return False
    assert trust_host(spec, inv2, decline) == "declined"
    assert not kh.exists()
    assert keygen_fingerprint(labenv, 3) in shown[0]

    def accept(message: str) -> bool:
        assert not kh.exists()  # shown before anything is written
        return True
    assert trust_host(spec, inv2, accept) == "added"
    assert kh.read_text().startswith(f"{labenv.hosts[2].address} ssh-ed25519 ")
    h = SSHHost(spec, inv2)
    assert h.run(["echo", "ok"]).stdout == "ok\n"
    h.close()
    assert trust_host(spec, inv2, accept) == "already"
    # a known host whose key differs is not overwritten
    kh.write_text(f"{labenv.hosts[2].address} " + labenv.known_hosts.read_text().split()[1] + " "
                  + labenv.known_hosts.read_text().split()[2] + "\n")
    with pytest.raises(ChangedHostKey):
        trust_host(spec, inv2, accept)


def test_proxyjump_from_ssh_config_verifies_every_hop(labenv, tmp_path):
    st = labenv.config.state
    a1, a2 = labenv.hosts[0].address, labenv.hosts[1].address
    cfgfile = tmp_path / "ssh_config"
    cfgfile.write_text(textwrap.dedent(f"""\
        Host inner
            HostName {a2}
            User root
            IdentityFile {st}/id_ed25519
            ProxyJump root@{a1}
        Host {a1}
            IdentityFile {st}/id_ed25519
    """))
    text = f"version: 1\nknown_hosts: {st}/known_hosts\nssh_config: {cfgfile}\nhosts:\n  inner: {{}}\n"
    inv = parse_inventory(text, source=tmp_path / "inv.yaml")
    h = SSHHost(inv.get("inner"), inv)
    # The command runs on lab2; its SSH client is lab1 (the hop).
    out = h.run(["sh", "-c", 'echo "$SSH_CLIENT"']).stdout
    assert out.split()[0] == a1
    h.close()
    # Without the hop's key in known_hosts, the hop is refused by name.
    kh = tmp_path / "kh"
    kh.write_text("".join(ln + "\n" for ln in (st / "known_hosts").read_text().splitlines()
                          if not ln.startswith(a1 + " ")))
    inv = parse_inventory(text.replace(f"{st}/known_hosts", str(kh)), source=tmp_path / "i.yaml")
    with pytest.raises(UnknownHostKey, match=f"ProxyJump hop 1: {a1}"):
        SSHHost(inv.get("inner"), inv).run(["true"])


def test_jump_host_from_inventory(labenv, tmp_path):
    st = labenv.config.state
    text = (f"version: 1\nknown_hosts: {st}/known_hosts\nssh_config: null\n"
            f"defaults: {{user: root, key: {st}/id_ed25519}}\nhosts:\n"
            f"  gw: {{host: {labenv.hosts[0].address}}}\n"
            f"  inner: {{host: {labenv.hosts[2].address}, jump: gw}}\n")
    inv = parse_inventory(text, source=tmp_path / "inv.yaml")
    h = SSHHost(inv.get("inner"), inv)
    assert h.run(["sh", "-c", 'echo "$SSH_CLIENT"']).stdout.split()[0] == labenv.hosts[0].address
    h.close()


# --- commands and files ------------------------------------------------------------------------

HOSTILE = ["$(touch /tmp/pwned)", "`touch /tmp/pwned`", "a; touch /tmp/pwned", "'", '"', "\\",
           "a\nb", "*", "~", "$HOME", "", "-n", "é ✓"]


def test_hostile_arguments_arrive_verbatim(hosts):
    h = hosts("lab1")
    r = h.run(["printf", "[%s]", *HOSTILE])
    assert r.stdout == "".join(f"[{w}]" for w in HOSTILE)
    assert not h.exists("/tmp/pwned")


def test_hostile_cwd_is_quoted(hosts):
    h = hosts("lab1")
    d = "/tmp/sb dir;$(touch /tmp/pwned)"
    h.makedirs(d)
    assert h.run(["pwd"], cwd=d).stdout == d + "\n"
    assert not h.exists("/tmp/pwned")


def test_run_result_and_failure(hosts):
    h = hosts("lab1")
    r = h.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandFailed, match="exited with code 3"):
        h.run(["sh", "-c", "exit 3"])


def test_command_timeout(hosts, labenv):
    h = hosts("lab1")
    with pytest.raises(CommandFailed, match="timed out"):
        h.run(["sleep", "31"], timeout=0.3)
    assert h.run(["sleep", "31"], timeout=0.3, check=False).returncode == 124
    assert h.run(["true"]).returncode == 0  # the connection is still usable

    def sleepers():
        found = []
        for pid in lab.namespace_pids(labenv.hosts[0].namespace):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x0031\x00":
                    found.append(pid)
            except OSError:
                pass
        return found
    # The timed-out commands do not stay behind on the host (the remote side ends them).
    for _ in range(300):
        if not sleepers():
            break
        time.sleep(0.05)
    assert sleepers() == []


def test_put_get_read_roundtrip(hosts, tmp_path):
    h = hosts("lab2")
    src = tmp_path / "blob"
    src.write_bytes(bytes(range(256)) * 4096)
    src.chmod(0o751)
    wd = h.workdir()
    h.put(src, f"{wd}/deep/er/blob")
    assert h.run(["stat", "-c", "%a %s", f"{wd}/deep/er/blob"]).stdout == "751 1048576\n"
    h.get(f"{wd}/deep/er/blob", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    h.run(["sh", "-c", 'printf "héllo\\n" > "$1"', "sh", f"{wd}/t.txt"])
    assert h.read_text(f"{wd}/t.txt") == "héllo\n"
    with pytest.raises(OSError):
        h.read_text(f"{wd}/missing")
    h.remove_tree(f"{wd}/deep")
    assert not h.exists(f"{wd}/deep")


# --- background programs -----------------------------------------------------------------------


def test_program_events_signal_and_exit_code(hosts):
    h = hosts("lab1")
    p = h.start(["sh", "-c", 'echo \'{"event":"ready","port":1}\'; echo warn >&2; '
                 'trap \'echo "{\\"event\\":\\"summary\\"}"; exit 0\' TERM; '
                 'while :; do sleep 0.05; done'], deadman_s=60)
    assert p.wait_json_event("ready", 10) == {"event": "ready", "port": 1}
    assert p.wait(0.2) is None
    p.signal(signal.SIGTERM)
    assert p.wait(10) == 0
    assert p.wait_json_event("summary", 5) == {"event": "summary"}
    assert p.stderr().startswith("warn\n")  # the shell may add "Terminated" for its sleep
    assert p.read_stdout_lines()[0] == '{"event":"ready","port":1}'


def test_signal_reaches_the_whole_group(hosts):
    h = hosts("lab1")
    p = h.start(["sh", "-c", "sleep 300 & sleep 300 & echo '{\"event\":\"ready\"}'; wait"])
    p.wait_json_event("ready", 10)
    assert len(h.tagged_pids()) >= 4  # wrapper, timeout, sh, 2 sleeps
    p.signal(signal.SIGTERM)
    assert p.wait(10) == -signal.SIGTERM
    assert h.tagged_pids() == []


def test_exit_before_event_is_reported_with_stderr(hosts):
    h = hosts("lab2")
    p = h.start(["sh", "-c", "echo 'bind: address in use' >&2; exit 1"])
    with pytest.raises(ProcError, match="exited with code 1 before printing a 'ready' line.*"
                                        "address in use"):
        p.wait_json_event("ready", 10)


def test_deadman_ends_a_program_by_itself(hosts):
    h = hosts("lab2")
    p = h.start(["sleep", "300"], deadman_s=1)
    assert p.wait(15) == 124
    assert p.deadman_fired


def test_kill_and_cpu_times(hosts):
    h = hosts("lab2")
    p = h.start(["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; "
                 "echo '{\"event\":\"ready\"}'; sleep 300"])
    p.wait_json_event("ready", 30)
    user, _ = p.cpu_times()
    assert user > 0
    p.kill()
    assert p.wait(5) == -signal.SIGKILL
    q = h.start(["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
    assert q.wait(30) == 0
    assert q.cpu_times()[0] > 0


def test_close_stops_programs_and_removes_their_files(inv):
    h = SSHHost(inv.get("lab3"), inv)
    p = h.start(["sleep", "300"])
    procdir = p.dir
    h.close()
    h2 = SSHHost(inv.get("lab3"), inv)
    assert h2.tagged_pids() == []
    assert not h2.exists(procdir)
    h2.close()


def test_clean_sweeps_leftovers_of_this_host_only(inv):
    # Plant programs on lab1 and lab2 (same workdir path, separate hosts) and abandon them.
    planted = {}
    for name in ("lab1", "lab2"):
        h = SSHHost(inv.get(name), inv)
        for _ in range(2):
            h.start(["sleep", "300"])
        planted[name] = h.tagged_pids()
        h._drop()  # the orchestrator vanishes
    assert all(len(v) >= 6 for v in planted.values())
    h1 = SSHHost(inv.get("lab1"), inv)
    assert sorted(h1.clean()) == sorted(planted["lab1"])
    assert h1.tagged_pids() == []
    assert not h1.exists(f"{h1.workdir()}/procs")
    h2 = SSHHost(inv.get("lab2"), inv)
    assert h2.tagged_pids() == planted["lab2"]  # untouched by lab1's sweep
    h2.clean()
    assert h2.tagged_pids() == []
    h1.close()
    h2.close()


def test_pids_with_exe_under_sees_only_this_host(inv):
    # The same path on two hosts: a copy of sleep run from <workdir>/bin on each.
    found = {}
    opened = []
    for name in ("lab1", "lab2"):
        h = SSHHost(inv.get(name), inv)
        opened.append(h)
        wd = h.workdir()
        h.run(["sh", "-c", 'mkdir -p "$1/bin" && cp /bin/sleep "$1/bin/"', "sh", wd])
        h.start([f"{wd}/bin/sleep", "300"])
    for h in opened:
        found[h.name] = h.pids_with_exe_under(f"{h.workdir()}/bin")
        assert len(found[h.name]) == 1
    assert found["lab1"] != found["lab2"]
    for h in opened:
        h.close()


# --- a host that dies --------------------------------------------------------------------------


def test_host_that_dies_fails_within_bounded_time():
    cfg = _cfg()
    try:
        lb = lab.up(2, cfg)
        inv = load_inventory(lb.inventory)
        # Short timeouts for the host that dies; the default ones for the host that stays.
        fast = {"lab1": inv.get("lab1"),
                "lab2": dataclasses.replace(inv.get("lab2"), io_timeout=3.0, connect_timeout=3.0)}
        inv = dataclasses.replace(inv, hosts=fast)
        alive, doomed = SSHHost(fast["lab1"], inv), SSHHost(fast["lab2"], inv)
        pa = alive.start(["sleep", "300"])
        pd = doomed.start(["sh", "-c", "echo '{\"event\":\"ready\"}'; sleep 300"])
        pd.wait_json_event("ready", 10)
        lab.kill_host(lb, "lab2")
        with pytest.raises(HostError, match="host lab2"):
            pd.wait_json_event("summary", 60)
        with pytest.raises(HostUnreachable, match="host lab2"):
            doomed.run(["true"])
        # What was received stays available; cleanup calls neither raise nor wait.
        assert pd.stdout() == '{"event":"ready"}\n'
        assert "host lab2" in pd.stderr()
        assert pd.poll() is None
        pd.kill()
        pd.signal(signal.SIGTERM)
        doomed.close()  # must not hang either
        assert alive.tagged_pids() != []
        alive.close()
        assert pa.wait(0) is not None
        checker = SSHHost(fast["lab1"], inv)
        assert checker.tagged_pids() == []
        checker.close()
    finally:
        lab.down(cfg)


# --- the hosts.trust task ----------------------------------------------------------------------


def test_trust_task_shows_fingerprint_and_writes_only_when_told(labenv, tmp_path):
    import sys

    st = labenv.config.state
    kh = tmp_path / "kh"
    inv_file = tmp_path / "inv.yaml"
    inv_file.write_text(f"version: 1\nknown_hosts: {kh}\nssh_config: null\n"
                        f"defaults: {{user: root, key: {st}/id_ed25519}}\n"
                        f"hosts:\n  h2: {{host: {labenv.hosts[1].address}}}\n")
    repo = Path(__file__).resolve().parents[1]

    def invoke(*args):
        return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=repo,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
    fp = keygen_fingerprint(labenv, 2)
    r = invoke("hosts.trust", "h2", "--hosts", str(inv_file))  # no terminal, no --yes
    assert r.returncode != 0
    assert fp in r.stdout and "repeat with --yes" in r.stderr
    assert not kh.exists()
    r = invoke("run", "--scenario", "lab-2host", "--hosts", str(inv_file))
    assert r.returncode != 0 and "placement.server" in r.stderr  # lab1 is not in this inventory
    r = invoke("hosts.trust", "h2", "--hosts", str(inv_file), "--yes")
    assert r.returncode == 0, r.stderr
    assert r.stdout.index(fp) < r.stdout.index("key added")
    assert kh.read_text().startswith(labenv.hosts[1].address + " ssh-ed25519 ")
    r = invoke("hosts.list", "--hosts", str(inv_file))
    assert f"root@{labenv.hosts[1].address}:22" in r.stdout
