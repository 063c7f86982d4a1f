"""Scenario validation: good files load, every bad input gets its one exact message, the published
JSON Schema matches the validator."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from splicebench import scenario
from splicebench.errors import ScenarioError
from splicebench.registry import ACCEL_SEND_ZC, ACCEL_SK_SKB, ACCEL_SPLICE, SERVERS, WORKLOAD_FIELDS, WORKLOADS
from splicebench.scenario.model import MATRIX_SERVER_KEYS
from splicebench.scenario.validation import BACKEND_KEYS, PLACEMENT_KEYS, REPETITION_KEYS, SERVER_KEYS, TOP_KEYS

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "scenarios"
OK = "servers: [naive]\nworkload: {type: stream}\n"
SIZE = "a size >= 1B, e.g. 64, '64B', '128KiB', '100MiB', '1GiB'"
SIZE0 = "a size >= 0B, e.g. 64, '64B', '128KiB', '100MiB', '1GiB'"
NAME = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
CI = "a fraction of the median greater than 0 and at most 1, e.g. 0.05 for 5 %"
DUR = "seconds as a number, or a string like '500ms', '90s', '2m', '1h'"
TOP = ("name, description, servers, workload, repetitions, baseline, stop_on_failure, profile, timeout, seed, "
       "matrix, placement, backend, cpus, sysctls, accelerate")
KINDS = ("haproxy, haproxy-splice, haproxy-splice-auto, naive, nginx, proxy-naive, proxy-sockmap, proxy-splice, "
         "proxy-uring, sockmap, splice, uring")
PROXIES = "proxy-naive, proxy-splice, proxy-sockmap, proxy-uring, nginx, haproxy, haproxy-splice-auto, haproxy-splice"

# (YAML text, exact message, whether the JSON Schema can reject it too)
SYSNAME = ("a sysctl name: abi, debug, dev, fs, kernel, net, user, vm then dot-separated parts of letters, digits, "
           "'_' or '-', e.g. net.ipv4.tcp_rmem")
SYSVAL = ("an integer, or text of up to 16 words of letters, digits and _.:,+- separated by spaces, e.g. 4194304 or "
          "'4096 131072 6291456'")

BAD = [
    (OK + "sysctls: {rmem_max: 1}",
     f"bad.yaml: sysctls.rmem_max: not a sysctl name; found 'rmem_max', allowed: {SYSNAME}", True),
    (OK + "sysctls: {net.core.rmem_max: '1; reboot'}",
     f"bad.yaml: sysctls.net.core.rmem_max: not a sysctl value; found '1; reboot', allowed: {SYSVAL}", True),
    (OK + "sysctls: {net.core.rmem_max: true}",
     f"bad.yaml: sysctls.net.core.rmem_max: not a sysctl value; found true, allowed: {SYSVAL}", True),
    (OK + "sysctls: {}",
     "bad.yaml: sysctls: not a non-empty mapping; found an empty mapping, allowed: a mapping of sysctl name -> "
     "value, e.g. {net.core.rmem_max: 4194304}", True),
    (OK + "sysctls: {net.core.rmem_max: 1}\nmatrix: {net.core.rmem_max: [2]}",
     "bad.yaml: matrix.net.core.rmem_max: also set in sysctls.net.core.rmem_max; found 'net.core.rmem_max', "
     "allowed: each setting in one place", False),
    (OK + "matrix: {net.ipv4.tcp_rmem: ['4096 1 2', '4096  1 2']}",
     "bad.yaml: matrix.net.ipv4.tcp_rmem[1]: duplicate value; found '4096  1 2', allowed: distinct values", False),
    (OK + "matrix: {net.core.rmem_max: [$(id)]}",
     f"bad.yaml: matrix.net.core.rmem_max[0]: not a sysctl value; found '$(id)', allowed: {SYSVAL}", True),
    (OK + "matrix: {net..x: [1]}",
     f"bad.yaml: matrix.net..x: not a sysctl name; found 'net..x', allowed: {SYSNAME}", True),
    (OK + "repetition: {measured: 3}",
     f"bad.yaml: repetition: unknown key; found 'repetition', allowed: {TOP} (did you mean 'repetitions'?)", True),
    ("servers: [naive]\nworkload: {type: stream, byte: 1MiB}",
     "bad.yaml: workload.byte: unknown key; found 'byte', allowed: type, conns, bytes, chunk, threads, source_addrs, procs, stall, hold (did you mean 'bytes'?)",
     True),
    ("servers: [naive]\nworkload: {type: stream, msg_size: 64B}",
     "bad.yaml: workload.msg_size: does not apply to workload type 'stream'; found 'msg_size', "
     "allowed: type, conns, bytes, chunk, threads, source_addrs, procs, stall, hold", True),
    ("servers: [naive]\nworkload: {type: stram}",
     "bad.yaml: workload.type: unknown workload; found 'stram', allowed: burst, crr, latency-under-load, pingpong, stream "
     "(did you mean 'stream'?)", True),
    ("servers: [naive]\nworkload: {bytes: 1MiB}",
     "bad.yaml: workload.type: missing; found nothing, allowed: burst, crr, latency-under-load, pingpong, stream", True),
    ("servers: [naive]\nworkload: [stream]",
     "bad.yaml: workload: not a mapping; found a list, allowed: a mapping with 'type' and workload parameters", True),
    ("servers: [naive, splise]\nworkload: {type: stream}",
     f"bad.yaml: servers[1]: unknown server; found 'splise', allowed: {KINDS} (did you mean 'splice'?)",
     True),
    ("servers: [{name: epoll}]\nworkload: {type: stream}",
     f"bad.yaml: servers[0].name: unknown server; found 'epoll', allowed: {KINDS}", True),
    ("servers: [{name: naive, options: {bufsize: 4096}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.bufsize: unknown option for server 'naive'; found 'bufsize', "
     "allowed: buf, processes, rcvbuf, sndbuf, workers (did you mean 'buf'?)", True),
    ("servers: [{name: sockmap, options: {map: array}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.map: not a valid choice; found 'array', allowed: sockhash, sockmap", True),
    ("servers: [{name: uring, options: {mode: aio}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.mode: not a valid choice; found 'aio', allowed: recv-send, splice, send-zc", True),
    ("servers: [{name: uring, options: {queue_depth: 40000}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.queue_depth: too large for the program; found 40000, allowed: an integer "
     "from 1 to 32768", True),
    ("servers: [{name: uring, options: {buffers: 0}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.buffers: must be positive; found 0, allowed: an integer >= 1", True),
    ("servers: [{name: uring, options: {buffer_size: 0}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.buffer_size: must be positive; found 0, allowed: a size >= 1B, e.g. 64, "
     "'64B', '128KiB', '100MiB', '1GiB'", True),
    ("servers: [{name: sockmap, options: {parser: yes please}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.parser: not a boolean; found 'yes please', allowed: true or false", True),
    ("servers: naive\nworkload: {type: stream}",
     f"bad.yaml: servers: not a list; found 'naive', allowed: a non-empty list of server names ({KINDS}) "
     "or mappings with keys name, label, options", True),
    ("servers: []\nworkload: {type: stream}",
     f"bad.yaml: servers: empty list; found an empty list, allowed: a non-empty list of server names ({KINDS}) "
     "or mappings with keys name, label, options", True),
    # proxy scenarios (a `backend` section)
    ("servers: [proxy-naive]\nworkload: {type: stream}",
     "bad.yaml: servers[0]: a proxy needs a 'backend' section; found 'proxy-naive', allowed: echo servers, "
     "or add e.g. backend: {name: naive}", False),
    ("servers: [proxy-naive, splice]\nbackend: {name: naive}\nworkload: {type: stream}",
     "bad.yaml: servers[1]: not a proxy (with a 'backend' section the servers are proxies); found 'splice', "
     f"allowed: {PROXIES} (did you mean 'proxy-splice'?)", False),
    ("servers: [nginx]\nbackend: {name: haproxy}\nworkload: {type: stream}",
     "bad.yaml: backend.name: not an echo server; found 'haproxy', allowed: naive, splice, sockmap, uring", True),
    ("servers: [nginx]\nbackend: {options: {buf: 1MiB}}\nworkload: {type: stream}",
     "bad.yaml: backend.name: missing; found nothing, allowed: naive, splice, sockmap, uring", True),
    ("servers: [nginx]\nbackend: {name: naive, options: {pipe_size: 1MiB}}\nworkload: {type: stream}",
     "bad.yaml: backend.options.pipe_size: unknown option for server 'naive'; found 'pipe_size', "
     "allowed: buf, processes, rcvbuf, sndbuf, workers", False),
    ("servers: [nginx]\nbackend: {name: naive, host: lab9}\nworkload: {type: stream}",
     "bad.yaml: backend.host: unknown host; found 'lab9', allowed: local", False),
    ("servers: [{name: splice, label: direct}, nginx]\nbackend: {name: naive}\nworkload: {type: stream}",
     "bad.yaml: servers[0]: the label 'direct' is the backend without a proxy; found 'splice', allowed: "
     "name 'naive' with the backend's options, or another label", False),
    ("servers: [{name: nginx, options: {workers: 0}}]\nbackend: {name: naive}\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.workers: must be positive; found 0, allowed: an integer >= 1", True),
    ("workload: {type: stream}",
     "bad.yaml: servers: missing; found nothing, allowed: a non-empty list of servers, e.g. [naive, splice, sockmap]",
     True),
    ("servers: [naive, naive]\nworkload: {type: stream}",
     "bad.yaml: servers[1]: duplicate server label; found 'naive', allowed: each label once (give repeated "
     "servers a distinct 'label')", False),
    ("servers: [naive]\nworkload: {type: stream, bytes: 100MB2}",
     f"bad.yaml: workload.bytes: not a size; found '100MB2', allowed: {SIZE}", True),
    ("servers: [naive]\nworkload: {type: stream, bytes: 10 MiBs}",
     f"bad.yaml: workload.bytes: not a size; found '10 MiBs', allowed: {SIZE}", True),
    ("servers: [naive]\nworkload: {type: stream, bytes: 1.5B}",
     f"bad.yaml: workload.bytes: not a size; found '1.5B', allowed: {SIZE}", False),
    ("servers: [naive]\nworkload: {type: stream, bytes: true}",
     f"bad.yaml: workload.bytes: not a size; found true, allowed: {SIZE}", True),
    ("servers: [naive]\nworkload: {type: stream, chunk: 0}",
     f"bad.yaml: workload.chunk: must be positive; found 0, allowed: {SIZE}", True),
    ("servers: [naive]\nworkload: {type: stream, bytes: -1}",
     f"bad.yaml: workload.bytes: must not be negative; found -1, allowed: {SIZE}", True),
    ("servers: [naive]\nworkload: {type: stream, conns: 0}",
     "bad.yaml: workload.conns: must be positive; found 0, allowed: an integer >= 1", True),
    ("servers: [naive]\nworkload: {type: stream, conns: -3}",
     "bad.yaml: workload.conns: must be positive; found -3, allowed: an integer >= 1", True),
    ("servers: [naive]\nworkload: {type: stream, conns: four}",
     "bad.yaml: workload.conns: not an integer; found 'four', allowed: an integer >= 1", True),
    ("servers: [naive]\nworkload: {type: stream, conns: 1.5}",
     "bad.yaml: workload.conns: not an integer; found 1.5, allowed: an integer >= 1", True),
    (OK + "repetitions: {measured: 0}",
     "bad.yaml: repetitions.measured: must be positive; found 0, allowed: an integer >= 1", True),
    (OK + "repetitions: {warmup: -1}",
     "bad.yaml: repetitions.warmup: must be at least 0; found -1, allowed: an integer >= 0", True),
    (OK + "repetitions: 5",
     "bad.yaml: repetitions: not a mapping; found 5, allowed: a mapping with keys warmup, measured", True),
    (OK + "matrix: {}",
     "bad.yaml: matrix: empty matrix; found an empty mapping, allowed: a mapping of parameter -> non-empty list "
     "of values; parameters: conns, bytes, chunk, threads, source_addrs, procs, stall, hold, sndbuf, rcvbuf, workers, or a sysctl name", True),
    ("servers: [naive]\nworkload: {type: stream, threads: 0}",
     "bad.yaml: workload.threads: must be positive; found 0, allowed: an integer >= 1", True),
    ("servers: [naive]\nworkload: {type: stream, source_addrs: 70000}",
     "bad.yaml: workload.source_addrs: too large for the program; found 70000, allowed: an integer from 0 to 65536",
     True),
    ("servers: [uring]\nworkload: {type: stream}\nmatrix: {workers: [1, 2]}",
     "bad.yaml: matrix.workers: none of the servers has worker threads; found 'workers', allowed: servers with a "
     "workers option: naive, splice, sockmap, proxy-naive, proxy-splice, nginx, haproxy, haproxy-splice-auto, "
     "haproxy-splice", False),
    ("servers: [{name: naive, options: {processes: 2}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.processes: not a boolean; found 2, allowed: true or false", True),
    ("servers: [naive]\nworkload: {type: stream, procs: 300}",
     "bad.yaml: workload.procs: too large for the program; found 300, allowed: an integer from 1 to 256", True),
    ("servers: [naive]\nworkload: {type: pingpong, stall: 20000000}",
     "bad.yaml: workload.stall: too large for the program; found 20000000, allowed: an integer from 0 to 10000000",
     True),
    ("servers: [naive]\nworkload: {type: pingpong, hold: 2}",
     "bad.yaml: workload.hold: too large for the program; found 2, allowed: an integer from 0 to 1", True),
    ("servers: [naive]\nworkload: {type: crr, hold: 1}",
     "bad.yaml: workload.hold: does not apply to workload type 'crr'; found 'hold', allowed: type, conns, msg_size, "
     "transactions, threads, source_addrs, procs, stall", True),
    ("servers: [naive, sockmap]\nworkload: {type: stream}\nmatrix: {workers: [1, 300]}",
     "bad.yaml: matrix.workers[1]: too large for the program; found 300, allowed: an integer from 1 to 256", True),
    ("servers: [{name: proxy-naive, options: {upstream_sources: 0}}]\nbackend: {name: naive}\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.upstream_sources: must be positive; found 0, allowed: an integer >= 1", True),
    (OK + "cpus: 3",
     "bad.yaml: cpus: not a mapping; found 3, allowed: a mapping of server, client to a CPU list like '0,2-3'", True),
    (OK + "cpus: {server: 0-x}",
     "bad.yaml: cpus.server: not a CPU list; found '0-x', allowed: a CPU list like '0,2-3' or one CPU number "
     "(CPUs 0 to 1023)", True),
    (OK + "cpus: {backend: 1}",
     "bad.yaml: cpus.backend: unknown key; found 'backend', allowed: server, client", False),
    (OK + "cpus: {client: 1024}",
     "bad.yaml: cpus.client: not a CPU list; found 1024, allowed: a CPU list like '0,2-3' or one CPU number "
     "(CPUs 0 to 1023)", True),
    (OK + "matrix: {conns: []}",
     "bad.yaml: matrix.conns: empty list; found an empty list, allowed: a non-empty list of values", True),
    (OK + "matrix: {conns: 4}",
     "bad.yaml: matrix.conns: not a list; found 4, allowed: a non-empty list of values", True),
    (OK + "matrix: {conns: [1, 1]}",
     "bad.yaml: matrix.conns[1]: duplicate value; found 1, allowed: distinct values", True),
    ("servers: [naive]\nworkload: {type: pingpong}\nmatrix: {msgsize: [64B]}",
     "bad.yaml: matrix.msgsize: unknown matrix key; found 'msgsize', allowed: conns, msg_size, round_trips, "
     "threads, source_addrs, procs, stall, hold, sndbuf, rcvbuf, workers (did you mean 'msg_size'?)", True),
    (OK + "matrix: {servers: [naive, splice]}",
     "bad.yaml: matrix.servers: servers cannot be a matrix key; found 'servers', allowed: conns, bytes, chunk, "
     "threads, source_addrs, procs, stall, hold, sndbuf, rcvbuf, workers (every server in 'servers' runs at every matrix point)", True),
    ("servers: [naive]\nworkload: {type: pingpong}\nmatrix: {msg_size: [64B, big]}",
     f"bad.yaml: matrix.msg_size[1]: not a size; found 'big', allowed: {SIZE}", True),
    (OK + "matrix: {msg_size: [64B]}",
     "bad.yaml: matrix.msg_size: does not apply to workload type 'stream'; found 'msg_size', allowed: conns, "
     "bytes, chunk, threads, source_addrs, procs, stall, hold, sndbuf, rcvbuf, workers", False),
    ("servers: [naive]\nworkload: {type: stream, conns: 2}\nmatrix: {conns: [1, 8]}",
     "bad.yaml: matrix.conns: also set in workload.conns; found 'conns', allowed: each parameter in one place",
     False),
    ("servers: [naive, splice]\nworkload: {type: stream}\nbaseline: epoll",
     "bad.yaml: baseline: not one of the scenario's servers; found 'epoll', allowed: naive, splice", False),
    (OK + "timeout: soon", f"bad.yaml: timeout: not a duration; found 'soon', allowed: {DUR}", True),
    (OK + "timeout: 0", f"bad.yaml: timeout: must be positive; found 0, allowed: {DUR}", True),
    (OK + "stop_on_failure: maybe",
     "bad.yaml: stop_on_failure: not a boolean; found 'maybe', allowed: true or false", True),
    (OK + "profile: 1",
     "bad.yaml: profile: not a boolean; found 1, allowed: true or false", True),
    (OK + "seed: -2", "bad.yaml: seed: must be at least 0; found -2, allowed: an integer >= 0", True),
    ("name: my scenario\n" + OK,
     "bad.yaml: name: not a valid name; found 'my scenario', allowed: 1-64 letters, digits, '.', '_' or '-', "
     "starting with a letter or digit", True),
    (OK + "placement: {server: db1}",
     "bad.yaml: placement.server: unknown host; found 'db1', allowed: local", False),
    (OK + "placement: {clients: []}",
     "bad.yaml: placement.clients: empty list; found an empty list, allowed: a non-empty list of hosts (local)",
     True),
    ("servers: [naive\nworkload: {type: stream}",
     "bad.yaml: line 2, column 9: not valid YAML; found expected ',' or ']', but got ':', allowed: YAML text", None),
    (OK + "servers: [splice]",
     "bad.yaml: line 3: duplicate key; found 'servers' twice in one mapping, allowed: each key once", None),
    ("", f"bad.yaml: (top level): empty file; found nothing, allowed: a mapping with keys {TOP}", None),
    ("- naive\n- splice", f"bad.yaml: (top level): not a mapping; found a list, allowed: a mapping with keys {TOP}",
     True),
    (OK + "description: 5", "bad.yaml: description: not a string; found 5, allowed: text", True),
    (OK + "placement: []",
     "bad.yaml: placement: empty list; found an empty list, allowed: a mapping with keys server, clients, or a "
     "non-empty list of them", True),
    ("servers: [nginx]\nbackend: naive\nworkload: {type: stream}",
     "bad.yaml: backend: not a mapping; found 'naive', allowed: a mapping with keys name, options, host", True),
    ("servers: [{name: naive, label: 'x; rm -rf /'}]\nworkload: {type: stream}",
     f"bad.yaml: servers[0].label: not a valid name; found 'x; rm -rf /', allowed: {NAME}", True),
    ("servers: [{name: naive, options: 5}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options: not a mapping; found 5, allowed: buf, processes, rcvbuf, sndbuf, workers", True),
    (OK + "repetitions: {min: 3}",
     "bad.yaml: repetitions.min: only applies with repetitions.target_ci_width; found 3, allowed: measured: N for "
     "a fixed count, or min, max and target_ci_width for adaptive repetitions", False),
    (OK + "repetitions: {target_ci_width: 0.1, max: 0}",
     "bad.yaml: repetitions.max: must be positive; found 0, allowed: an integer >= 1", True),
    (OK + "repetitions: {target_ci_width: 1.5}",
     f"bad.yaml: repetitions.target_ci_width: out of range; found 1.5, allowed: {CI}", True),
    ("servers: [nginx]\nbackend: {name: naive, options: 3}\nworkload: {type: stream}",
     "bad.yaml: backend.options: not a mapping; found 3, allowed: buf, processes, rcvbuf, sndbuf, workers", True),
    ("servers: [naive]\nworkload: {type: pingpong, round_trips: 0}",
     "bad.yaml: workload.round_trips: must be positive; found 0, allowed: an integer >= 1", True),
    ("servers: [naive]\nworkload: {type: crr, transactions: 0}",
     "bad.yaml: workload.transactions: must be positive; found 0, allowed: an integer >= 1", True),
    ("servers: [naive]\nworkload: {type: latency-under-load, bulk_conns: 0}",
     "bad.yaml: workload.bulk_conns: must be positive; found 0, allowed: an integer >= 1", True),
    ("servers: [naive]\nworkload: {type: burst, burst_size: 0}",
     f"bad.yaml: workload.burst_size: must be positive; found 0, allowed: {SIZE}", True),
    ("servers: [naive]\nworkload: {type: burst, bursts: many}",
     "bad.yaml: workload.bursts: not an integer; found 'many', allowed: an integer >= 1", True),
    (OK + "matrix: {sndbuf: [-1]}", f"bad.yaml: matrix.sndbuf[0]: must not be negative; found -1, allowed: {SIZE0}",
     True),
    ("servers: [{name: naive, options: {rcvbuf: 4MiB}}]\nworkload: {type: stream}\nmatrix: {rcvbuf: [0, 1MiB]}",
     "bad.yaml: matrix.rcvbuf: also set in the options of server 'naive'; found 'rcvbuf', allowed: each parameter "
     "in one place", False),
    ("servers: [{name: naive, options: {sndbuf: big}}]\nworkload: {type: stream}",
     f"bad.yaml: servers[0].options.sndbuf: not a size; found 'big', allowed: {SIZE0}", True),
    ("servers: [{name: naive, options: {rcvbuf: -4}}]\nworkload: {type: stream}",
     f"bad.yaml: servers[0].options.rcvbuf: must not be negative; found -4, allowed: {SIZE0}", True),
    ("servers: [{name: naive, options: {buf: 0}}]\nworkload: {type: stream}",
     f"bad.yaml: servers[0].options.buf: must be positive; found 0, allowed: {SIZE}", True),
    ("servers: [{name: splice, options: {pipe_size: 1KiB}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.pipe_size: too small; found '1KiB', allowed: a size >= 4KiB, e.g. 64, '64B', "
     "'128KiB', '100MiB', '1GiB'", False),
    ("servers: [{name: sockmap, options: {max_conns: 0}}]\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.max_conns: must be positive; found 0, allowed: an integer >= 1", True),
    ("servers: [{name: nginx, options: {buffer: 512}}]\nbackend: {name: naive}\nworkload: {type: stream}",
     "bad.yaml: servers[0].options.buffer: too small; found 512, allowed: a size >= 1KiB, e.g. 64, '64B', "
     "'128KiB', '100MiB', '1GiB'", True),
    # SOCKMAP acceleration: the modes, and the programs that cannot be correct with it (registry).
    (OK + "accelerate: sk_msg", "bad.yaml: accelerate: not a list; found 'sk_msg', allowed: a non-empty list of "
     "none, sk_msg, e.g. [none, sk_msg]", True),
    (OK + "accelerate: []", "bad.yaml: accelerate: empty list; found an empty list, allowed: a non-empty list of none, sk_msg, "
     "e.g. [none, sk_msg]", True),
    (OK + "accelerate: [none, skmsg]", "bad.yaml: accelerate[1]: unknown mode; found 'skmsg', allowed: none, sk_msg "
     "(did you mean 'sk_msg'?)", True),
    (OK + "accelerate: [sk_msg, sk_msg]", "bad.yaml: accelerate[1]: duplicate mode; found 'sk_msg', allowed: each "
     "mode once", True),
    ("servers: [naive, splice]\nworkload: {type: stream}\naccelerate: [none, sk_msg]",
     f"bad.yaml: servers[1]: cannot run with accelerate sk_msg: {ACCEL_SPLICE}; found 'splice', allowed: remove it "
     "from servers, or accelerate: [none]", False),
    ("servers: [{name: uring, options: {mode: splice}}]\nworkload: {type: stream}\naccelerate: [sk_msg]",
     f"bad.yaml: servers[0]: cannot run with accelerate sk_msg: mode splice: {ACCEL_SPLICE}; found 'uring', "
     "allowed: remove it from servers, or accelerate: [none]", False),
    ("servers: [{name: proxy-uring, options: {mode: splice}}]\nbackend: {name: naive}\nworkload: {type: stream}\n"
     "accelerate: [none, sk_msg]",
     f"bad.yaml: servers[0]: cannot run with accelerate sk_msg: mode splice: {ACCEL_SPLICE}; found 'proxy-uring', "
     "allowed: remove it from servers, or accelerate: [none]", False),
    ("servers: [{name: proxy-uring, options: {mode: send-zc}}]\nbackend: {name: naive}\nworkload: {type: stream}\n"
     "accelerate: [sk_msg]",
     f"bad.yaml: servers[0]: cannot run with accelerate sk_msg: mode send-zc: {ACCEL_SEND_ZC}; found 'proxy-uring', "
     "allowed: remove it from servers, or accelerate: [none]", False),
    ("servers: [sockmap]\nworkload: {type: stream}\naccelerate: [none, sk_msg]",
     f"bad.yaml: servers[0]: cannot run with accelerate sk_msg: {ACCEL_SK_SKB}; found 'sockmap', allowed: remove "
     "it from servers, or accelerate: [none]", False),
    ("servers: [nginx, proxy-splice]\nbackend: {name: naive}\nworkload: {type: stream}\naccelerate: [none, sk_msg]",
     f"bad.yaml: servers[1]: cannot run with accelerate sk_msg: {ACCEL_SPLICE}; found 'proxy-splice', allowed: "
     "remove it from servers, or accelerate: [none]", False),
    ("servers: [proxy-sockmap]\nbackend: {name: naive}\nworkload: {type: stream}\naccelerate: [none, sk_msg]",
     f"bad.yaml: servers[0]: cannot run with accelerate sk_msg: {ACCEL_SK_SKB}; found 'proxy-sockmap', allowed: "
     "remove it from servers, or accelerate: [none]", False),
    ("servers: [haproxy, haproxy-splice]\nbackend: {name: naive}\nworkload: {type: stream}\naccelerate: [none, sk_msg]",
     f"bad.yaml: servers[1]: cannot run with accelerate sk_msg: {ACCEL_SPLICE}; found 'haproxy-splice', allowed: "
     "remove it from servers, or accelerate: [none]", False),
    ("servers: [haproxy-splice-auto]\nbackend: {name: naive}\nworkload: {type: stream}\naccelerate: [none, sk_msg]",
     f"bad.yaml: servers[0]: cannot run with accelerate sk_msg: {ACCEL_SPLICE}; found 'haproxy-splice-auto', "
     "allowed: remove it from servers, or accelerate: [none]", False),
    ("servers: [nginx]\nbackend: {name: splice}\nworkload: {type: stream}\naccelerate: [none, sk_msg]",
     f"bad.yaml: backend.name: cannot run with accelerate sk_msg: {ACCEL_SPLICE}; found 'splice', allowed: another "
     "backend, or accelerate: [none]", False),
]


@pytest.mark.parametrize("text,message,_", BAD, ids=[m.split(": ")[1] + f"-{i}" for i, (_, m, _s) in enumerate(BAD)])
def test_bad_input_gets_its_exact_message(text, message, _):
    assert "\n" not in message
    with pytest.raises(ScenarioError) as exc:
        scenario.parse(text, "bad.yaml")
    assert str(exc.value) == message


def field_of(message: str) -> str:
    """The FIELD.PATH a message names, list indices dropped: 'servers[0].options.buf' -> 'servers.options.buf'."""
    return re.sub(r"\[\d+\]", "", message.split(": ")[1])


def fields_that_can_be_wrong() -> set[str]:
    """Every field path of a scenario file, from the validator's key tables and the registry."""
    return {
        *TOP_KEYS,
        *(f"servers.{k}" for k in SERVER_KEYS),
        *(f"servers.options.{k}" for kind in SERVERS.values() for k in kind.all_options()),
        *(f"repetitions.{k}" for k in REPETITION_KEYS),
        *(f"placement.{k}" for k in PLACEMENT_KEYS),
        *(f"backend.{k}" for k in BACKEND_KEYS),
        "workload.type",
        *(f"workload.{k}" for k in WORKLOAD_FIELDS),
        *(f"matrix.{k}" for k in MATRIX_SERVER_KEYS),
    }


