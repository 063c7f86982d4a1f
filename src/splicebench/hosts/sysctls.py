"""Kernel settings (sysctls) on one host: read, changed, and always put back (I/O).

A run that changes settings on a host first writes a journal there: the /proc/sys path and the value
found of every setting it will touch, in ``<workdir>/sysctl-journal/<session>/`` (written under a
temporary name and renamed, by root, before anything changes). Then it starts a guard on the host
(`guard`): a shell waiting for the end of its standard input, which the orchestrator holds open
(`Host.hold`). When the input ends, because the run finished, was interrupted, or the orchestrator
died or lost its connection (sshd closes the channel), the guard writes every journaled value back
and removes the journal. A journal left behind (the guard itself killed, the host's sshd gone) is
put back by `restore_journals`, which `invoke clean` and the next run call.

Every command is a fixed script; names and values reach it as positional parameters (argv quoted by
the Host), never through a shell's parser. Names and values were checked for form by the scenario
validator; whether the host has the setting and accepts the value is checked here, on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

from splicebench.errors import HostError
from splicebench.hosts.base import Held, Host

PROC_SYS = "/proc/sys/"
JOURNAL_DIR = "sysctl-journal"
GUARD_READY = "sb-sysctl-guard ready"

# Per path: "ok VALUE", "readonly VALUE", "missing" or "unreadable" (tabs and newlines as spaces).
_READ = ('for p; do if [ ! -e "$p" ]; then echo missing; '
         'elif v=$(tr "\\t\\n" "  " <"$p" 2>/dev/null); then '
         'if [ -w "$p" ]; then printf "ok %s\\n" "$v"; else printf "readonly %s\\n" "$v"; fi; '
         'else echo unreadable; fi; done')

# $1 = path, $2 = value; the kernel's refusal ends up on stderr (tee names the errno; dash's
# printf says "I/O error" for all of them).
_WRITE = 'printf "%s\\n" "$2" | tee -- "$1" >/dev/null'

# $1 = journal directory, then pairs path value; published by a rename once complete.
_JOURNAL = ('d=$1; shift; rm -rf -- "$d.tmp" && mkdir -p -- "$d.tmp" || exit 1; i=0; '
            'while [ $# -ge 2 ]; do printf "%s\\n" "$1" >"$d.tmp/$i.path" && '
            'printf "%s\\n" "$2" >"$d.tmp/$i.value" || exit 1; i=$((i+1)); shift 2; done; '
            'mv -- "$d.tmp" "$d"')

# restore DIR: write every journaled value back, print one line each; the journal goes once all
# were written. Output errors are ignored (the orchestrator reading it may be gone: SIGPIPE ignored).
_RESTORE_FN = ('restore() { ok=1; for p in "$1"/*.path; do [ -f "$p" ] || continue; t=$(cat -- "$p"); '
               'case "$t" in /proc/sys/*..*) continue;; /proc/sys/*) ;; *) continue;; esac; '
               'v=$(cat -- "${p%.path}.value"); if printf "%s\\n" "$v" 2>/dev/null >"$t"; then '
               'printf "restored %s %s\\n" "$t" "$v" || :; else printf "FAILED %s %s\\n" "$t" "$v" || :; '
               'ok=0; fi; done; if [ $ok = 1 ]; then rm -rf -- "$1"; fi; }; ')

# $1 = journal directory: waits for the end of its input, then restores.
_GUARD = (_RESTORE_FN + 'trap "" INT HUP PIPE; echo "' + GUARD_READY + '" || :; '
          'while read -r _; do :; done; restore "$1"')

# $1 = the journals' directory: restores every journal in it; drops half-written ones.
_RESTORE_ALL = (_RESTORE_FN + 'for d in "$1"/*; do [ -d "$d" ] || continue; case "$d" in '
                '*.tmp) rm -rf -- "$d";; *) restore "$d";; esac; done')

# Which kernel and network namespace the host's settings belong to, and who runs the commands.
_IDENTITY = 'cat /proc/sys/kernel/random/boot_id; readlink /proc/self/ns/net; id -u'


@dataclass(frozen=True)
class Found:
    """A setting as found on a host: state "ok", "readonly", "missing" or "unreadable"."""

    state: str
    value: str | None = None


@dataclass(frozen=True)
class Identity:
    boot_id: str  # one kernel (hosts in namespaces of one machine share it)
    netns: str  # its network namespace ("net:[4026531840]")
    uid: int  # of the commands run on it (0: root, directly or through sudo)


def proc_path(name: str) -> str:
    """/proc/sys path of a dotted sysctl name (the validator allows no '/' in names)."""
    return PROC_SYS + name.replace(".", "/")


def normal(value: str) -> str:
    """A value as compared: words joined by one space (the kernel prints tabs between words)."""
    return " ".join(value.split())


def identity(host: Host) -> Identity:
    r = host.run(["sh", "-c", _IDENTITY], timeout=30)
    words = r.stdout.split()
    if len(words) != 3 or not words[2].isdigit():
        raise HostError(f"host {host.name}: cannot tell its kernel and network namespace: got "
                        f"{r.stdout.strip()!r}")
    return Identity(words[0], words[1], int(words[2]))


def read(host: Host, names: list[str]) -> dict[str, Found]:
    """The settings `names` as found on host (one command for all)."""
    if not names:
        return {}
    r = host.run(["sh", "-c", _READ, "sh", *map(proc_path, names)], timeout=30)
    lines = r.stdout.splitlines()
    if len(lines) != len(names):
        raise HostError(f"host {host.name}: cannot read sysctls {', '.join(names)}: got {r.stdout!r}")
    out = {}
    for name, line in zip(names, lines):
        state, _, value = line.partition(" ")
        out[name] = Found(state, normal(value) if state in ("ok", "readonly") else None)
    return out


def write(host: Host, name: str, value: str) -> str | None:
    """Set name to value; None if the kernel now holds exactly value, else what went wrong."""
    r = host.run(["sh", "-c", _WRITE, "sh", proc_path(name), value], check=False, timeout=30)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["write failed"])[-1]
        return f"the kernel refused {value!r} ({why.split(': ')[-1]})"
    now = read(host, [name])[name]
    if now.value != normal(value):
        return f"the kernel holds {now.value!r} after {value!r} was written (write it as the kernel shows it)"
    return None


def journals(host: Host) -> str:
    return f"{host.workdir()}/{JOURNAL_DIR}"


def write_journal(host: Host, session: str, found: dict[str, str]) -> str:
    """Record the values found (name -> value) on host before any is changed; the journal's path."""
    d = f"{journals(host)}/{session}"
    pairs = [w for name, value in sorted(found.items()) for w in (proc_path(name), value)]
    host.run(["sh", "-c", _JOURNAL, "sh", d, *pairs], timeout=30)
    return d


def guard(host: Host, journal: str) -> Held:
    """Start the guard that puts journal's values back when its input ends (see the module doc)."""
    return host.hold(["sh", "-c", _GUARD, "sb-sysctl-guard", journal], ready=GUARD_READY)


def restore_journals(host: Host) -> list[str]:
    """Put back every setting journaled on host by runs that did not (one line each: 'restored PATH
    VALUE' or 'FAILED PATH VALUE'); [] if there is no journal."""
    base = journals(host)
    if not host.exists(base):
        return []
    r = host.run(["sh", "-c", _RESTORE_ALL, "sh", base], check=False, timeout=60)
    return [line for line in r.stdout.splitlines() if line.strip()]
