"""Host facts recorded next to every run: machine, kernel, CPU, tuning, BPF support (I/O).

Everything is read through the Host interface, so the same code describes the local machine and
SSH hosts. A fact that cannot be read is recorded as None rather than failing the run.
"""

from __future__ import annotations

import json
import re
from typing import Any

from splicebench.hosts.base import Host

SYSCTLS = (
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.core.rmem_default",
    "net.core.wmem_default",
    "net.core.somaxconn",
    "net.core.netdev_max_backlog",
    "net.core.bpf_jit_enable",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_mem",
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_autocorking",
    "net.ipv4.tcp_notsent_lowat",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_sack",
    "net.ipv4.tcp_fastopen",
    "fs.pipe-max-size",
    "fs.pipe-user-pages-soft",
    "kernel.unprivileged_bpf_disabled",
    "kernel.perf_event_paranoid",
)

KERNEL_CONFIG = (
    "CONFIG_BPF_SYSCALL",
    "CONFIG_BPF_JIT",
    "CONFIG_BPF_STREAM_PARSER",
    "CONFIG_NET_SOCK_MSG",
    "CONFIG_CGROUP_BPF",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_PREEMPT",
    "CONFIG_PREEMPT_DYNAMIC",
    "CONFIG_HZ",
)

# Capability bits in /proc/PID/status CapEff.
CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


def _read(host: Host, path: str) -> str | None:
    try:
        return host.read_text(path)
    except (OSError, UnicodeError):
        return None
    except Exception:  # an SSH host may raise its own errors for unreadable files
        return None


def _out(host: Host, argv: list[str], timeout: float = 30) -> str | None:
    try:
        r = host.run(argv, check=False, timeout=timeout)
    except Exception:
        return None
    return r.stdout if r.returncode == 0 else None