def test_every_field_that_can_be_wrong_has_a_bad_input():
    uncovered = fields_that_can_be_wrong() - {field_of(m) for _, m, _s in BAD}
    assert uncovered == set(), f"add an entry to BAD for each of {sorted(uncovered)}"


def test_the_key_tables_are_the_keys_of_the_model():
    # A scenario using every section: its canonical form has exactly the keys the validator allows, so
    # the field list above (derived from the key tables) follows the model.
    sc = scenario.parse("servers: [{name: nginx, label: ngx, options: {workers: 2}}]\n"
                        "backend: {name: naive, options: {buf: 4KiB}, host: lab1}\n"
                        "workload: {type: stream}\nmatrix: {sndbuf: [0, 1MiB]}\nsysctls: {net.core.rmem_max: 1}\n"
                        "repetitions: {warmup: 0, min: 6, max: 8, target_ci_width: 0.1}\n"
                        "placement: {server: local, clients: [lab1]}\ncpus: {server: 0, backend: '1,0', client: 0-1}\n"
                        "accelerate: [none, sk_msg]\n",
                        "full.yaml",
                        known_hosts=("local", "lab1"))
    d = sc.to_dict()
    assert set(d) == set(TOP_KEYS)
    assert {k for s in d["servers"] for k in s} == set(SERVER_KEYS)
    assert set(d["repetitions"]) | {"measured"} == set(REPETITION_KEYS)
    assert set(d["placement"]) == set(PLACEMENT_KEYS)
    assert set(d["backend"]) == set(BACKEND_KEYS)
    assert d["cpus"] == {"server": "0", "backend": "1,0", "client": "0,1"}
    assert set(d["workload"]) == {"type", *WORKLOADS["stream"]}
    assert {f.name for f in dataclasses.fields(scenario.Scenario)} == {
        "name", "description", "servers", "workload_type", "workload", "warmup", "measured", "baseline",
        "stop_on_failure", "timeout_s", "seed", "matrix", "placements", "backend", "source", "min_measured",
        "target_ci_width", "cpus", "profile", "sysctls", "accelerate"}, "a new model field: give it a key in validation.py's tables and bad inputs in BAD"


