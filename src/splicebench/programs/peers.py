"""NGINX and HAProxy as peer proxies: generated configs, validated, run in the foreground (I/O).

The user-space proxies people run today, measured like sb-proxy-*: the runner starts one per sample
on the proxy host, in the foreground and in its own process group, and stops it with a signal.
    nginx                NGINX stream module (libnginx-mod-stream on Debian), `daemon off;`
    haproxy              HAProxy `mode tcp`, `-db`, no splicing (nosplice)
    haproxy-splice-auto  the same with `option splice-auto` (here it hardly spliced; NOTES.md)
    haproxy-splice       the same with `option splice-request` + `option splice-response`
One worker process (NGINX) or thread (HAProxy) by default, like the single-threaded sb-proxy-*;
NGINX then runs without a master process (`master_process off`), so that it dies with the
orchestrator like every other program (an orphaned NGINX worker would keep running).

Configs come from Jinja2 templates (templates/peers/) with StrictUndefined. Every value is
validated first (addresses numeric, ports and sizes integers, paths from a safe character set),
and the environment's finalize hook refuses any printed value outside that character set, so no
scenario value can add a directive. The config lives in a per-sample temporary directory on the
proxy host together with the pid and lock files; it is checked with `nginx -t` / `haproxy -c`
before the program starts and removed when the program has been reaped.

Peers print no JSON. `PeerProc` wraps the program's Proc: it is ready when the proxy host's
/proc/net/tcp{,6} lists the port as LISTEN on a socket of its own, its CPU is the sum over its
process group (NGINX with several workers: master and workers) from /proc/PID/stat, and when it has exited it reports a summary line made of
those CPU times, so the runner treats it like any other server. The listening port is picked
from the ports unused on the proxy host (NGINX cannot report a kernel-picked port) and picked again
if the bind still loses a race.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import signal
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from jinja2 import Environment, PackageLoader, StrictUndefined

from splicebench.errors import HostError, ProcError, UserError
from splicebench.hosts.base import Host, Proc
from splicebench.hosts.local import LocalHost
from splicebench.programs.provision import Package
from splicebench.registry import (PEER_BUFFER_MAX, PEER_MAX_CONNS, PEER_OPTIONS, PEER_SOCKBUF_MAX, PEER_WORKERS_MAX,
                                  pinned)


class PeerError(UserError):
    """A peer proxy (NGINX, HAProxy) cannot be configured, validated or started."""


@dataclass(frozen=True)
class Variant:
    """One peer as a scenario names it: which program, which template, which splice mode."""

    name: str
    program: str  # nginx | haproxy
    template: str
    splice: str  # haproxy: none | auto | forced; nginx: ""


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("nginx", "nginx", "nginx.conf.j2", ""),
        Variant("haproxy", "haproxy", "haproxy.cfg.j2", "none"),
        Variant("haproxy-splice-auto", "haproxy", "haproxy.cfg.j2", "auto"),
        Variant("haproxy-splice", "haproxy", "haproxy.cfg.j2", "forced"),
    )
}

# Debian/Ubuntu packages per program (provision.ensure installs what is missing).
PACKAGES: dict[str, list[Package]] = {
    "nginx": [Package("nginx", "nginx"),
              Package("libnginx-mod-stream", "/usr/lib/nginx/modules/ngx_stream_module.so")],
    "haproxy": [Package("haproxy", "haproxy")],
}

# Listening ports are picked below the kernel's default ephemeral range (32768-60999), so that
# they do not collide with the client's or the proxy's outgoing connections.
PORT_RANGE = (20000, 32768)
DEFAULTS = {"workers": 1, "buffer": 131072, "sndbuf": 0, "rcvbuf": 0}
# Most proxied connections at once: NGINX worker_connections is twice this (a connection per leg);
# HAProxy maxconn is this, and HAProxy refuses to start when the descriptors that implies (two per
# session, plus pipes when splicing) exceed the hard RLIMIT_NOFILE, 20000 on some systems.
# Validation refuses scenarios that open more (registry.PEER_MAX_CONNS, with the other bounds below).
MAX_CONNS = PEER_MAX_CONNS
BIND_ATTEMPTS = 3

SAFE_VALUE = re.compile(r"^[A-Za-z0-9._/:\[\]+-]*$")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*$")


# ---------------------------------------------------------------------------------------------
# validated values -> config text (pure)


@dataclass(frozen=True)
class PeerConfig:
    """What a template may print; build it with `peer_config`, which validates every field."""

    variant: str
    splice: str
    listen: str  # "127.0.0.1:PORT" or "[::1]:PORT"
    upstream: str
    workdir: str
    stream_module: str  # NGINX: path of ngx_stream_module.so; "" when built in
    workers: int
    max_conns: int
    worker_connections: int
    buffer: int
    sndbuf: int
    rcvbuf: int


def _address(value: Any, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str):
        raise PeerError(f"{what}: expected a numeric IP address, got {value!r}")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise PeerError(f"{what}: expected a numeric IP address, got {value!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        raise PeerError(f"{what}: scoped IPv6 addresses are not supported, got {value!r}")
    return addr


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PeerError(f"{what}: expected an integer from {lo} to {hi}, got {value!r}")
    if not lo <= value <= hi:
        raise PeerError(f"{what}: expected an integer from {lo} to {hi}, got {value!r}")
    return value


def _path(value: Any, what: str, allow_empty: bool = False) -> str:
    if allow_empty and value == "":
        return ""
    if not isinstance(value, str) or not SAFE_PATH.match(value) or ".." in value.split("/"):
        raise PeerError(f"{what}: expected an absolute path of letters, digits and . _ + - /, "
                        f"got {value!r}")
    return value


def host_port(host: str, port: int) -> str:
    """'1.2.3.4:80' or '[::1]:80' for an address already validated."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_config(variant: str, *, listen_host: Any, listen_port: Any, upstream_host: Any,
                upstream_port: Any, workdir: Any, stream_module: Any = "",
                options: Mapping[str, Any] | None = None) -> PeerConfig:
    """Validate every value that goes into a peer's config; PeerError names the first bad one."""
    if variant not in VARIANTS:
        raise PeerError(f"unknown peer {variant!r}; known: {', '.join(VARIANTS)}")
    opts = {**DEFAULTS, **dict(options or {})}
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise PeerError(f"{variant}: unknown option {unknown[0]!r}; known: {', '.join(DEFAULTS)}")
    lh = _address(listen_host, "listen address")
    uh = _address(upstream_host, "upstream address")
    return PeerConfig(
        variant=variant,
        splice=VARIANTS[variant].splice,
        listen=host_port(str(lh), _int(listen_port, "listen port", 1, 65535)),
        upstream=host_port(str(uh), _int(upstream_port, "upstream port", 1, 65535)),
        workdir=_path(workdir, "work directory"),
        stream_module=_path(stream_module, "stream module", allow_empty=True),
        workers=_int(opts["workers"], "workers", PEER_OPTIONS["workers"].minimum, PEER_WORKERS_MAX),
        max_conns=MAX_CONNS,
        worker_connections=2 * MAX_CONNS,
        buffer=_int(opts["buffer"], "buffer", PEER_OPTIONS["buffer"].minimum, PEER_BUFFER_MAX),
        sndbuf=_int(opts["sndbuf"], "sndbuf", 0, PEER_SOCKBUF_MAX),
        rcvbuf=_int(opts["rcvbuf"], "rcvbuf", 0, PEER_SOCKBUF_MAX),
    )


