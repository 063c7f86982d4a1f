"""Progress display while a run goes: which server, which repetition, what is left, ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from splicebench.units import format_duration, format_ns, format_rate


class Progress:
    """One line per sample on stderr: its start, then its result on the same line."""

    def __init__(self, total: int, *, cells: int = 1, stream: TextIO | None = None, clock=time.monotonic):
        self.total = total
        self.cells = cells
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.done = 0
        self.durations: list[float] = []
        self._t0 = clock()
        self._open = False

    def eta_s(self) -> float | None:
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        return mean * (self.total - self.done)

    def start(self, sample, phase_total: int) -> None:
        eta = self.eta_s()
        left = self.total - self.done
        cell = f"cell {sample.cell.index + 1}/{self.cells} " if self.cells > 1 else ""
        text = (f"[{sample.seq + 1:>{len(str(self.total))}}/{self.total}] {cell}{sample.server.label:<10} "
                f"{sample.phase} {sample.repetition}/{phase_total}  "
                f"({left} left, ETA {format_duration(eta) if eta is not None else '?'}) ")
        self._write(text)
        self._open = True
        self._sample_t0 = self.clock()

    def end(self, status: str, row: dict) -> None:
        self.done += 1
        self.durations.append(self.clock() - self._sample_t0)
        if status == "ok":
            detail = format_rate(row.get("goodput_bytes_per_s") or float("nan"))
            wall = row.get("wall_s")
            if row.get("workload") == "crr" and row.get("conns_ok") and wall:
                detail = f"{row['conns_ok'] / wall:,.0f} connections/s"
            if row.get("workload") == "pingpong" and row.get("lat_p50_ns") is not None:
                detail += f", p50 {format_ns(row['lat_p50_ns'])}"
            msg = f"ok  {detail}"
        else:
            err = (row.get("error") or "").splitlines()[0:1]
            msg = f"{status.upper()}: {err[0] if err else ''}"
        self._write(msg + "\n")
        self._open = False

    def skipped(self, n: int, reason: str) -> None:
        if n:
            self._write(f"{n} samples not run: {reason}\n")

    def note(self, msg: str) -> None:
        if self._open:
            self._write("\n")
            self._open = False
        self._write(msg + "\n")

    def finish(self) -> None:
        if self._open:
            self._write("\n")
        self._write(f"{self.done} samples in {format_duration(self.clock() - self._t0)}\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass
