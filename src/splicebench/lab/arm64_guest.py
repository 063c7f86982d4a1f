"""The arm64 guest's life on this machine: QEMU booted on a throw-away overlay of the cached image,
its SSH awaited, its status read back, and its power-off; its entry in the lab's inventory.

One guest per lab, its files in ``<lab state>/arm64/``: overlay.qcow2, console.log, qemu.pid,
qemu.argv and guest.json (the `Guest` record). QEMU runs daemonized with user-mode networking,
``restrict=on`` (the guest reaches nothing) and one forwarded port ``127.0.0.1:PORT -> guest:22``.
QEMU is found by its command line (the overlay's path), so `power_off` works from another process
and after a crash as well.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from splicebench.errors import HostError
from splicebench.lab import inventory_files
from splicebench.lab.arm64_host import (HEARTBEAT_S, Arm64Error, Log, remove_tree, require_root,
                                        run_checked, stderr_log, which)
from splicebench.lab.arm64_image import Image
from splicebench.lab.processes import terminate, wait_for_sshd
from splicebench.util.files import utc_now_iso
from splicebench.util.procs import pid_alive
from splicebench.util.signals import deferred_interrupts

GUEST_NAME = "arm64"
GUEST_LABELS = ("lab", "arm64", "emulated")
GUEST_WORKDIR = "/var/tmp/splicebench"

# Bounds (seconds). Generous: the machine may be busy and everything arm64 runs emulated.
SSH_TIMEOUT_S = 180.0
POWEROFF_TIMEOUT_S = 30.0


@dataclass
class Guest:
    """A running guest, as recorded in <lab state>/arm64/guest.json."""

    name: str
    port: int
    pid: int
    image: str  # the image key
    dir: str  # <lab state>/arm64
    started_at: str = ""
    boot_seconds: float = 0.0

    @property
    def known_hosts_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"


def guest_dir(state: Path) -> Path:
    return Path(state) / "arm64"


def qemu_argv(image: Image, gdir: Path, port: int, *, cpus: int = 2, memory_mb: int = 2048,
              append: str = "") -> list[str]:
    """The QEMU command line of a guest whose files are in gdir (pure)."""
    def opt(p: Path) -> str:  # QEMU option values: a comma is written twice
        return str(p).replace(",", ",,")

    cmdline = "root=/dev/vda rw console=ttyAMA0 panic=-1 net.ifnames=0 " + append
    return [
        "qemu-system-aarch64",
        "-name", "splicebench-arm64,process=sb-arm64",
        "-M", "virt", "-cpu", "max,pauth-impdef=on",  # plain max emulates pointer auth slowly
        "-smp", str(cpus), "-m", str(memory_mb),
        "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", cmdline.strip(),
        "-drive", f"if=none,id=hd,format=qcow2,file={opt(gdir / 'overlay.qcow2')}",
        "-device", "virtio-blk-pci,drive=hd",
        "-netdev", f"user,id=n,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n,romfile=",
        "-chardev", f"file,id=con,path={opt(gdir / 'console.log')}", "-serial", "chardev:con",
        "-pidfile", str(gdir / "qemu.pid"),
        "-daemonize",
    ]


def boot(image: Image, state: Path, *, name: str = GUEST_NAME, cpus: int = 2,
         memory_mb: int = 2048, ssh_timeout: float = SSH_TIMEOUT_S, append: str = "",
         log: Log = stderr_log) -> Guest:
    """Boot image on a fresh overlay under state/arm64 and wait until SSH answers.

    Raises Arm64Error('boot') if QEMU does not start or exits, or SSH does not answer within
    ssh_timeout; then nothing is left running and the overlay is gone."""
    require_root("boot the arm64 guest")
    if not which("qemu-system-aarch64"):
        raise Arm64Error("boot", "qemu-system-aarch64 not found: apt-get install qemu-system-arm")
    gdir = guest_dir(state)
    if qemu_pids(state):
        raise Arm64Error("boot", f"a guest of this lab is already running ({gdir}); "
                         f"remove it first with `invoke lab.down`")
    if gdir.exists():
        remove_tree(gdir)
    gdir.mkdir(parents=True, mode=0o700)
    t0 = time.monotonic()
    try:
        run_checked(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.base),
                     str(gdir / "overlay.qcow2")], "boot")
        pid, port = _start_qemu(image, gdir, cpus, memory_mb, append)
        log(f"arm64 guest: QEMU pid {pid}, SSH on 127.0.0.1:{port}; waiting for the guest to boot "
            f"(about 20-60 s, at most {ssh_timeout:.0f} s)")
        _wait_ssh(pid, port, gdir, ssh_timeout, log)
        g = Guest(name=name, port=port, pid=pid, image=image.key, dir=str(gdir),
                  started_at=utc_now_iso("seconds"), boot_seconds=round(time.monotonic() - t0, 1))
        (gdir / "guest.json").write_text(json.dumps(asdict(g), indent=1) + "\n")
        return g
    except BaseException:
        with deferred_interrupts():
            _kill_qemu(state)
            remove_tree(gdir)
        raise


def _start_qemu(image: Image, gdir: Path, cpus: int, memory_mb: int, append: str
                ) -> tuple[int, int]:
    """Start QEMU daemonized on a free port; (pid, port). Retries if the port was taken meanwhile."""
    for attempt in range(3):
        port = _free_port()
        argv = qemu_argv(image, gdir, port, cpus=cpus, memory_mb=memory_mb, append=append)
        (gdir / "qemu.argv").write_text(shlex.join(argv) + "\n")
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60, start_new_session=True)
        if r.returncode == 0:
            try:
                return int((gdir / "qemu.pid").read_text().strip()), port
            except (OSError, ValueError):
                raise Arm64Error("boot", f"QEMU started but wrote no pid file in {gdir}") from None
        err = (r.stderr or r.stdout).strip() or "(no output)"
        if "host forwarding" in err and attempt < 2:
            continue
        how = f"was killed by signal {-r.returncode}" if r.returncode < 0 else \
            f"exited with code {r.returncode}"
        raise Arm64Error("boot", f"QEMU {how} at start: {err}")
    raise AssertionError("unreachable")


def _wait_ssh(pid: int, port: int, gdir: Path, timeout: float, log: Log) -> None:
    """Until the guest's sshd sends its banner; Arm64Error if QEMU exits or time runs out."""
    def note(elapsed: float) -> None:
        last = _console_tail(gdir, 1).strip()
        log(f"arm64 guest: booting, {elapsed:.0f} s" + (f" (console: {last[:70]})" if last else ""))

    got = wait_for_sshd("127.0.0.1", port, timeout=timeout, alive=lambda: pid_alive(pid),
                        interval=0.5, connect_timeout=2, read_timeout=3, heartbeat=(HEARTBEAT_S, note))
    if got == "exited":
        raise Arm64Error("boot", f"QEMU (pid {pid}) exited before the guest's SSH answered; "
                         f"last console lines:\n{_console_tail(gdir)}")
    if got == "timeout":
        raise Arm64Error("boot", f"SSH on 127.0.0.1:{port} did not answer within "
                         f"{timeout:.0f} s; last console lines:\n{_console_tail(gdir)}")


