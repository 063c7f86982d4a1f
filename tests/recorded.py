"""The recorded runs in tests/data/runs/, and runs derived from them for other architectures.

RUN_A and RUN_B are two real runs of tests/data/runs/burst-small.yaml on this machine (x86_64);
RUN_MULTI is a real run of multiarch-small.yaml with servers on this machine and on the lab's
arm64 guest under QEMU (facts as detected there: aarch64, emulated); RUN_SWEEP is a real run of
sweep-small.yaml on this machine (ping-pong over message size x connection count). No native arm64
hardware is available here, so some architecture tests rewrite recorded host facts instead:
`as_other_arch` copies a run and says its host is an aarch64 machine (native or emulated);
`two_host_run` joins the samples of two runs into one run with two server hosts, the second
reporting aarch64 under QEMU emulation, as a run with a placement list on the lab's arm64 guest
would. Only facts and host names change; every sample, histogram and raw file is as recorded.
"""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

DATA = Path(__file__).parent / "data" / "runs"
RUN_A = DATA / "20261125T185321Z-f99079"
RUN_B = DATA / "20261125T185330Z-d3b04d"
# A real run of multiarch-small.yaml on this machine and the lab's emulated arm64 guest (QEMU TCG).
RUN_MULTI = DATA / "20261125T193149Z-6e2073"
# A real run of sweep-small.yaml on this machine: msg_size 64B / 1KiB / 16KiB x conns 1 / 4.
RUN_SWEEP = DATA / "20261126T220005Z-24418c"
SCENARIO = DATA / "burst-small.yaml"

# The facts facts.py records (virt, emulated, virt_how from detect_virtualization).
ARM_NATIVE = {"arch": "aarch64", "cpu_model": "Neoverse-N1", "cpu_count": 4, "cpu_max_mhz": 3000.0,
              "virtualization": "none", "virt": "none", "emulated": False, "virt_how": "systemd-detect-virt --vm: none",
              "hostname": "arm-box"}
ARM_EMULATED = {"arch": "aarch64", "cpu_model": None, "cpu_count": 2, "virtualization": "qemu", "virt": "qemu",
                "emulated": True, "hostname": "arm64-guest",
                "virt_how": "systemd-detect-virt --vm: qemu; QEMU without KVM: every instruction emulated (TCG)"}


def _load(run: Path) -> tuple[dict, list[dict], list[str]]:
    manifest = json.loads((run / "manifest.json").read_text())
    with open(run / "samples.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        cols = list(reader.fieldnames or [])
    return manifest, rows, cols


def _write(dest: Path, manifest: dict, rows: list[dict], cols: list[str]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with open(dest / "samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return dest


def as_other_arch(src: Path, dest_root: Path, facts: dict, run_id: str) -> Path:
    """A copy of run `src` whose server host reports `facts` (merged over the recorded ones)."""
    manifest, rows, cols = _load(src)
    dest = dest_root / run_id
    shutil.copytree(src / "raw", dest / "raw")
    manifest = copy.deepcopy(manifest)
    manifest["run_id"] = run_id
    for host in manifest["hosts"].values():
        host.update(facts)
    for r in rows:
        r["run_id"] = run_id
    return _write(dest, manifest, rows, cols)


def two_host_run(first: Path, second: Path, dest_root: Path, run_id: str, second_host: str = "arm64",
                 second_facts: dict | None = None) -> Path:
    """One run whose samples are `first`'s on host local and `second`'s on host `second_host`."""
    m1, rows1, cols = _load(first)
    m2, rows2, _ = _load(second)
    dest = dest_root / run_id
    (dest / "raw").mkdir(parents=True)
    manifest = copy.deepcopy(m1)
    manifest["run_id"] = run_id
    facts = copy.deepcopy(m2["hosts"]["local"])
    facts.update(second_facts if second_facts is not None else ARM_EMULATED)
    facts["name"] = second_host
    manifest["hosts"][second_host] = facts
    manifest["build"][second_host] = m2["build"]["local"]
    out = []
    for r in rows1:
        out.append({**r, "run_id": run_id})
        for rel in r["raw_files"].split():
            shutil.copy(first / rel, dest / rel)
    n = len(rows1)
    for r in rows2:
        sid = f"{second_host}-{r['sample_id']}"
        files = []
        for rel in r["raw_files"].split():
            new = f"raw/{second_host}-{Path(rel).name}"
            shutil.copy(second / rel, dest / new)
            files.append(new)
        out.append({**r, "run_id": run_id, "sample_id": sid, "seq": str(int(r["seq"]) + n),
                    "server_host": second_host, "client_hosts": second_host, "raw_files": " ".join(files)})
    manifest["counts"] = {"ok": len(out)}
    return _write(dest, manifest, out, cols)
