"""The arm64 lab host: pure parts (apt sources, recipe, QEMU command line, inventory entry,
emulation detection, scenarios with several placements), then the real thing: the image built or
reused, a Debian arm64 guest booted under QEMU, lab-multiarch run on this machine and on the guest,
and the failures (SSH not answering in time, QEMU exiting, a debootstrap that fails)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
from pathlib import Path

import pytest
import yaml

from splicebench import scenario
from splicebench.lab import (apt_sources, arm64, arm64_build, arm64_build_steps, arm64_guest,
                             arm64_host, arm64_image)
from splicebench.util.procs import pid_alive
from splicebench.hosts import facts
from splicebench.lab import lifecycle
from splicebench.lab import netns as lab
from splicebench.scenario import plan
from splicebench.errors import ScenarioError
from splicebench.hosts.inventory import load_inventory

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# apt sources

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Architectures: amd64

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Types: deb
Enabled: no
URIs: http://mirror.invalid/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://other.invalid/debian
Suites: bookworm-backports
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 xyz
 -----END PGP PUBLIC KEY BLOCK-----
"""

ONE_LINE = """\
# comment
deb http://ftp.example.invalid/debian bookworm main contrib  # trailing
deb-src http://ftp.example.invalid/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://amd64-only.invalid/debian bookworm main
deb [arch=amd64,arm64 signed-by=/k.gpg] http://both.invalid/debian bookworm-updates main
deb cdrom:[Debian]/ bookworm main
"""