def _first_line(text: str | None) -> str | None:
    if not text:
        return None
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model name and logical CPU count from /proc/cpuinfo (x86 and arm64 spellings)."""
    model = None
    count = 0
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key == "processor":
            count += 1
        elif key in ("model name", "Model", "cpu model", "Hardware") and model is None and val:
            model = val
    return {"model": model, "count": count or None}


def parse_meminfo_total(text: str) -> int | None:
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def parse_kernel_config(text: str, keys=KERNEL_CONFIG) -> dict[str, str | None]:
    vals = {k: None for k in keys}
    for line in text.splitlines():
        if line.startswith("CONFIG_"):
            k, _, v = line.partition("=")
            if k in vals:
                vals[k] = v
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            k = line[2:].split()[0]
            if k in vals:
                vals[k] = "n"
    return vals


def parse_capabilities(status_text: str) -> dict[str, bool]:
    m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status_text, re.M)
    eff = int(m.group(1), 16) if m else 0
    return {name: bool(eff >> bit & 1) for name, bit in CAPS.items()}


def summarize_bpftool_probe(probe: dict[str, Any]) -> dict[str, Any]:
    """The parts of `bpftool -j feature probe kernel` that matter for the SOCKMAP server."""
    progs = probe.get("program_types", {})
    maps = probe.get("map_types", {})
    helpers = probe.get("helpers", {})
    sk_skb_helpers = set(helpers.get("sk_skb_available_helpers", []))
    system = {k: v for k, v in probe.get("system_config", {}).items() if not isinstance(v, (list, dict))}
    return {
        "bpf_syscall": probe.get("syscall_config", {}).get("have_bpf_syscall"),
        "prog_sk_skb": progs.get("have_sk_skb_prog_type"),
        "prog_sk_msg": progs.get("have_sk_msg_prog_type"),
        "prog_sock_ops": progs.get("have_sock_ops_prog_type"),
        "map_sockmap": maps.get("have_sockmap_map_type"),
        "map_sockhash": maps.get("have_sockhash_map_type"),
        "helper_sk_redirect_map": "bpf_sk_redirect_map" in sk_skb_helpers if sk_skb_helpers else None,
        "helper_sk_redirect_hash": "bpf_sk_redirect_hash" in sk_skb_helpers if sk_skb_helpers else None,
        "system_config": system,
        "misc": probe.get("misc", {}),
    }


# Hypervisors systemd-detect-virt names that run the guest's own instruction set on the hardware.
_HW_VIRT = {"kvm", "amazon", "zvm", "vmware", "microsoft", "oracle", "powervm", "xen", "bochs", "uml",
            "parallels", "bhyve", "qnx", "acrn", "apple", "sre", "google"}


def parse_virtualization(*, vm: str | None, dt_compatible: str | None = None,
                         dt_hypervisor: str | None = None, dmi_vendor: str | None = None,
                         cpuinfo: str = "") -> dict[str, Any]:
    """Is the host a virtual machine, and is it emulated (its CPU interpreted by QEMU, no KVM)?

    vm: output of `systemd-detect-virt --vm` (None if unavailable); dt_*: the device tree's
    /compatible and /hypervisor/compatible; dmi_vendor: /sys/class/dmi/id/sys_vendor. QEMU
    without an accelerator (TCG) is what systemd reports as "qemu": with KVM it says "kvm".
    Returns {"virt": name or None, "emulated": bool or None (unknown), "how": the evidence}."""
    def clean(v: str | None) -> str:
        return (v or "").replace("\0", " ").strip()

    how: list[str] = []
    virt = clean(vm).splitlines()[0] if clean(vm) else None
    if virt:
        how.append(f"systemd-detect-virt --vm: {virt}")
    else:
        if "linux,kvm" in clean(dt_hypervisor):
            virt = "kvm"
            how.append("device tree hypervisor: linux,kvm")
        elif "linux,dummy-virt" in clean(dt_compatible):
            virt = "qemu"
            how.append("device tree compatible: linux,dummy-virt (QEMU virt machine)")
        elif clean(dmi_vendor) == "QEMU":
            virt = "qemu"
            how.append("DMI sys_vendor: QEMU")
    # QEMU's own arm64 CPU models ("max") report implementer 0x00; KVM passes the real CPU through.
    m = re.search(r"^CPU implementer\s*:\s*(0x[0-9a-fA-F]+)", cpuinfo, re.M)
    if m:
        how.append(f"/proc/cpuinfo CPU implementer {m.group(1)}")
    emulated: bool | None = None
    if virt == "qemu" and (vm or (m and int(m.group(1), 16) == 0)):
        emulated = True
        how.append("QEMU without KVM: every instruction emulated (TCG)")
    elif virt == "none" or virt in _HW_VIRT:
        emulated = False
    elif virt == "qemu":
        how.append("QEMU with or without KVM: cannot tell")
    elif not how:
        how.append("not detected: no systemd-detect-virt, device tree or DMI information")
    return {"virt": virt, "emulated": emulated, "how": "; ".join(how)}


def detect_virtualization(host: Host) -> dict[str, Any]:
    """`parse_virtualization` with what `host` shows (systemd-detect-virt if present, device tree,
    DMI, /proc/cpuinfo)."""
    r = None
    try:
        r = host.run(["systemd-detect-virt", "--vm"], check=False, timeout=30)
    except Exception:  # a missing tool (locally: OSError) or an unreachable host: other evidence
        pass
    vm = r.stdout if r is not None and r.returncode in (0, 1) and r.stdout.strip() else None
    return parse_virtualization(
        vm=vm,
        dt_compatible=_read(host, "/sys/firmware/devicetree/base/compatible"),
        dt_hypervisor=_read(host, "/sys/firmware/devicetree/base/hypervisor/compatible"),
        dmi_vendor=_read(host, "/sys/class/dmi/id/sys_vendor"),
        cpuinfo=_read(host, "/proc/cpuinfo") or "")


# perf for profiles (scenario `profile: true`, perf record -a): installed, and who may sample every
# CPU. One command: the version, the uid, the paranoia level, the effective capabilities.
PERF_PROBE = ["sh", "-c", "perf version && id -u && cat /proc/sys/kernel/perf_event_paranoid && "
              "grep '^CapEff:' /proc/self/status"]


def perf_status(host: Host) -> str | None:
    """None when perf can profile every CPU on `host` (perf record -a for `profile: true`), else why
    not, in one sentence. The per-sample counts need no perf binary: the CPU sampler opens its events
    itself and says in its output what the kernel refused (servers/cpustat.c)."""
    try:
        r = host.run(PERF_PROBE, check=False, timeout=60)
    except Exception as e:  # an SSH host may raise its own errors
        return f"perf could not be run: {e}"
    lines = r.stdout.splitlines()
    if r.returncode != 0 and not lines:
        line = _first_line(r.stderr) or f"exit code {r.returncode}"
        if r.returncode == 127 or "not found" in r.stderr.lower():
            return f"perf is not installed (Debian package linux-perf; needed for profiles only): {line}"
        return f"perf does not run here: {line}"
    try:
        paranoid = int(lines[2])
        caps = parse_capabilities(lines[3])
    except (IndexError, ValueError):
        return None  # perf runs; perf record says what it refuses, if anything
    if caps["CAP_SYS_ADMIN"] or caps["CAP_PERFMON"] or paranoid <= 0:
        return None
    return (f"perf cannot profile every CPU here (kernel.perf_event_paranoid={paranoid}; without root or "
            "CAP_PERFMON, perf record -a needs a value of 0 or less)")


def perf_check(f: dict[str, Any]) -> list[tuple[bool, str, str]]:
    """`invoke check`'s perf rows from a host's facts (gather): (ok, what, detail). The CPU sampler's
    counts (system calls, context switches, migrations) need root or CAP_PERFMON, else
    kernel.perf_event_paranoid <= 0 host-wide and <= 1 per process; system calls also need the
    tracepoint's id from tracefs, which only root may read on most systems. Profiles need perf."""
    caps = f.get("capabilities") or {}
    root = f.get("uid") == 0
    privileged = root or bool(caps.get("CAP_PERFMON") or caps.get("CAP_SYS_ADMIN"))
    try:
        paranoid: int | None = int((f.get("sysctls") or {}).get("kernel.perf_event_paranoid"))
    except (TypeError, ValueError):
        paranoid = None
    setting = f"kernel.perf_event_paranoid={paranoid if paranoid is not None else 'unknown'}"
    refused = []
    if not privileged and (paranoid is None or paranoid > 0):
        refused.append("host-wide counts")
    if not privileged and (paranoid is None or paranoid > 1):
        refused.append("per-process counts")
    if not root:
        refused.append("system calls where tracefs is root's only")
    counts = (True, "perf counts", "system calls, context switches, CPU migrations, host-wide and per process "
              f"({'root' if root else 'CAP_PERFMON' if privileged else setting})") if not refused else \
        (False, "perf counts", f"the CPU sampler cannot count {', '.join(refused)} ({setting}; without root or "
         "CAP_PERFMON host-wide needs 0 or less, per process 1 or less); the samples say so in perf_note")
    why = (f.get("perf") or {}).get("why_not")
    profiles = (why is None, "perf profiles", "perf record -a (profile: true)" if why is None else why)
    return [counts, profiles]