def test_bad_inputs_are_distinct():
    texts = [t for t, _m, _s in BAD]
    assert len(texts) == len(set(texts))


@pytest.fixture(scope="module")
def schema():
    data = json.loads((SCENARIOS / "schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(data)
    return jsonschema.Draft202012Validator(data)


def test_published_schema_is_generated_from_the_validator_tables():
    assert (SCENARIOS / "schema.json").read_text() == scenario.json_schema_text(), \
        "scenarios/schema.json is stale: run `invoke schema`"


@pytest.mark.parametrize("text,message,schema_rejects", [b for b in BAD if b[2] is not None],
                         ids=[f"{i}" for i, b in enumerate(BAD) if b[2] is not None])
def test_schema_agrees_with_validator_on_bad_inputs(schema, text, message, schema_rejects):
    data = yaml.safe_load(text)
    errors = list(schema.iter_errors(data))
    assert bool(errors) == schema_rejects, (message, [e.message for e in errors])


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_passes_the_schema(schema, path):
    errors = [e.message for e in schema.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize("name", ["loopback-100mib", "loopback-pingpong", "loopback-burst", "loopback-sweep"])
def test_shipped_loopback_scenarios_validate(name):
    sc = scenario.load(SCENARIOS / f"{name}.yaml")
    assert sc.name == name
    assert [s.label for s in sc.servers] == ["naive", "splice", "sockmap"] + (["uring"] if name == "loopback-100mib"
                                                                              else [])
    assert sc.description
    assert sc.placement == scenario.Placement("local", ("local",))


def test_loopback_100mib_is_what_the_readme_promises():
    sc = scenario.load(SCENARIOS / "loopback-100mib.yaml")
    assert sc.workload_type == "stream"
    assert dict(sc.workload)["bytes"] == 100 << 20
    assert dict(sc.workload)["conns"] == 1
    assert sc.warmup >= 1 and sc.measured >= 5
    assert sc.baseline == "naive"


def test_sweep_has_a_matrix_of_sizes_and_connection_counts():
    sc = scenario.load(SCENARIOS / "loopback-sweep.yaml")
    keys = [k for k, _ in sc.matrix]
    assert "msg_size" in keys and "conns" in keys
    cells = sc.cells()
    assert len(cells) == len(dict(sc.matrix)["msg_size"]) * len(dict(sc.matrix)["conns"])
    assert cells[0].label == "msg_size=64B conns=1"


def test_defaults_and_sizes():
    sc = scenario.parse("servers: [naive, {name: sockmap, label: sm-parser, options: {parser: true, sndbuf: 4MiB}}]\n"
                        "workload: {type: burst, burst_size: 64KiB}\n", "x.yaml")
    assert sc.name == "x"
    assert sc.warmup == 1 and sc.measured == 5 and sc.timeout_s == 120 and sc.seed == 1
    assert sc.baseline == "naive"
    assert dict(sc.workload) == {"conns": 1, "burst_size": 65536, "bursts": 10, "threads": 1, "source_addrs": 0, "procs": 1, "stall": 10, "hold": 0}
    assert sc.servers[1] == scenario.ServerConfig("sm-parser", "sockmap", (("parser", True), ("sndbuf", 4 << 20)))


def test_baseline_defaults_to_the_first_server_without_naive():
    sc = scenario.parse("servers: [splice, sockmap]\nworkload: {type: stream}\n", "x.yaml")
    assert sc.baseline == "splice"


def test_resolved_form_parses_back_to_the_same_scenario():
    sc = scenario.load(SCENARIOS / "loopback-sweep.yaml")
    again = scenario.validate(json.loads(json.dumps(sc.to_dict())), str(sc.source))
    assert again == sc


def test_known_hosts_extend_placement():
    sc = scenario.parse(OK + "placement: {server: lab1, clients: [lab2, lab3]}", "x.yaml",
                        known_hosts=("local", "lab1", "lab2", "lab3"))
    assert sc.placement == scenario.Placement("lab1", ("lab2", "lab3"))


def test_resolve_names_and_paths(tmp_path):
    assert scenario.resolve("loopback-100mib", SCENARIOS) == SCENARIOS / "loopback-100mib.yaml"
    f = tmp_path / "mine.yaml"
    f.write_text(OK)
    assert scenario.resolve(str(f), SCENARIOS) == f
    with pytest.raises(ScenarioError) as exc:
        scenario.resolve("loopback-100mb", SCENARIOS)
    assert "did you mean 'loopback-100mib'?" in str(exc.value)


def test_accelerate_runs_every_server_in_pairs_and_parses_back():
    sc = scenario.load(SCENARIOS / "loopback-accel-proxy.yaml")
    assert [(s.label, s.kind, s.accelerate) for s in sc.servers] == [
        ("direct", "naive", "none"), ("direct+sk_msg", "naive", "sk_msg"),
        ("proxy-naive", "proxy-naive", "none"), ("proxy-naive+sk_msg", "proxy-naive", "sk_msg"),
        ("nginx", "nginx", "none"), ("nginx+sk_msg", "nginx", "sk_msg"),
        ("haproxy", "haproxy", "none"), ("haproxy+sk_msg", "haproxy", "sk_msg")]
    assert sc.baseline == "proxy-naive" and sc.accelerate == ("none", "sk_msg")
    assert [s.base_label for s in sc.servers[:2]] == ["direct", "direct"]
    assert scenario.validate(json.loads(json.dumps(sc.to_dict())), str(sc.source)) == sc
    only = scenario.parse("servers: [naive, {name: uring, label: u}]\nworkload: {type: stream}\n"
                          "accelerate: [sk_msg]\n", "x.yaml")
    assert [s.label for s in only.servers] == ["naive+sk_msg", "u+sk_msg"]
    assert scenario.validate(only.to_dict(), "x.yaml") == only
    assert scenario.parse(OK, "x.yaml").accelerate == ("none",)