@pytest.mark.unit
def test_deb822_sources_keep_deb_entries_that_serve_arm64():
    got = apt_sources.parse_deb822_sources(DEB822)
    assert [(s.uri, s.suite) for s in got] == [
        ("http://deb.debian.org/debian", "bookworm"),
        ("http://deb.debian.org/debian", "bookworm-updates"),
        ("http://deb.debian.org/debian-security", "bookworm-security"),
        ("http://other.invalid/debian", "bookworm-backports"),
    ]
    assert got[2].components == ("main", "contrib")
    assert got[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert got[3].signed_by is None  # an inline key block is not a file name


@pytest.mark.unit
def test_one_line_sources():
    got = apt_sources.parse_sources_list(ONE_LINE)
    assert [(s.uri, s.suite, s.components, s.signed_by) for s in got] == [
        ("http://ftp.example.invalid/debian", "bookworm", ("main", "contrib"), None),
        ("http://both.invalid/debian", "bookworm-updates", ("main",), "/k.gpg"),
        ("cdrom:[Debian]/", "bookworm", ("main",), None),
    ]


@pytest.mark.unit
def test_select_sources_takes_the_release_and_its_update_suites():
    srcs = apt_sources.parse_deb822_sources(DEB822)
    mirror, guest = apt_sources.select_sources(srcs, "bookworm")
    assert (mirror.uri, mirror.suite) == ("http://deb.debian.org/debian", "bookworm")
    assert [s.suite for s in guest] == ["bookworm", "bookworm-updates", "bookworm-security",
                                        "bookworm-backports"]
    # the guest's sources file says the same thing back
    assert apt_sources.parse_deb822_sources(apt_sources.render_deb822(guest)) == list(guest)


@pytest.mark.unit
@pytest.mark.parametrize("sources, codename, message", [
    ([], "bookworm", "apt sources: no 'deb' source for suite 'bookworm' with component 'main'"),
    ([apt_sources.AptSource("http://x.invalid/debian", "trixie", ("main",))], "bookworm",
     "apt sources: no 'deb' source for suite 'bookworm'"),
    ([apt_sources.AptSource("http://x.invalid/debian", "bookworm", ("contrib",))], "bookworm",
     "apt sources: no 'deb' source for suite 'bookworm' with component 'main'"),
    ([apt_sources.AptSource("cdrom:[Debian]/", "bookworm", ("main",))], "bookworm",
     "apt sources: source URI 'cdrom:[Debian]/' is not an http(s) or file URI"),
    ([apt_sources.AptSource("http://x.invalid/debian;reboot", "bookworm", ("main",))], "bookworm",
     "is not an http(s) or file URI"),
])
def test_select_sources_errors(sources, codename, message):
    with pytest.raises(arm64_host.Arm64Error) as e:
        apt_sources.select_sources(sources, codename)
    assert message in str(e.value)
    assert e.value.step == "apt sources"


@pytest.mark.unit
def test_host_recipe_reads_etc(tmp_path):
    (tmp_path / "apt" / "sources.list.d").mkdir(parents=True)
    (tmp_path / "os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
                                         'VERSION_CODENAME=bookworm\nID=debian\n')
    (tmp_path / "apt" / "sources.list.d" / "debian.sources").write_text(DEB822)
    r = arm64_image.host_recipe(tmp_path)
    assert r.codename == "bookworm" and r.mirror.uri == "http://deb.debian.org/debian"
    assert "openssh-server" in r.packages and "libbpf-dev" in r.packages and "liburing-dev" in r.packages
    assert "ca-certificates" not in r.packages  # no https source
    (tmp_path / "os-release").write_text("ID=debian\n")
    with pytest.raises(arm64_host.Arm64Error, match="no VERSION_CODENAME in /etc/os-release"):
        arm64_image.host_recipe(tmp_path)


@pytest.mark.unit
def test_recipe_key_names_everything_that_decides_the_image():
    m = apt_sources.AptSource("http://deb.debian.org/debian", "bookworm", ("main",))
    base = arm64_image.Recipe(codename="bookworm", mirror=m, sources=(m,))
    assert base.key == arm64_image.Recipe(codename="bookworm", mirror=m, sources=(m,)).key
    assert len(base.key) == 16 and int(base.key, 16) >= 0
    other_mirror = apt_sources.AptSource("http://ftp.de.debian.org/debian", "bookworm", ("main",))
    variants = [
        arm64_image.Recipe(codename="bookworm", mirror=other_mirror, sources=(other_mirror,)),
        arm64_image.Recipe(codename="bookworm", mirror=m, sources=(m,), packages=("openssh-server",)),
        arm64_image.Recipe(codename="bookworm", mirror=m, sources=(m,), initramfs_modules=("ext4",)),
        arm64_image.Recipe(codename="bookworm", mirror=m, sources=(m,), disk_gib=4),
        arm64_image.Recipe(codename="bookworm", mirror=m, sources=(m,), version=arm64_image.RECIPE_VERSION + 1),
    ]
    keys = {v.key for v in variants}
    assert len(keys) == len(variants) and base.key not in keys


@pytest.mark.unit
def test_cache_root_follows_splicebench_cache():
    assert arm64_image.cache_root({"SPLICEBENCH_CACHE": "/srv/c"}) == Path("/srv/c/arm64")
    assert arm64_image.cache_root({"XDG_CACHE_HOME": "/x"}) == Path("/x/splicebench/arm64")
    assert arm64_image.cache_root({}) == Path.home() / ".cache" / "splicebench" / "arm64"


@pytest.mark.unit
def test_debootstrap_progress_summary():
    lines = ["I: Retrieving InRelease", "I: Retrieving libc6 2.36", "I: Validating libc6 2.36",
             "I: Extracting libc6...", "I: Unpacking required packages...",
             "I: Configuring libc6...", "I: Configuring base-files..."]
    assert arm64_build_steps.debootstrap_summary(lines) == "configuring (2 packages so far)"
    assert arm64_build_steps.debootstrap_summary([]) == "starting"
    assert arm64_build_steps.debootstrap_summary(["W: some warning"]) == "W: some warning"


# ---------------------------------------------------------------------------------------------
# QEMU command line and the lab inventory


@pytest.mark.unit
def test_qemu_argv_forwards_only_ssh_on_loopback_and_isolates_the_guest(tmp_path):
    img = arm64_image.Image(tmp_path / "img,1")
    gdir = tmp_path / "lab,x" / "arm64"
    argv = arm64_guest.qemu_argv(img, gdir, 40022)
    net = argv[argv.index("-netdev") + 1]
    assert net == "user,id=n,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"
    assert argv.count("-netdev") == 1 and "-nodefaults" in argv and "-no-reboot" in argv
    assert "max,pauth-impdef=on" in argv and "-daemonize" in argv
    drive = argv[argv.index("-drive") + 1]
    assert drive.endswith("file=" + str(gdir / "overlay.qcow2").replace(",", ",,"))
    assert ",,x" in drive  # a comma in a path cannot start a new QEMU option
    assert argv[argv.index("-kernel") + 1] == str(img.dir / "vmlinuz")
    assert "panic=-1" in argv[argv.index("-append") + 1]  # a guest kernel panic ends QEMU


LAB_INVENTORY = """\
# splicebench lab inventory: written by `invoke lab.up`, removed by `invoke lab.down`.
version: 1
known_hosts: known_hosts
ssh_config: null
defaults:
  user: root
  key: id_ed25519
  sudo: root
  workdir: /tmp/splicebench
  connect_timeout: 5
hosts:
  lab1: {host: 10.203.0.11, labels: [lab]}
"""


def _fake_image(tmp_path: Path) -> arm64_image.Image:
    img = arm64_image.Image(tmp_path / "cache" / "0123456789abcdef")
    img.dir.mkdir(parents=True)
    img.host_key_pub.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheGuest0000000000"
                                "000000000000 splicebench-arm64-hostkey\n")
    return img