# `bpftool -j feature probe kernel` loads a test program and creates a test map of every kind: about
# 0.2 s here, the longest fact of all. What it finds is fixed for a kernel while it runs, for one user
# and one bpftool, so its output is kept beside the host's builds (<workdir>/build/facts: `invoke clean`
# drops it with them) under a name made of the boot id, the user id, its effective capabilities, the
# kernel.unprivileged_bpf_disabled setting and the bpftool binary's size and time ($1: that
# directory); a probe of an earlier boot or another bpftool is removed when a new one is written. The file is written under a
# temporary name and renamed, so a reader sees a whole probe or none.
_CACHED_PROBE = r"""set -u
b=$(command -v bpftool) || exit 127
caps=$(awk '/^CapEff/ { print $2 }' /proc/self/status)
unpriv=$(cat /proc/sys/kernel/unprivileged_bpf_disabled 2>/dev/null || echo x)
key=$(cat /proc/sys/kernel/random/boot_id)-$(id -u)-$caps-$unpriv-$(stat -L -c %s-%Y "$b")
f="$1/bpftool-probe-$key.json"
if [ -s "$f" ]; then exec cat -- "$f"; fi
mkdir -p -- "$1"
t=$(mktemp "$f.XXXXXX") || exec bpftool -j feature probe kernel
if bpftool -j feature probe kernel > "$t"; then
  for old in "$1"/bpftool-probe-*.json; do [ "$old" = "$f" ] || rm -f -- "$old"; done
  mv -f -- "$t" "$f" && exec cat -- "$f"
fi
rm -f -- "$t"
exit 1"""