def _finalize(value: Any) -> Any:
    """Every value a template prints passes here: only integers and safe words get through."""
    if isinstance(value, bool) or value is None:
        raise PeerError(f"template printed {value!r}: only integers and validated words are allowed")
    if isinstance(value, int):
        return value
    if not isinstance(value, str) or not SAFE_VALUE.match(value):
        raise PeerError(f"refusing to write {value!r} into a peer config: only letters, digits and "
                        f". _ / : [ ] + - are allowed there")
    return value


_ENV: Environment | None = None


def environment() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = Environment(loader=PackageLoader("splicebench.programs", "templates/peers"), autoescape=False,
                           undefined=StrictUndefined, finalize=_finalize, trim_blocks=True,
                           lstrip_blocks=True, keep_trailing_newline=True)
    return _ENV


def render(cfg: PeerConfig) -> str:
    """The config file text for a validated PeerConfig."""
    if not isinstance(cfg, PeerConfig):
        raise PeerError("render() takes a PeerConfig built by peer_config()")
    return environment().get_template(VARIANTS[cfg.variant].template).render(c=cfg)


def config_name(variant: str) -> str:
    return f"{VARIANTS[variant].program}.conf"


def check_argv(variant: str, config: str, workdir: str) -> list[str]:
    """The command that validates a config without starting the proxy."""
    if VARIANTS[variant].program == "nginx":
        return ["nginx", "-t", "-q", "-p", f"{workdir}/", "-e", "stderr", "-c", config]
    return ["haproxy", "-c", "-q", "-f", config]