@pytest.mark.unit
def test_guest_joins_and_leaves_the_lab_inventory(tmp_path):
    state = tmp_path / "lab"
    state.mkdir()
    (state / "inventory.yaml").write_text(LAB_INVENTORY)
    (state / "known_hosts").write_text("10.203.0.11 ssh-ed25519 AAAAlab1\n")
    img = _fake_image(tmp_path)
    g = arm64_guest.Guest(name="arm64", port=40022, pid=1, image=img.key, dir=str(state / "arm64"))
    arm64_guest.add_to_inventory(state, g, img)
    arm64_guest.add_to_inventory(state, g, img)  # idempotent
    inv = load_inventory(state / "inventory.yaml")
    assert inv.names() == ["local", "lab1", "arm64"]
    h = inv.get("arm64")
    assert (h.hostname, h.port, h.user, h.sudo) == ("127.0.0.1", 40022, "root", "root")
    assert h.key_files == (str(img.client_key),)
    assert h.labels == ("lab", "arm64", "emulated") and h.workdir == arm64_guest.GUEST_WORKDIR
    assert h.known_hosts == (str(state / "known_hosts"),)
    assert inv.get("lab1").key_files == (str(state / "id_ed25519"),)  # the rest is unchanged
    kh = (state / "known_hosts").read_text().splitlines()
    assert kh == ["10.203.0.11 ssh-ed25519 AAAAlab1",
                  "[127.0.0.1]:40022 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheGuest0000000000"
                  "000000000000"]
    arm64_guest.remove_from_inventory(state, g)
    assert load_inventory(state / "inventory.yaml").names() == ["local", "lab1"]
    assert (state / "known_hosts").read_text() == "10.203.0.11 ssh-ed25519 AAAAlab1\n"


@pytest.mark.unit
def test_guest_alone_makes_an_inventory_of_its_own(tmp_path):
    state = tmp_path / "lab"
    state.mkdir()
    img = _fake_image(tmp_path)
    g = arm64_guest.Guest(name="arm64", port=40100, pid=1, image=img.key, dir=str(state / "arm64"))
    arm64_guest.add_to_inventory(state, g, img)
    inv = load_inventory(state / "inventory.yaml")
    assert inv.names() == ["local", "arm64"] and inv.get("arm64").port == 40100
    assert (state / "inventory.yaml").stat().st_mode & 0o077 == 0
    arm64_guest.remove_from_inventory(state, g)
    assert not (state / "inventory.yaml").exists()
    assert (state / "known_hosts").read_text() == ""


# ---------------------------------------------------------------------------------------------
# emulation detection


