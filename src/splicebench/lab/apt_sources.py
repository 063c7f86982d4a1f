"""The apt sources of this host, parsed (sources.list and deb822 *.sources), and the ones the arm64
image is built from: debootstrap's mirror and the guest's own sources file (pure).

The image is built from the host's own mirror (see NOTES): no mirror's name is written into the code.
Only http(s) and file URIs are taken, so none can be mistaken for an option of debootstrap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from splicebench.lab.arm64_host import Arm64Error

@dataclass(frozen=True)
class AptSource:
    """One 'deb' source: a URI, one suite, its components and its keyring file if named."""

    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None = None


URI_RE = re.compile(r"^(https?://[A-Za-z0-9._~:@%+-]+(/[A-Za-z0-9._~:@%+/-]*)?|file:/[A-Za-z0-9._~:@%+/-]*)$")


def parse_sources_list(text: str) -> list[AptSource]:
    """One-line format (sources.list): ``deb [opts] URI SUITE COMPONENT...``; deb-src skipped."""
    out: list[AptSource] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        words = line.split()
        if not words or words[0] != "deb":
            continue
        opts: dict[str, str] = {}
        words = words[1:]
        if words and words[0].startswith("["):
            raw = []
            while words:
                w = words.pop(0)
                raw.append(w)
                if w.endswith("]"):
                    break
            for kv in " ".join(raw).strip("[]").split():
                k, _, v = kv.partition("=")
                opts[k] = v
        if len(words) < 2 or not _arch_ok(opts.get("arch")):
            continue
        out.append(AptSource(words[0], words[1], tuple(words[2:]), opts.get("signed-by")))
    return out


def parse_deb822_sources(text: str) -> list[AptSource]:
    """deb822 format (*.sources): paragraphs of Types/URIs/Suites/Components/Signed-By fields."""
    out: list[AptSource] = []
    for para in _deb822_paragraphs(text):
        if "deb" not in para.get("types", "").split():
            continue
        if para.get("enabled", "yes").strip().lower() == "no":
            continue
        if not _arch_ok(para.get("architectures")):
            continue
        signed = para.get("signed-by", "").strip()
        # An inline key block has several lines; only a file name is kept.
        signed_by = signed if signed and "\n" not in signed and signed.startswith("/") else None
        for uri in para.get("uris", "").split():
            for suite in para.get("suites", "").split():
                out.append(AptSource(uri, suite, tuple(para.get("components", "").split()),
                                     signed_by))
    return out


def _deb822_paragraphs(text: str) -> list[dict[str, str]]:
    paras: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                paras.append(cur)
            cur, key = {}, None
            continue
        if line[0] in " \t" and key is not None:
            cur[key] += "\n" + line.strip()
            continue
        k, sep, v = line.partition(":")
        if sep:
            key = k.strip().lower()
            cur[key] = v.strip()
    if cur:
        paras.append(cur)
    return paras


def _arch_ok(archs: str | None) -> bool:
    """A source restricted to some architectures serves arm64 only if it lists it."""
    if not archs:
        return True
    return "arm64" in archs.replace(",", " ").split()


def host_apt_sources(etc: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every 'deb' source of this host (sources.list, sources.list.d/*.list and *.sources)."""
    out: list[AptSource] = []
    main = etc / "sources.list"
    if main.is_file():
        out += parse_sources_list(main.read_text(errors="replace"))
    d = etc / "sources.list.d"
    if d.is_dir():
        for f in sorted(d.iterdir()):
            if f.suffix == ".list":
                out += parse_sources_list(f.read_text(errors="replace"))
            elif f.suffix == ".sources":
                out += parse_deb822_sources(f.read_text(errors="replace"))
    return out


def select_sources(sources: list[AptSource], codename: str) -> tuple[AptSource, tuple[AptSource, ...]]:
    """(the source debootstrap uses, every source the guest gets) for the host's release.

    The guest gets the sources of this release (``codename`` and ``codename-*`` suites, e.g.
    updates and security) that carry 'main'; debootstrap uses the first with the plain suite."""
    own = [s for s in sources if (s.suite == codename or s.suite.startswith(codename + "-"))
           and "main" in s.components]
    for s in own:
        if not URI_RE.match(s.uri):
            raise Arm64Error("apt sources", f"source URI {s.uri!r} is not an http(s) or file URI")
    base = [s for s in own if s.suite == codename]
    if not base:
        raise Arm64Error("apt sources", f"no 'deb' source for suite {codename!r} with component "
                         f"'main' in /etc/apt/sources.list or /etc/apt/sources.list.d/: the image is "
                         f"built from the host's own mirror; add one")
    return base[0], tuple(own)


def render_deb822(sources: tuple[AptSource, ...]) -> str:
    """The guest's /etc/apt/sources.list.d/debian.sources."""
    paras = []
    for s in sources:
        lines = ["Types: deb", f"URIs: {s.uri}", f"Suites: {s.suite}",
                 f"Components: {' '.join(s.components)}"]
        if s.signed_by:
            lines.append(f"Signed-By: {s.signed_by}")
        paras.append("\n".join(lines) + "\n")
    return "# written by splicebench when the image was built (the build host's sources)\n" + \
        "\n".join(paras)


def host_codename(os_release: str) -> str:
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", os_release, re.M)
    if not m:
        raise Arm64Error("apt sources", "no VERSION_CODENAME in /etc/os-release: the arm64 image is "
                         "built from the host's Debian release")
    return m.group(1)
