"""The report's connections section: how many connections each server held and how its workers shared
them, how many threads the client ran, and what TCP_INFO said of the connections as they ended (pure).

From samples.csv's measured ok samples: server_connections and server_worker_connections (the summary
line of the servers with workers), client_threads, and the tcp_* columns (sb-client's tcp_info:
retransmits summed, RTT, RTT variance, congestion window and delivery rate as medians over samples of
each sample's median over connections). Also the method paragraph on threads, workers and CPU
placement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from splicebench.registry import PROCESSES, WORKERS
from splicebench.report import format as fmt


@dataclass(frozen=True)
class ConnRowView:
    cell: str
    server: str
    connections: str  # median per sample
    per_worker: str  # e.g. "510+490" (the last measured sample), "" without workers
    client_threads: str
    retrans: str  # summed over the measured samples, of how many connections
    rtt_us: str
    rttvar_us: str
    snd_cwnd: str
    delivery_rate: str


@dataclass(frozen=True)
class ConnView:
    rows: list[ConnRowView]
    any_retrans: bool


def _median(values: pd.Series) -> float | None:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return float(v.median()) if len(v) else None


def _int(x: float | None) -> str:
    return fmt.MISSING if x is None or math.isnan(x) else f"{x:,.0f}"


def build(samples: pd.DataFrame, show_cells: bool) -> ConnView | None:
    """One row per (cell, server) of the measured ok samples; None when no sample has TCP_INFO."""
    if samples.empty or "tcp_conns" not in samples:
        return None
    ok = samples[(samples["phase"] == "measured") & (samples["status"] == "ok")]
    if ok.empty or pd.to_numeric(ok["tcp_conns"], errors="coerce").dropna().empty:
        return None
    rows = []
    for (_, server), g in ok.sort_values("seq").groupby(["cell", "server"], sort=False):
        retrans = pd.to_numeric(g["tcp_retrans"], errors="coerce").dropna()
        with_retrans = pd.to_numeric(g["tcp_conns_with_retrans"], errors="coerce").dropna()
        tcp_conns = pd.to_numeric(g["tcp_conns"], errors="coerce").dropna()
        workers = [w for w in g["server_worker_connections"].dropna().astype(str) if w]
        rate = _median(g["tcp_delivery_rate_bytes_per_s"])
        rows.append(ConnRowView(
            cell=str(g["cell_label"].iloc[0]) if show_cells else "",
            server=str(server),
            connections=_int(_median(g["server_connections"])),
            per_worker=workers[-1] if workers and "+" in workers[-1] else "",
            client_threads=_int(_median(g["client_threads"])),
            retrans=(f"{int(retrans.sum()):,} in {int(with_retrans.sum()):,} of {int(tcp_conns.sum()):,} "
                     f"connections") if len(retrans) else fmt.MISSING,
            rtt_us=_int(_median(g["tcp_rtt_us"])),
            rttvar_us=_int(_median(g["tcp_rttvar_us"])),
            snd_cwnd=_int(_median(g["tcp_snd_cwnd"])),
            delivery_rate=fmt.MISSING if rate is None else fmt.throughput(rate / (1 << 30)),
        ))
    any_retrans = bool(pd.to_numeric(ok["tcp_retrans"], errors="coerce").fillna(0).sum() > 0)
    return ConnView(rows, any_retrans)


def method(scenario: dict[str, Any]) -> str:
    """Threads, workers and CPU placement of this run, as one paragraph."""
    cpus = scenario.get("cpus") or {}
    where = ("CPU placement: " + "; ".join(f"{role} on CPU(s) {lst}" for role, lst in cpus.items())
             + " (servers, proxies, peers and the backend under taskset -c; sb-client pins thread t to the "
               "t-th CPU of its list)") if cpus else "No CPU placement: the scheduler chose where every program ran"
    return ("Threads: sb-client spreads its connections over 'threads' threads, each with its own epoll loop "
            "(a thread that owns one ping-pong connection uses blocking reads and writes instead); its "
            "latency percentiles come from all threads' samples merged. The naive and splice echo servers and "
            f"proxies run '{WORKERS}' threads (default 1), or processes with '{PROCESSES}: true' (each its own "
            "descriptor limit), each with its own SO_REUSEPORT listener, epoll loop and connections; NGINX and "
            "HAProxy run their own workers. The SOCKMAP loaders' thread only accepts and inserts sockets (the "
            "SOCKMAP echo server's workers are processes that do that, to hold more descriptors): the kernel "
            "moves their bytes in softirq and its backlog worker, so their data path shows in host CPU "
            "rather than in a thread count. "
            f"{where}. TCP figures are TCP_INFO of each client connection read as it "
            "ended (on loopback a retransmit is a finding, not noise).")