@pytest.mark.unit
@pytest.mark.parametrize("kw, virt, emulated, how", [
    ({"vm": "qemu\n"}, "qemu", True, "systemd-detect-virt --vm: qemu"),
    ({"vm": "kvm\n"}, "kvm", False, "systemd-detect-virt --vm: kvm"),
    ({"vm": "none\n"}, "none", False, "systemd-detect-virt --vm: none"),
    ({"vm": None, "dt_compatible": "linux,dummy-virt\0", "cpuinfo": "CPU implementer\t: 0x00\n"},
     "qemu", True, "device tree compatible: linux,dummy-virt"),
    ({"vm": None, "dt_compatible": "linux,dummy-virt\0", "cpuinfo": "CPU implementer\t: 0x41\n"},
     "qemu", None, "cannot tell"),
    ({"vm": None, "dt_hypervisor": "linux,kvm\0", "dt_compatible": "linux,dummy-virt\0"},
     "kvm", False, "device tree hypervisor: linux,kvm"),
    ({"vm": None, "dmi_vendor": "QEMU\n"}, "qemu", None, "DMI sys_vendor: QEMU"),
    ({"vm": None}, None, None, "not detected"),
])
def test_parse_virtualization(kw, virt, emulated, how):
    got = facts.parse_virtualization(**kw)
    assert (got["virt"], got["emulated"]) == (virt, emulated)
    assert how in got["how"]


# ---------------------------------------------------------------------------------------------
# scenarios with several placements (lab-multiarch)

BASE = "servers: [naive, sockmap]\nworkload: {type: stream, bytes: 1MiB}\nrepetitions: {warmup: 1, measured: 1}\n"


@pytest.mark.unit
def test_lab_multiarch_runs_every_server_on_each_host_with_its_own_client():
    sc = scenario.load(REPO / "scenarios" / "lab-multiarch.yaml", known_hosts=["local", "arm64"])
    assert [(p.server, p.clients) for p in sc.placements] == [("local", ("local",)),
                                                              ("arm64", ("arm64",))]
    p = plan.build_plan(sc)
    assert p.hosts() == ["local", "arm64"]
    assert sc.samples_total() == len(p.samples) == 2 * 4 * (sc.warmup + sc.measured)
    first_round = [(s.server.label, s.server_host) for s in p.samples[:8]]
    assert first_round == [("naive", "local"), ("splice", "local"), ("sockmap", "local"), ("uring", "local"),
                           ("naive", "arm64"), ("splice", "arm64"), ("sockmap", "arm64"), ("uring", "arm64")]
    assert all(s.client_hosts == (s.server_host,) and s.listen == "127.0.0.1:0" for s in p.samples)
    assert len({s.id for s in p.samples}) == len(p.samples)
    assert p.samples[4].id == "0005-c0-naive-arm64-w1"
    # the resolved form parses back to the same scenario
    again = scenario.validate(sc.to_dict(), "x.yaml", known_hosts=["local", "arm64"])
    assert again.placements == sc.placements and again.samples_total() == sc.samples_total()


@pytest.mark.unit
def test_one_placement_keeps_its_ids_and_listen_address():
    sc = scenario.parse(BASE + "placement: {server: lab1, clients: [lab2]}", "x.yaml",
                        known_hosts=["local", "lab1", "lab2"])
    p = plan.build_plan(sc)
    assert [s.id for s in p.samples[:2]] == ["0001-c0-naive-w1", "0002-c0-sockmap-w1"]
    assert {s.listen for s in p.samples} == {"0.0.0.0:0"}
    assert sc.to_dict()["placement"] == {"server": "lab1", "clients": ["lab2"]}


@pytest.mark.unit
@pytest.mark.parametrize("placement, message", [
    ("[]", "x.yaml: placement: empty list; found an empty list, allowed: a mapping with keys server, "
           "clients, or a non-empty list of them"),
    ("[{server: local}, {server: local}]",
     "x.yaml: placement[1]: duplicate placement; found a mapping, allowed: distinct placements"),
    ("[{server: local}, {server: arm46}]",
     "x.yaml: placement[1].server: unknown host; found 'arm46', allowed: local, arm64"),
    ("[{server: arm64, clients: []}]",
     "x.yaml: placement[0].clients: empty list; found an empty list, allowed: a non-empty list of "
     "hosts (local, arm64)"),
    ("[local]", "x.yaml: placement[0]: "),
])
def test_bad_placement_lists(placement, message):
    with pytest.raises(ScenarioError) as e:
        scenario.parse(BASE + f"placement: {placement}", "x.yaml", known_hosts=["local", "arm64"])
    assert str(e.value).startswith(message), str(e.value)


