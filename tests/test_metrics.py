"""Parsers of program output and /proc/stat, on output captured from the real programs."""

from __future__ import annotations

from pathlib import Path

import pytest

from splicebench.results.metrics import (SAMPLE_COLUMNS, Row, byte_balance, client_failure, client_metrics, hist_percentile,
                                 host_cpu_delta, merge_hist, parse_client_output, parse_proc_stat,
                                 server_events, server_metrics)

pytestmark = pytest.mark.unit
DATA = Path(__file__).parent / "data"


def text(name: str) -> str:
    return (DATA / name).read_text()


def test_proc_stat_delta_by_hand():
    a = parse_proc_stat(text("proc-stat-a.txt"))
    b = parse_proc_stat(text("proc-stat-b.txt"))
    assert a.cpu["user"] == 44679 and a.cpu["softirq"] == 13584 and a.ctxt == 8706432
    d = host_cpu_delta(a, b, 100)
    # user 44724-44679=45, system 56246-56229=17, softirq 13585-13584=1 ticks; idle unchanged
    assert d["host_cpu_user_s"] == pytest.approx(0.45)
    assert d["host_cpu_sys_s"] == pytest.approx(0.17)
    assert d["host_cpu_softirq_s"] == pytest.approx(0.01)
    assert d["host_cpu_idle_s"] == pytest.approx(0.0)
    assert d["host_cpu_busy_s"] == pytest.approx(0.63)
    assert d["host_ctxt"] == 8708258 - 8706432


def test_proc_stat_without_cpu_line_is_an_error():
    with pytest.raises(ValueError):
        parse_proc_stat("intr 1 2 3\nctxt 5\n")


def test_client_stream_output():
    c = parse_client_output(text("client-stream-ok.json"))
    m = client_metrics([c])
    assert m["client_ok"] is True
    assert m["bytes_verified"] == 4 << 20 == m["bytes_expected"]
    assert m["lat_count"] == 1
    assert m["lat_p50_ns"] == c["latency_ns"]["p50"]
    assert m["goodput_bytes_per_s"] == c["goodput_bytes_per_s"]
    assert client_failure(c, 0, "") is None


def test_client_timeout_output_explains_the_failure():
    c = parse_client_output(text("client-pingpong-timeout.json"))
    why = client_failure(c, 1, text("client-pingpong-timeout.stderr.txt"))
    assert why == ("exit code 1; connection 0: timeout at offset 145408 (+1 more); "
                   "stderr: sb-client: 2 of 2 connections failed (first: conn 0: timeout at offset 145408)")
    assert client_metrics([c])["client_ok"] is False


def test_a_repeat_on_the_way_in_is_named():
    """A SOCKMAP echo server over veth (kernel 6.18) whose verdict program was handed a 45-segment skb
    twice: the client names the repeated stretch, the server's count shows it came in twice."""
    c = parse_client_output(text("client-sockmap-repeat.json"))
    why = client_failure(c, 1, "")
    assert ("data mismatch on connection 0 at offset 387328536 (expected 76, got 70; its bytes from offset "
            "387,263,376 again (65,160 bytes repeated), 14,480 bytes matching)") in why
    server = server_metrics(server_events(text("server-sockmap-repeat.jsonl")))
    pingpong = 100 * 64  # the ping-pong client that ran beside the bulk streams
    values = {**server, "bytes_sent": client_metrics([c])["bytes_sent"] + pingpong}
    assert byte_balance(values) == "the server counted 65,160 bytes in more than the clients sent"
    assert byte_balance({**values, "bytes_sent": values["server_bytes_in"]}) is None
    assert byte_balance({**values, "server_bytes_in": None}) is None


def test_client_without_output():
    assert parse_client_output("") is None
    assert client_failure(None, None, "") == "did not finish in time (killed); no JSON output"
    assert client_failure(None, -9, "") == "killed by signal 9; no JSON output"