def bpftool_probe(host: Host) -> str | None:
    """The host's `bpftool -j feature probe kernel` output, probed once per boot (_CACHED_PROBE), or
    None where bpftool is missing or fails."""
    try:
        where = f"{host.workdir()}/build/facts"
    except Exception:  # noqa: BLE001 (an SSH host without a usable work directory: probe every time)
        return _out(host, ["bpftool", "-j", "feature", "probe", "kernel"], timeout=60)
    return _out(host, ["sh", "-c", _CACHED_PROBE, "sh", where], timeout=60)


def gather(host: Host) -> dict[str, Any]:
    """Facts about `host` (a JSON-able dict)."""
    uname = (_out(host, ["uname", "-snrvm"]) or "").split()
    kernel_release = _first_line(_out(host, ["uname", "-r"]))
    cpuinfo = parse_cpuinfo(_read(host, "/proc/cpuinfo") or "")
    if cpuinfo["model"] is None:
        lscpu = _out(host, ["lscpu"]) or ""
        m = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
        cpuinfo["model"] = m.group(1).strip() if m else None
    nproc = _first_line(_out(host, ["nproc"]))
    os_release = _read(host, "/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', os_release, re.M)

    sysctls = {}
    for name in SYSCTLS:
        text = _read(host, "/proc/sys/" + name.replace(".", "/"))
        sysctls[name] = " ".join(text.split()) if text is not None else None

    config_text = _read(host, f"/boot/config-{kernel_release}") if kernel_release else None
    kconfig = parse_kernel_config(config_text) if config_text else None

    probe_text = bpftool_probe(host)
    bpf: dict[str, Any] = {"bpftool_probe": None}
    if probe_text:
        try:
            bpf["bpftool_probe"] = summarize_bpftool_probe(json.loads(probe_text))
        except ValueError:
            pass
    bpf["btf_vmlinux"] = host.exists("/sys/kernel/btf/vmlinux")
    mounts = [line.split() for line in (_read(host, "/proc/mounts") or "").splitlines()]
    bpf["bpffs_mounted"] = any(len(f) > 2 and f[1] == "/sys/fs/bpf" and f[2] == "bpf" for f in mounts)
    bpf["kernel_config"] = kconfig

    governor = _read(host, "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    no_turbo = _read(host, "/sys/devices/system/cpu/intel_pstate/no_turbo")
    boost = _read(host, "/sys/devices/system/cpu/cpufreq/boost")
    if no_turbo is not None:
        turbo = "off" if no_turbo.strip() == "1" else "on"
    elif boost is not None:
        turbo = "on" if boost.strip() == "1" else "off"
    else:
        turbo = None

    uid = _first_line(_out(host, ["id", "-u"]))
    caps = parse_capabilities(_read(host, "/proc/self/status") or "")
    tools = {}
    for tool, argv in {
        "gcc": ["gcc", "--version"],
        "clang": ["clang", "--version"],
        "make": ["make", "--version"],
        "bpftool": ["bpftool", "--version"],
        "libbpf": ["sh", "-c", "dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null"],
    }.items():
        tools[tool] = _first_line(_out(host, argv))
    clk = _first_line(_out(host, ["getconf", "CLK_TCK"]))

    return {
        "name": host.name,
        "hostname": uname[1] if len(uname) > 1 else _first_line(_out(host, ["hostname"])),
        "arch": uname[-1] if uname else None,
        "kernel": kernel_release,
        "kernel_version": " ".join(uname[3:-1]) if len(uname) > 4 else None,
        "os": m.group(1) if m else None,
        "cpu_model": cpuinfo["model"],
        "cpu_count": int(nproc) if nproc and nproc.isdigit() else cpuinfo["count"],
        "cpu_governor": governor.strip() if governor else None,
        "turbo": turbo,
        "virtualization": _first_line(_out(host, ["systemd-detect-virt"])),
        **{k if k != "how" else "virt_how": v for k, v in detect_virtualization(host).items()},
        "memory_bytes": parse_meminfo_total(_read(host, "/proc/meminfo") or ""),
        "loadavg_at_start": " ".join((_read(host, "/proc/loadavg") or "").split()[:3]) or None,
        "clk_tck": int(clk) if clk and clk.isdigit() else 100,
        "uid": int(uid) if uid and uid.isdigit() else None,
        "capabilities": caps,
        "sysctls": sysctls,
        "bpf": bpf,
        "tools": tools,
        "perf": {"why_not": perf_status(host)},
    }
