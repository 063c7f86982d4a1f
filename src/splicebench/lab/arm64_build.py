"""Getting the arm64 image: from the cache, or built once (about 5 minutes, as root) and published
atomically.

A build runs in a temp directory ``.tmp-<key>-<random>`` beside the cache entries (arm64_build_steps
does the work there) and is renamed to ``<key>/`` when complete, so a failed or interrupted build
leaves no partial image and no mounts, only ``<key>.failed.log``. A lock file makes a second build of
the same recipe wait for the first; a temp directory whose build process is gone (SIGKILL) is removed
by the next build, and so are the images of older recipes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Iterator

from splicebench.lab.arm64_build_steps import Builder
from splicebench.lab.arm64_host import Arm64Error, Log, remove_tree, require_root, stderr_log
from splicebench.lab.arm64_image import Image, Recipe, cache_root, cached_image, host_recipe
from splicebench.util.files import utc_now_iso
from splicebench.util.procs import pid_alive
from splicebench.util.signals import deferred_interrupts, interrupt_on_terminate


def ensure_image(recipe: Recipe | None = None, *, root: Path | None = None,
                 log: Log = stderr_log) -> tuple[Image, bool]:
    """The cached image of recipe (default: this host's), built first if missing. (image, built)."""
    require_root("build the arm64 image")
    recipe = recipe or host_recipe()
    root = root or cache_root()
    img = cached_image(recipe, root)
    if img is not None:
        return img, False
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{recipe.key}.lock", log):
        img = cached_image(recipe, root)  # built by another process while we waited
        if img is not None:
            return img, False
        _remove_stale_builds(root, log)
        img = build_image(recipe, root, log=log)
        _remove_other_images(root, keep=img.key, log=log)
        return img, True


def build_image(recipe: Recipe, root: Path, *, log: Log = stderr_log) -> Image:
    """Build the image of recipe into root/<key>/ (atomically); every failure names its step.

    Ctrl-C, SIGTERM or a failure stop the step's processes and remove the temp dir and its
    mounts; SIGKILL leaves them to the next build (`_remove_stale_builds`)."""
    with interrupt_on_terminate():
        t0 = time.monotonic()
        tmp = root / f".tmp-{recipe.key}-{secrets.token_hex(3)}"
        tmp.mkdir(mode=0o700)  # the disk holds the guest's private host key
        (tmp / "pid").write_text(str(os.getpid()))
        b = Builder(recipe, tmp, log)
        failed_log = root / f"{recipe.key}.failed.log"
        try:
            b.run_steps()
            final = _publish(b, root, build_seconds=time.monotonic() - t0)
        except BaseException as e:
            with deferred_interrupts():
                _discard(b, failed_log)
            if isinstance(e, Arm64Error) and failed_log.exists():
                raise Arm64Error(e.step, f"{e.detail}\n(full log: {failed_log})") from None
            raise
        failed_log.unlink(missing_ok=True)
        log(f"arm64 image: built in {time.monotonic() - t0:.0f} s: {final.dir}")
        return final


def _publish(b: Builder, root: Path, build_seconds: float) -> Image:
    """recipe.json (written last: it marks the image complete), then the temp dir renamed to <key>."""
    recipe, tmp = b.r, b.tmp
    (tmp / "recipe.json").write_text(json.dumps(
        {"recipe": recipe.to_dict(), "key": recipe.key, "built_at": utc_now_iso("seconds"),
         "build_seconds": round(build_seconds, 1), **b.facts}, indent=1) + "\n")
    (tmp / "pid").unlink()
    final = root / recipe.key
    if final.exists():  # an incomplete leftover of an older layout: replace it
        remove_tree(final)
    os.rename(tmp, final)
    return Image(final)


def _discard(b: Builder, failed_log: Path) -> None:
    """After a failed build: keep its log as failed_log, unmount, remove the temp dir."""
    if b.build_log.exists():
        with contextlib.suppress(OSError):
            shutil.copyfile(b.build_log, failed_log)
    b.unmount()
    remove_tree(b.tmp)


@contextlib.contextmanager
def _locked(path: Path, log: Log) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"arm64 image: another process is building it; waiting ({path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_other_images(root: Path, keep: str, log: Log) -> None:
    """Images of older recipes (a guest still running on one keeps its open files)."""
    for d in root.iterdir():
        if d.is_dir() and re.fullmatch(r"[0-9a-f]{16}", d.name) and d.name != keep:
            log(f"arm64 image: removing the image of an older recipe: {d}")
            remove_tree(d)
            (root / f"{d.name}.failed.log").unlink(missing_ok=True)
            (root / f"{d.name}.lock").unlink(missing_ok=True)


def _remove_stale_builds(root: Path, log: Log) -> None:
    """Temp dirs of builds whose process is gone (killed with SIGKILL): unmount, then remove."""
    for d in root.glob(".tmp-*"):
        try:
            pid = int((d / "pid").read_text())
        except (OSError, ValueError):
            pid = 0
        if pid and pid_alive(pid):
            continue
        log(f"arm64 image: removing {d} left by an interrupted build")
        remove_tree(d)