def run_argv(variant: str, config: str, workdir: str) -> list[str]:
    """The command that runs the proxy in the foreground (the config says `daemon off;` for NGINX)."""
    if VARIANTS[variant].program == "nginx":
        return ["nginx", "-p", f"{workdir}/", "-e", "stderr", "-c", config]
    return ["haproxy", "-db", "-f", config]


def parse_version(program: str, output: str) -> str | None:
    """'1.22.1' from `nginx -v` ("nginx version: nginx/1.22.1"), '2.6.12-1+deb12u4' from
    `haproxy -v` ("HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/")."""
    pattern = r"nginx version: nginx/(\S+)" if program == "nginx" else r"HA-?Proxy version (\S+)"
    m = re.search(pattern, output)
    return m.group(1) if m else None


def parse_stream_module(nginx_V: str) -> str | None:
    """From `nginx -V`: the path of a dynamic stream module, '' if it is built in, None if absent."""
    args = nginx_V.split()
    if "--with-stream=dynamic" in args:
        mp = next((a.split("=", 1)[1] for a in args if a.startswith("--modules-path=")), None)
        prefix = next((a.split("=", 1)[1] for a in args if a.startswith("--prefix=")), "/usr/share/nginx")
        base = mp or f"{prefix.rstrip('/')}/modules"
        return f"{base.rstrip('/')}/ngx_stream_module.so"
    if "--with-stream" in args:
        return ""
    return None


def parse_listening_ports(*tables: str) -> tuple[dict[int, set[int]], set[int]]:
    """From /proc/net/tcp and tcp6 texts: LISTEN port -> socket inodes, and every local port in use."""
    listening: dict[int, set[int]] = {}
    used: set[int] = set()
    for text in tables:
        for line in text.splitlines()[1:]:
            parts = line.split()
            if len(parts) < 4 or ":" not in parts[1]:
                continue
            try:
                port = int(parts[1].rsplit(":", 1)[1], 16)
            except ValueError:
                continue
            used.add(port)
            if parts[3] == "0A":
                inode = int(parts[9]) if len(parts) > 9 and parts[9].isdigit() else 0
                listening.setdefault(port, set()).add(inode)
    return listening, used


# ---------------------------------------------------------------------------------------------
# on a host (I/O)


def _tcp_tables(host: Host) -> list[str]:
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            out.append(host.read_text(name))
        except (OSError, HostError):
            pass
    return out


def pick_port(host: Host, rng: random.Random | None = None) -> int:
    """A port no socket on `host` uses right now, from PORT_RANGE."""
    _, used = parse_listening_ports(*_tcp_tables(host))
    rng = rng or random.Random()
    for _ in range(1000):
        port = rng.randrange(*PORT_RANGE)
        if port not in used:
            return port
    raise PeerError(f"host {host.name}: no free port in {PORT_RANGE[0]}-{PORT_RANGE[1] - 1}")


def is_listening(host: Host, port: int, pgid: int | None = None) -> bool:
    """Whether `port` is in LISTEN state on `host`; with pgid, on a socket of that process group
    (another program holding the port must not pass for the peer being ready)."""
    inodes = parse_listening_ports(*_tcp_tables(host))[0].get(port)
    if not inodes:
        return False
    return pgid is None or bool(inodes & group_socket_inodes(host, pgid))