def _console_tail(gdir: Path, lines: int = 8) -> str:
    try:
        text = (gdir / "console.log").read_bytes().decode("utf-8", "replace")
    except OSError:
        return "(no console output)"
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # colours and cursor moves of systemd
    rows = [r.rstrip() for r in text.replace("\r", "\n").splitlines() if r.strip()]
    return "\n".join(rows[-lines:]) or "(no console output)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(state: Path) -> Guest | None:
    """The guest recorded for this lab, or None."""
    try:
        doc = json.loads((guest_dir(state) / "guest.json").read_text())
        return Guest(**doc)
    except (OSError, ValueError, TypeError):
        return None


def qemu_pids(state: Path) -> list[int]:
    """PIDs of QEMU processes running a guest of this lab (found by their overlay path)."""
    overlay = f"file={str(guest_dir(state) / 'overlay.qcow2').replace(',', ',,')}"
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            args = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"qemu-system-aarch64") and \
                any(a.decode(errors="replace").endswith(overlay) for a in args) and \
                pid_alive(int(p.name)):
            out.append(int(p.name))
    return sorted(out)


def power_off(state: Path, *, timeout: float = POWEROFF_TIMEOUT_S,
              log: Log = lambda m: None) -> list[str]:
    """Power the lab's guest off: `poweroff` over SSH, QEMU killed after timeout; overlay, inventory
    entry and known_hosts line removed. Idempotent; returns what it did."""
    done: list[str] = []
    g = status(state)
    pids = qemu_pids(state)
    if pids and g is not None:
        try:
            _ssh_poweroff(state, g)
            deadline = time.monotonic() + timeout
            while qemu_pids(state) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not qemu_pids(state):
                done.append(f"arm64 guest (QEMU pid {', '.join(map(str, pids))}, powered off)")
        except (HostError, OSError) as e:
            log(f"arm64 guest: poweroff over SSH failed ({e}); stopping QEMU")
    killed = _kill_qemu(state)
    if killed:
        done.append(f"arm64 guest (QEMU pid {', '.join(map(str, killed))}, killed)")
    if g is not None:
        remove_from_inventory(state, g)
    gdir = guest_dir(state)
    if gdir.exists():
        remove_tree(gdir)
        done.append(f"dir {gdir}")
    return done


def _ssh_poweroff(state: Path, g: Guest) -> None:
    from splicebench.hosts.inventory import load_inventory
    from splicebench.hosts.ssh import SSHHost

    inv = load_inventory(inventory_files.inventory_path(state))
    with SSHHost(inv.get(g.name), inv) as h:
        h.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=15)


def _kill_qemu(state: Path) -> list[int]:
    """TERM, then KILL, every QEMU of this lab; wait until gone. Returns the pids signalled."""
    pids = qemu_pids(state)
    return terminate(lambda: pids, term_wait=5.0, kill_wait=10.0)


# ---------------------------------------------------------------------------------------------
# lab inventory


def inventory_entry(g: Guest, image: Image) -> dict:
    """The guest's host entry in the lab inventory. Timeouts are generous: everything is emulated."""
    return {"host": "127.0.0.1", "port": g.port, "key": str(image.client_key), "user": "root",
            "sudo": "root", "labels": list(GUEST_LABELS), "workdir": GUEST_WORKDIR,
            "connect_timeout": 30, "command_timeout": 1200, "io_timeout": 30, "keepalive": 5}


def add_to_inventory(state: Path, g: Guest, image: Image) -> Path:
    """Add the guest to <state>/inventory.yaml and its host key to <state>/known_hosts.

    Creates both (an inventory with only the guest) when the lab has no namespace hosts."""
    try:
        return inventory_files.add_host(state, g.name, inventory_entry(g, image), g.known_hosts_name,
                                        image.host_key_pub.read_text())
    except ValueError as e:
        raise Arm64Error("inventory", str(e)) from None


def remove_from_inventory(state: Path, g: Guest) -> None:
    """Drop the guest's entry and known_hosts line (the rest of the lab stays as it is)."""
    inventory_files.remove_host(state, g.name, g.known_hosts_name)