# ---------------------------------------------------------------------------------------------
# The real guest (root; the first run builds the image: minutes). One guest for the module.

real = [pytest.mark.arm64, pytest.mark.slow, pytest.mark.privileged, pytest.mark.e2e]
CACHE = arm64_image.cache_root()  # read once: other fixtures point SPLICEBENCH_CACHE elsewhere for a while


def _lab_config() -> lab.LabConfig:
    # State in /tmp/<prefix>, removed by lab.down (not pytest's tmp_path, which may be pruned).
    return lab.LabConfig(prefix="sba" + secrets.token_hex(2))


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions text (e.g. a lab's state directory)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                if text.encode() in (p / "cmdline").read_bytes() and pid_alive(int(p.name)):
                    out.append(int(p.name))
            except OSError:
                pass
    return out


@pytest.fixture(scope="module")
def image():
    arm64_host.provision_host(log=print)  # as `invoke lab.arm64` does
    img, _ = arm64_build.ensure_image(root=CACHE, log=print)
    return img


@pytest.fixture(scope="module")
def guest(image):
    cfg = _lab_config()
    try:
        yield cfg, arm64.up(cfg.state, root=CACHE, log=print)
    finally:
        lifecycle.down(cfg)
    assert _processes_mentioning(str(cfg.state)) == [] and not cfg.state.exists()


@pytest.mark.arm64
@pytest.mark.slow
@pytest.mark.privileged
def test_image_is_complete_and_reused(image):
    assert image.complete() and image.dir.parent == CACHE
    info = image.info()
    assert info["key"] == image.key == arm64_image.host_recipe().key
    assert info["guest_kernel"]
    assert arm64_build.ensure_image(root=CACHE, log=print) == (image, False)
    assert not list(CACHE.glob(".tmp-*"))


def _run_short(tmp_path: Path, inventory: Path, name: str):
    """`invoke run` of scenarios/<name>.yaml shortened to 1 MiB per connection and one measured
    round, results and report under tmp_path; its RunResult."""
    from splicebench.cli import commands

    doc = yaml.safe_load((REPO / "scenarios" / f"{name}.yaml").read_text())
    doc["workload"]["bytes"] = "1MiB"
    doc["repetitions"] = {"warmup": 0, "measured": 1}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return commands.run(commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports")), str(p),
                        hosts_file=str(inventory), log=print)


@pytest.mark.arm64
@pytest.mark.slow
@pytest.mark.privileged
@pytest.mark.e2e
def test_lab_multiarch_end_to_end(guest, use_cache, no_leftovers, tmp_path):
    cfg, lg = guest
    assert lg.uname.endswith("aarch64")
    inv = cfg.inventory
    res = _run_short(tmp_path, inv, "lab-multiarch")
    import pandas as pd

    rows = pd.read_csv(res.run_dir / "samples.csv")
    assert sorted(zip(rows["server_host"], rows["server"], rows["status"])) == sorted(
        (h, s, "ok") for h in ("local", "arm64") for s in ("naive", "splice", "sockmap", "uring")), \
        rows[["server_host", "server", "status", "error"]].to_string()
    assert set(rows["bytes_verified"]) == {1 << 20}  # every byte echoed and verified, on both
    assert (rows["client_hosts"] == rows["server_host"]).all()
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    guest_facts, local_facts = manifest["hosts"]["arm64"], manifest["hosts"]["local"]
    assert guest_facts["arch"] == "aarch64" and guest_facts["emulated"] is True
    assert guest_facts["virt"] == "qemu" and "TCG" in guest_facts["virt_how"]
    assert local_facts["arch"] == "x86_64" and local_facts["emulated"] is False
    probe = guest_facts["bpf"]["bpftool_probe"]
    assert probe["map_sockhash"] and probe["prog_sk_skb"]
    html = res.report.read_text()
    assert "aarch64" in html and "EMULATED" in html
    # The client's own byte-exact verification, as it printed it on the guest.
    for server in ("naive", "splice", "sockmap", "uring"):
        raw = sorted((res.run_dir / "raw").glob(f"*-{server}-arm64-*.client.json"))
        assert len(raw) == 1, server
        out = json.loads(raw[0].read_text())
        assert out["ok"] is True and out["mismatch"] is None, (server, out)
        assert out["bytes_verified"] == out["bytes_expected"] == 1 << 20, (server, out)


@pytest.mark.arm64
@pytest.mark.slow
@pytest.mark.privileged
def test_guest_has_no_network_beyond_its_ssh_port(guest):
    import socket

    from splicebench.hosts.ssh import SSHHost

    cfg, lg = guest
    inv = load_inventory(cfg.inventory)
    with socket.socket() as listener:  # a service on this machine's loopback
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        # 10.0.2.2 is QEMU's NAT gateway: without restrict=on it leads to this machine.
        probe = ("import socket,sys\ntry:\n socket.create_connection(('10.0.2.2', int(sys.argv[1])),"
                 " timeout=5)\n print('connected')\nexcept OSError as e:\n print('refused', e)\n")
        with SSHHost(inv.get("arm64"), inv) as h:
            out = h.run(["python3", "-c", probe, str(port)], timeout=60).stdout
            routes = h.run(["ip", "-4", "route"], timeout=30).stdout
    assert out.startswith("refused"), out
    assert "default" not in routes  # no way out was configured either


@pytest.mark.arm64
@pytest.mark.slow
@pytest.mark.privileged
def test_check_shows_aarch64_emulated_and_sockmap(guest):
    from splicebench.cli import commands
    from splicebench.hosts.ssh import SSHHost

    cfg, _ = guest
    inv = load_inventory(cfg.inventory)
    with SSHHost(inv.get("arm64"), inv) as h:
        rows = {what: (status, detail) for status, what, detail in commands.check(
            commands.Paths.of(REPO), h)}
    assert rows["machine"][0] == "warn" and rows["machine"][1].startswith("aarch64, 2 CPUs, EMULATED")
    assert rows["BPF support"][0] == "ok" and "sockmap" in rows["BPF support"][1]
    assert rows["build dependencies"] == ("ok", "all installed")
    # Debian 12's kernel 6.1: no kernel.io_uring_disabled yet, every opcode the uring programs use
    assert rows["io_uring"] == ("ok", "kernel.io_uring_disabled=absent (before Linux 6.6: allowed) (allowed); "
                                      "opcodes present: ACCEPT POLL_ADD RECV SEND SEND_ZC SPLICE ASYNC_CANCEL, "
                                      "liburing-dev installed")


def _no_guest_left(state: Path) -> None:
    assert arm64_guest.qemu_pids(state) == []
    assert _processes_mentioning(str(state)) == []
    assert not arm64_guest.guest_dir(state).exists()


@pytest.mark.arm64
@pytest.mark.slow
@pytest.mark.privileged
def test_ssh_not_answering_in_time_fails_clearly_and_leaves_nothing(image):
    cfg = _lab_config()
    try:
        with pytest.raises(arm64_host.Arm64Error) as e:
            arm64_guest.boot(image, cfg.state, ssh_timeout=1, log=print)
        assert e.value.step == "boot"
        assert "SSH on 127.0.0.1:" in str(e.value) and "did not answer within 1 s" in str(e.value)
        assert "last console lines" in str(e.value)
        _no_guest_left(cfg.state)
    finally:
        lifecycle.down(cfg)


@pytest.mark.arm64
@pytest.mark.slow
@pytest.mark.privileged
def test_qemu_exiting_during_boot_fails_clearly_and_leaves_nothing(image):
    cfg = _lab_config()
    started = threading.Event()
    stop = threading.Event()

    def log(msg: str) -> None:
        print(msg)
        if "waiting for the guest to boot" in msg:  # QEMU runs the guest now
            started.set()

    def crash():  # then QEMU dies, like a crash of the emulator
        while not stop.is_set():
            if started.wait(0.1):
                for pid in arm64_guest.qemu_pids(cfg.state):
                    os.kill(pid, signal.SIGKILL)
                return
    t = threading.Thread(target=crash, daemon=True)
    t.start()
    try:
        with pytest.raises(arm64_host.Arm64Error) as e:
            arm64_guest.boot(image, cfg.state, ssh_timeout=120, log=log)
        assert e.value.step == "boot"
        assert "exited before the guest's SSH answered" in str(e.value)
        _no_guest_left(cfg.state)
    finally:
        stop.set()
        t.join(5)
        lifecycle.down(cfg)


@pytest.mark.arm64
@pytest.mark.slow
@pytest.mark.privileged
def test_qemu_refusing_to_start_names_its_error(image):
    cfg = _lab_config()
    try:
        with pytest.raises(arm64_host.Arm64Error) as e:
            arm64_guest.boot(image, cfg.state, memory_mb=1 << 30, log=print)  # 1 PiB of guest memory
        assert e.value.step == "boot" and "QEMU exited with code 1 at start" in str(e.value)
        _no_guest_left(cfg.state)
    finally:
        lifecycle.down(cfg)


@pytest.mark.arm64
@pytest.mark.slow
@pytest.mark.privileged
def test_failed_build_leaves_no_partial_cache_and_no_mounts(tmp_path):
    mirror = apt_sources.AptSource(f"file://{tmp_path}/no-mirror", "bookworm", ("main",))
    recipe = arm64_image.Recipe(codename="bookworm", mirror=mirror, sources=(mirror,))
    root = tmp_path / "cache"
    lines: list[str] = []
    with pytest.raises(arm64_host.Arm64Error) as e:
        arm64_build.ensure_image(recipe, root=root, log=lines.append)
    assert e.value.step == "debootstrap", str(e.value)
    assert "exited with code" in str(e.value) and f"{recipe.key}.failed.log" in str(e.value)
    assert sorted(p.name for p in root.iterdir()) == [f"{recipe.key}.failed.log", f"{recipe.key}.lock"]
    assert arm64_host.mounts_under(root) == []
    assert any("[4/7] debootstrap" in ln for ln in lines)  # progress named the step
    assert arm64_image.cached_image(recipe, root) is None


@pytest.mark.arm64
@pytest.mark.slow
@pytest.mark.privileged
@pytest.mark.e2e
def test_acceleration_on_the_guest_is_byte_exact_and_leaves_nothing(guest, use_cache, no_leftovers, tmp_path):
    from splicebench.hosts.ssh import SSHHost
    from splicebench.programs import accel

    cfg, _ = guest
    res = _run_short(tmp_path, cfg.inventory, "lab-multiarch-accel")
    import pandas as pd

    rows = pd.read_csv(res.run_dir / "samples.csv")
    assert sorted(zip(rows["server_host"], rows["server"], rows["status"])) == sorted(
        (h, s, "ok") for h in ("local", "arm64") for s in ("naive", "naive+sk_msg")), \
        rows[["server_host", "server", "status", "error"]].to_string()
    assert set(rows["bytes_verified"]) == {4 << 20}  # 4 connections, every byte echoed and verified
    fast = rows[rows["accelerate"] == "sk_msg"]
    assert list(fast["accel_hosts"]) == list(fast["server_host"])
    assert (fast["accel_sockets"] == 8).all()
    assert (fast["accel_dirs_redirected"] + fast["accel_dirs_tcp_early"] == 8).all()
    inv = load_inventory(str(cfg.inventory))
    with SSHHost(inv.get("arm64"), inv) as h:
        assert "6.1" in h.run(["uname", "-r"]).stdout
        assert accel.sweep(h) == []  # nothing left for clean: the loader removed its cgroup


@pytest.mark.arm64
@pytest.mark.slow
@pytest.mark.privileged
def test_lab_down_from_another_process_powers_the_guest_off(guest):
    """Last of the tests on the module's guest: `invoke lab.down` in a new process ends it."""
    import subprocess

    cfg, lg = guest
    assert arm64_guest.qemu_pids(cfg.state) == [lg.guest.pid]
    r = subprocess.run(["invoke", "lab.down", "--prefix", cfg.prefix], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"arm64 guest (QEMU pid {lg.guest.pid}, powered off)" in r.stdout  # over SSH, not killed
    assert arm64_guest.qemu_pids(cfg.state) == [] and _processes_mentioning(str(cfg.state)) == []
    assert not cfg.state.exists()