# Prints the fd link targets (socket:[INODE], ...) of every process in process group $1.
_GROUP_FDS = (
    'pg=$1; for d in /proc/[0-9]*; do read -r l 2>/dev/null <"$d/stat" || continue; '
    'r=${l##*) }; set -- $r; [ "$3" = "$pg" ] || continue; '
    'for f in "$d"/fd/*; do readlink "$f" 2>/dev/null; done; done'
)


def group_socket_inodes(host: Host, pgid: int) -> set[int]:
    """Inodes of the sockets that the processes of group `pgid` on `host` hold."""
    links: list[str] = []
    if isinstance(host, LocalHost):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[2]) != pgid:
                        continue
                fds = os.listdir(f"/proc/{entry}/fd")
            except (OSError, IndexError, ValueError):
                continue
            for fd in fds:
                try:
                    links.append(os.readlink(f"/proc/{entry}/fd/{fd}"))
                except OSError:
                    pass
    else:
        links = host.run(["sh", "-c", _GROUP_FDS, "sh", str(pgid)], check=False, timeout=30).stdout.split()
    return {int(x[8:-1]) for x in links if x.startswith("socket:[") and x[8:-1].isdigit()}


_MODULES: dict[str, str] = {}


def stream_module(host: Host) -> str:
    """Path of NGINX's stream module on `host` ('' if built in); PeerError if there is none."""
    if host.name in _MODULES:
        return _MODULES[host.name]
    r = host.run(["nginx", "-V"], check=False, timeout=30)
    if r.returncode == 127:
        raise PeerError(f"host {host.name}: nginx is not installed (Debian: apt-get install nginx "
                        f"libnginx-mod-stream; `invoke run` installs them when it may)")
    path = parse_stream_module(r.stderr + r.stdout)
    if path is None:
        raise PeerError(f"host {host.name}: this nginx was built without the stream module")
    if path and not host.exists(path):
        raise PeerError(f"host {host.name}: nginx expects its stream module at {path}, which is "
                        f"missing (Debian: apt-get install libnginx-mod-stream)")
    _MODULES[host.name] = path
    return path


def versions(host: Host, programs: Iterable[str]) -> dict[str, str | None]:
    """program -> version on `host` (None when it is not installed), for the run's manifest."""
    out: dict[str, str | None] = {}
    for program in sorted(set(programs)):
        r = host.run([program, "-v"], check=False, timeout=30)
        out[program] = parse_version(program, r.stdout + r.stderr) if r.returncode == 0 else None
    return out


def programs_of(kinds: Iterable[str]) -> set[str]:
    """The programs (nginx, haproxy) that the given server kinds need."""
    return {VARIANTS[k].program for k in kinds if k in VARIANTS}


def packages_for(kinds: Iterable[str]) -> list[Package]:
    return [p for prog in sorted(programs_of(kinds)) for p in PACKAGES[prog]]


def _put_text(host: Host, text: str, path: str) -> None:
    with tempfile.TemporaryDirectory(prefix="splicebench-peer-") as d:
        local = os.path.join(d, "config")
        with open(local, "w", encoding="utf-8") as f:
            f.write(text)
        host.put(local, path)


def make_workdir(host: Host) -> str:
    """A fresh private directory on `host` for one peer's config, pid and lock files."""
    # Made by the host's privileged commands; handed to the login user under sudo, who uploads the
    # config into it over SFTP.
    r = host.run(["sh", "-c", 'd=$(mktemp -d -t splicebench-peer.XXXXXXXX) || exit 1; '
                  'if [ -n "${SUDO_UID:-}" ]; then chown -- "$SUDO_UID:$SUDO_GID" "$d" || exit 1; fi; '
                  'echo "$d"'], timeout=30)
    return _path(r.stdout.strip(), "temporary directory")


def check_config(host: Host, variant: str, config: str, workdir: str) -> None:
    r = host.run(check_argv(variant, config, workdir), check=False, timeout=60)
    if r.returncode != 0:
        tail = "\n".join((r.stderr + r.stdout).strip().splitlines()[-8:])
        raise PeerError(f"host {host.name}: {VARIANTS[variant].program} rejected the generated "
                        f"configuration {config}:\n{tail}")


