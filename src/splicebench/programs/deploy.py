"""Build the data-path programs on a host, cached by the content hash of their sources (I/O).

The sources (Makefile, servers/, bpf/) are hashed; what the Makefile builds also depends on which
optional build packages the host has (provision.OPTIONAL_BUILD_PACKAGES), so the cache key K is
the hash plus their names (`H` without any, `H+liburing-dev` with liburing-dev). The programs of
key K live in <workdir>/build/K/ on the host, and <workdir>/build/K/.complete marks a finished
build. A build runs in <workdir>/build/K.tmp-XXXX (sources unpacked into it, `make BUILD=<that
dir>`), which is renamed to K only when everything is there, so an interrupted build never looks
complete; a complete build is never replaced or removed (another run may be using it): installing
an optional package later gives a new key and a build of its own.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from splicebench.errors import BuildError, CommandFailed, ProvisionError, tail
from splicebench.hosts.base import Host
from splicebench.programs.provision import (BUILD_PACKAGES, OPTIONAL_BUILD_PACKAGES, PERF_PACKAGES, Package,
                                             ensure, missing)
from splicebench.registry import CLIENT_PROGRAM, SAMPLER_PROGRAM, SERVERS

# What the Makefile reads. Add a path here when the build starts to depend on it.
SOURCES = ("Makefile", "servers", "bpf")
SKIP_SUFFIXES = (".o", ".skel.h", ".swp", "~")
COMPLETE = ".complete"
MAKE_TIMEOUT_S = 900
# Programs the Makefile builds only where their package is installed (provision.OPTIONAL_BUILD_PACKAGES);
# a build without them is complete, and a run that needs one refuses the host (missing_program).
OPTIONAL_PROGRAMS = {"sb-echo-uring": "liburing-dev", "sb-proxy-uring": "liburing-dev"}


@dataclass(frozen=True)
class Build:
    host: str
    hash: str  # the cache key: the sources' hash plus the optional build packages present (build_key)
    dir: str  # directory on the host holding the sb-* programs
    built: bool  # False: found in the cache
    seconds: float
    absent: tuple[str, ...] = ()  # OPTIONAL_PROGRAMS this build lacks (their package is not installed)

    def program(self, name: str) -> str:
        return f"{self.dir}/{name}"

    def missing_program(self, name: str) -> str | None:
        """One line saying why `name` cannot run from this build, or None when it can."""
        if name not in self.absent:
            return None
        return (f"host {self.host}: its build has no {name} ({OPTIONAL_PROGRAMS[name]} is not installed there; "
                f"install it, or run without the servers that need it)")


def source_files(root: Path) -> list[Path]:
    """The files that make up the build, relative to root, sorted."""
    files = []
    for top in SOURCES:
        p = root / top
        if p.is_file():
            files.append(Path(top))
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(root)
                if f.is_file() and not any(part.startswith(".") for part in rel.parts) \
                        and not f.name.endswith(SKIP_SUFFIXES):
                    files.append(rel)
    if not files:
        raise BuildError(f"no program sources under {root} (expected {', '.join(SOURCES)})")
    return sorted(files)


def content_hash(root: Path) -> str:
    """16 hex digits over every source file's path, executable bit and content."""
    h = hashlib.sha256()
    for rel in source_files(root):
        f = root / rel
        h.update(rel.as_posix().encode() + b"\0")
        h.update(b"x" if os.access(f, os.X_OK) else b"-")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def expected_programs() -> list[str]:
    """The programs every build has (the optional ones aside)."""
    return sorted({s.program for s in SERVERS.values() if s.built and s.program not in OPTIONAL_PROGRAMS}
                  | {CLIENT_PROGRAM, SAMPLER_PROGRAM})


def optional_packages(programs: Sequence[str]) -> list[Package]:
    """The OPTIONAL_BUILD_PACKAGES that building `programs` needs."""
    names = {OPTIONAL_PROGRAMS[p] for p in programs if p in OPTIONAL_PROGRAMS}
    return [p for p in OPTIONAL_BUILD_PACKAGES if p.name in names]


def first_missing(builds: dict[str, Build], needs: Sequence[tuple[str, str]]) -> str | None:
    """For (host, program) pairs a run needs: one line naming the first program a host's build
    lacks (Build.missing_program), or None when every host has what it runs."""
    for host, program in needs:
        b = builds.get(host)
        why = b.missing_program(program) if b else None
        if why:
            return why
    return None