def test_two_clients_merge():
    c = parse_client_output(text("client-pingpong-ok.json"))
    m = client_metrics([c, c])
    assert m["bytes_verified"] == 2 * c["bytes_verified"]
    assert m["conns_ok"] == 2
    assert m["lat_count"] == 2 * c["latency_ns"]["count"]
    assert m["lat_min_ns"] == c["latency_ns"]["min"]
    assert m["lat_mean_ns"] == pytest.approx(c["latency_ns"]["mean"])
    # The merged histogram of two identical runs has the same quantiles as one run's histogram.
    assert m["lat_p50_ns"] == hist_percentile(c["hist"]["buckets"], 0.5)
    lo, hi = next((lo, hi) for lo, hi, n in c["hist"]["buckets"] if lo <= c["latency_ns"]["p50"] < hi)
    assert lo <= m["lat_p50_ns"] <= hi


def test_histogram_percentile_by_hand():
    buckets = [[10, 20, 2], [20, 30, 6], [100, 200, 2]]
    assert hist_percentile(buckets, 0.1) == 15  # rank 1 of 10 -> first bucket
    assert hist_percentile(buckets, 0.5) == 25  # rank 5 -> second
    assert hist_percentile(buckets, 0.9) == 150  # rank 9 -> third
    assert merge_hist([buckets, [[20, 30, 1]]]) == [[10, 20, 2], [20, 30, 7], [100, 200, 2]]


def test_server_events():
    ev = server_events(text("server-sockmap.jsonl") + "not json\n")
    assert set(ev) == {"ready", "summary"}
    m = server_metrics(ev)
    assert m["server_bytes_in"] == m["server_bytes_out"] == 4 << 20
    assert m["server_pid"] == ev["ready"]["pid"]


def test_row_refuses_unknown_columns():
    r = Row().set(status="ok", server="naive")
    assert list(r.as_dict()) == SAMPLE_COLUMNS
    with pytest.raises(KeyError):
        r.set(throughput=1)


# Each captured client output through the parser and client_metrics, with values read off the file.
CAPTURED_CLIENTS = [
    ("client-stream-ok.json", dict(client_ok=True, conns_ok=1, conns_failed=0, bytes_sent=4194304,
                                   bytes_verified=4194304, bytes_expected=4194304, client_errors_total=0,
                                   wall_s=0.006222402, goodput_bytes_per_s=674065095.8, lat_count=1,
                                   lat_p50_ns=5576205, lat_max_ns=5576205, client_cpu_sys_s=0.005002)),
    ("client-pingpong-ok.json", dict(client_ok=True, conns_ok=1, conns_failed=0, bytes_sent=12800,
                                     bytes_verified=12800, bytes_expected=12800, client_errors_total=0,
                                     wall_s=0.017557983, goodput_bytes_per_s=729013.1, lat_count=200,
                                     lat_min_ns=18274, lat_p50_ns=19586, lat_p99_ns=1323321, lat_max_ns=9498500)),
    ("client-pingpong-timeout.json", dict(client_ok=False, conns_ok=0, conns_failed=2, bytes_sent=291008,
                                          bytes_verified=290880, bytes_expected=1280000000, client_errors_total=2,
                                          wall_s=0.300841244, lat_count=4545, lat_p90_ns=60504,
                                          client_cpu_user_s=0.003434, client_cpu_sys_s=0.044653)),
]


@pytest.mark.parametrize("name, expected", CAPTURED_CLIENTS, ids=[n for n, _ in CAPTURED_CLIENTS])
def test_captured_client_outputs_parse_to_their_values(name, expected):
    # As the runner reads them: the client's stdout, possibly after other lines.
    obj = parse_client_output("sb-client: starting\n" + text(name))
    assert obj is not None and obj["tool"] == "sb-client" and obj["format"] == 1
    m = client_metrics([obj])
    assert {k: m[k] for k in expected} == expected