def start(variant: str, host: Host, *, listen_host: str, upstream_host: str, upstream_port: int,
          options: Mapping[str, Any] | None = None, deadman_s: float | None = None,
          ready_timeout: float = 15.0, listen_port: int | None = None, cpus: str | None = None,
          wrap: Callable[[list[str]], list[str]] | None = None) -> "PeerProc":
    """Render, validate and start a peer on `host`; return it once its port is listening.

    listen_port: None picks an unused port (and another one if the bind loses a race). cpus: a CPU list
    to run it on (taskset -c; its workers inherit it), None: anywhere. wrap: turns the peer's argv
    (after taskset) into the one started (e.g. accel.in_cgroup; it must exec the peer in the same
    process). ProcError
    when it exits or stays silent; PeerError when its config is refused. Nothing it created
    (process group, temporary directory) survives a failure."""
    v = VARIANTS[variant]
    module = stream_module(host) if v.program == "nginx" else ""
    workdir = make_workdir(host)
    proc: Proc | None = None
    try:
        attempts = BIND_ATTEMPTS if listen_port is None else 1
        for attempt in range(attempts):
            port = pick_port(host) if listen_port is None else listen_port
            cfg = peer_config(variant, listen_host=listen_host, listen_port=port,
                              upstream_host=upstream_host, upstream_port=upstream_port,
                              workdir=workdir, stream_module=module, options=options)
            config = f"{workdir}/{config_name(variant)}"
            _put_text(host, render(cfg), config)
            check_config(host, variant, config, workdir)
            argv = pinned(run_argv(variant, config, workdir), cpus)
            proc = host.start(wrap(argv) if wrap else argv, deadman_s=deadman_s)
            deadline = time.monotonic() + ready_timeout
            while True:
                if is_listening(host, port, proc.pid):
                    ready = {"event": "ready", "server": variant, "addr": listen_host, "port": port,
                             "pid": proc.pid}
                    return PeerProc(proc, host, variant, workdir, ready)
                code = proc.poll()
                if code is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            err = proc.stderr()
            proc.kill()
            if code is not None and "Address already in use" in err and attempt + 1 < attempts:
                proc = None
                continue  # another program took the port between our look and the bind
            tail = "\n".join(err.strip().splitlines()[-5:])
            what = f"exited with code {code}" if code is not None else \
                f"did not listen on port {port} within {ready_timeout:g} s"
            raise ProcError(f"{variant} on host {host.name} {what}" + (f"; stderr: {tail}" if tail else ""))
        raise ProcError(f"{variant} on host {host.name}: no free port after {BIND_ATTEMPTS} attempts")
    except BaseException:
        if proc is not None:
            proc.kill()
        host.remove_tree(workdir)
        raise


def prepare(hosts: Mapping[str, Host], kinds_by_host: Mapping[str, Iterable[str]], *,
            provision: bool = True, log=print) -> dict[str, dict[str, str | None]]:
    """Before a run: install the peers' packages where they are missing (when allowed), check that
    a config of every peer kind the run needs is accepted on its host, and return each host's
    program versions for the manifest. PeerError/ProvisionError say what to do."""
    from splicebench.programs.provision import ensure

    out: dict[str, dict[str, str | None]] = {}
    for name, kinds in sorted(kinds_by_host.items()):
        kinds = sorted(set(kinds))
        if not kinds:
            continue
        host = hosts[name]
        if provision:
            ensure(host, packages_for(kinds), what="peer proxies (NGINX, HAProxy)", log=log)
        out[name] = versions(host, programs_of(kinds))
        missing = [p for p, v in out[name].items() if v is None]
        if missing:
            raise PeerError(f"host {name}: {', '.join(missing)} not installed or not runnable "
                            f"(Debian: apt-get install {' '.join(p.name for p in packages_for(kinds))})")
        workdir = make_workdir(host)
        try:
            for kind in kinds:
                module = stream_module(host) if VARIANTS[kind].program == "nginx" else ""
                cfg = peer_config(kind, listen_host="127.0.0.1", listen_port=PORT_RANGE[0],
                                  upstream_host="127.0.0.1", upstream_port=PORT_RANGE[0] + 1,
                                  workdir=workdir, stream_module=module)
                config = f"{workdir}/{config_name(kind)}"
                _put_text(host, render(cfg), config)
                check_config(host, kind, config, workdir)
        finally:
            host.remove_tree(workdir)
    return out