def _absent(host: Host, build_dir: str) -> tuple[str, ...]:
    return tuple(p for p in sorted(OPTIONAL_PROGRAMS) if not host.exists(f"{build_dir}/{p}"))


def _tarball(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in source_files(root):
            info = tar.gettarinfo(str(root / rel), arcname=rel.as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0  # make decides by existence in a fresh tree; fixed mtimes keep it reproducible
            with open(root / rel, "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def build_key(digest: str, present: Sequence[str]) -> str:
    """The cache key of a build: the sources' hash plus the optional build packages present."""
    return digest + "".join(f"+{name}" for name in sorted(present))


def _present(host: Host) -> set[str]:
    """Names of the optional build packages installed on host."""
    miss = {p.name for p in missing(host, OPTIONAL_BUILD_PACKAGES)}
    return {p.name for p in OPTIONAL_BUILD_PACKAGES if p.name not in miss}


def build(host: Host, root: Path, *, provision: bool = True, extra: Sequence[Package] = (),
          log: Callable[[str], None] = print) -> Build:
    """Programs of the current sources on `host`, built unless already cached. With provision, the
    build dependencies and `extra` (some of OPTIONAL_BUILD_PACKAGES) are installed first; once a
    package of `extra` is there, the build is the one keyed with it (built if need be)."""
    t0 = time.monotonic()
    digest = content_hash(root)
    base = f"{host.workdir()}/build"
    wanted = {p.name for p in extra}
    present = _present(host)
    key = build_key(digest, present)
    final = f"{base}/{key}"
    if host.exists(f"{final}/{COMPLETE}") and not (provision and wanted - present):
        return Build(host.name, key, final, False, time.monotonic() - t0, _absent(host, final))
    if provision:
        ensure(host, [*BUILD_PACKAGES, *extra], what="build dependencies", log=log)
        try:
            ensure(host, PERF_PACKAGES, what="the profiler", log=log)
        except ProvisionError as e:  # measured without perf: its samples say so (run/perf_run.py)
            log(f"host {host.name}: perf not installed, runs there go without it: {e}")
        present = _present(host)
        key = build_key(digest, present)
        final = f"{base}/{key}"
        if host.exists(f"{final}/{COMPLETE}"):
            return Build(host.name, key, final, False, time.monotonic() - t0, _absent(host, final))
    log(f"host {host.name}: building programs {key} in {final}")
    tmp = f"{final}.tmp-{secrets.token_hex(4)}"
    try:
        host.makedirs(f"{tmp}/src")
        with tempfile.TemporaryDirectory(prefix="splicebench-src-") as d:
            tar = Path(d) / "src.tar"
            tar.write_bytes(_tarball(root))
            host.put(tar, f"{tmp}/src.tar")
        host.run(["tar", "-xf", f"{tmp}/src.tar", "-C", f"{tmp}/src"], timeout=120)
        try:
            host.run(["make", "-C", f"{tmp}/src", f"BUILD={tmp}", "-j2"], timeout=MAKE_TIMEOUT_S)
        except CommandFailed as e:
            raise BuildError(f"host {host.name}: building the programs failed (make exited with "
                             f"{e.returncode}):\n{tail(e.stderr or e.stdout, 25)}") from None
        missing = [p for p in expected_programs() if not host.exists(f"{tmp}/{p}")]
        if missing:
            raise BuildError(f"host {host.name}: make succeeded but did not produce {', '.join(missing)} "
                             f"(the Makefile must build {', '.join(expected_programs())} into $(BUILD))")
        host.remove_tree(f"{tmp}/src")
        host.run(["rm", "-f", "--", f"{tmp}/src.tar"], timeout=30)
        host.run(["sh", "-c", 'printf "%s\\n" "$1" > "$2.tmp" && mv -f "$2.tmp" "$2"', "sh", digest,
                  f"{tmp}/{COMPLETE}"], timeout=30)
        r = host.run(["mv", "-T", "--", tmp, final], check=False, timeout=30)
        if r.returncode != 0 and not host.exists(f"{final}/{COMPLETE}"):
            raise BuildError(f"host {host.name}: cannot move the build into {final}: {r.stderr.strip()}")
    finally:
        if host.exists(tmp):
            host.remove_tree(tmp)
    return Build(host.name, key, final, True, time.monotonic() - t0, _absent(host, final))


def drop_cache(host: Host) -> str:
    """Remove every cached build on `host`; return the directory removed."""
    base = f"{host.workdir()}/build"
    host.remove_tree(base)
    return base