class PeerProc(Proc):
    """A running peer, seen through the Proc interface the runner uses for every server.

    Ready and summary lines are synthesized (the peers print no JSON): ready once its port
    listens, summary (its process group's CPU times) once it has exited. HAProxy answers SIGTERM
    (a hard stop) with exit code 143; after a SIGTERM or SIGINT that we sent, that counts as the
    clean exit it is. (Its soft stop, SIGUSR1, is no option: the signal goes to the whole process
    group, and the SSH host's wrapper shell dies of it.)"""

    def __init__(self, inner: Proc, host: Host, variant: str, workdir: str, ready: dict[str, Any]):
        self.inner = inner
        self.host = host
        self.variant = variant
        self.workdir = workdir
        self.ready = ready
        self.pid = inner.pid
        self.argv = inner.argv
        self._cpu = (0.0, 0.0)
        self._summary: dict[str, Any] | None = None
        self._stopped_by: int | None = None

    def _synth_lines(self) -> list[str]:
        lines = [json.dumps(self.ready, separators=(",", ":"))]
        if self._summary is not None:
            lines.append(json.dumps(self._summary, separators=(",", ":")))
        return lines

    def read_stdout_lines(self) -> list[str]:
        return self.inner.read_stdout_lines() + self._synth_lines()

    def wait_json_event(self, event: str, timeout: float) -> dict:
        if event == "ready":
            return dict(self.ready)
        if event == "summary":
            if self.wait(timeout) is None:
                raise ProcError(f"{self.variant} (pid {self.pid}) did not exit within {timeout:g} s")
            assert self._summary is not None
            return dict(self._summary)
        raise ProcError(f"{self.variant} prints no {event!r} line")

    def signal(self, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.cpu_times()  # the last reading while the whole group is still there
            self._stopped_by = sig
        self.inner.signal(sig)

    def wait(self, timeout: float) -> int | None:
        code = self.inner.wait(timeout)
        if code is not None:
            self._finish()
            if self._stopped_by is not None and code in (128 + self._stopped_by, -self._stopped_by) \
                    and VARIANTS[self.variant].program == "haproxy":
                code = 0
        return code

    def stdout(self) -> str:
        return self.inner.stdout() + "".join(line + "\n" for line in self._synth_lines())

    def stderr(self) -> str:
        return self.inner.stderr()

    def cpu_times(self) -> tuple[float, float]:
        """User and system seconds of the whole process group (NGINX: master and workers)."""
        if self._summary is None and self.inner.poll() is None:
            if isinstance(self.host, LocalHost):
                now = group_cpu_times(self.pid)
            else:
                now = self.inner.cpu_times()  # SSHProc sums the group itself
            # A worker that exits takes its CPU out of the group sum: never go backwards.
            self._cpu = (max(self._cpu[0], now[0]), max(self._cpu[1], now[1]))
        return self._cpu

    def kill(self) -> None:
        self.inner.kill()
        self._finish()

    def _finish(self) -> None:
        if self._summary is not None:
            return
        self._summary = {"event": "summary", "server": self.variant, "pid": self.pid,
                         "cpu_user_s": round(self._cpu[0], 6), "cpu_sys_s": round(self._cpu[1], 6),
                         "synthesized": True}
        self.host.remove_tree(self.workdir)


def group_cpu_times(pgid: int, proc_dir: str = "/proc") -> tuple[float, float]:
    """(user, sys) seconds of every live process in process group `pgid`, each with its reaped
    children, from /proc/PID/stat (fields after the command name: state ppid pgrp ...)."""
    hz = os.sysconf("SC_CLK_TCK")
    user = sys_ = 0
    for entry in os.listdir(proc_dir):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc_dir}/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 14 and int(fields[2]) == pgid:
            user += int(fields[11]) + int(fields[13])
            sys_ += int(fields[12]) + int(fields[14])
    return (user / hz, sys_ / hz)
