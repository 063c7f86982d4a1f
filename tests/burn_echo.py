"""A test echo server that burns a known amount of CPU, to check the CPU figures against the truth.

It speaks the servers' stdout protocol (ready line; summary line on SIGTERM, docs/programs.md).
One connection at a time, blocking sockets: a test fixture, not a data path.

  --per-mib S    spin S seconds of process CPU per MiB echoed, while the transfer runs
  --outside S    spin S seconds on SIGUSR1 (the test sends it before the client starts) and again
                 after each connection's EOF: CPU outside the client's transfer window
  --getppid N    make N getppid() system calls per chunk echoed (a known number of system calls,
                 all while the transfer runs); the summary counts them (extra_syscalls) and the chunks
  --handler H    who echoes a connection: main (this thread), thread (a thread started for it) or
                 fork (a child process started for it, which reports its counts through a pipe):
                 tasks that did not exist when a sampler started watching this process
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time


def spin(seconds: float) -> None:
    """Use `seconds` of this process's CPU time."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def echo(conn: socket.socket, a: argparse.Namespace, stats: dict) -> None:
    """Echo one connection until EOF, then close it."""
    owed = 0.0
    while True:
        data = conn.recv(1 << 16)
        if not data:
            break
        stats["bytes_in"] += len(data)
        stats["chunks"] += 1
        for _ in range(a.getppid):
            os.getppid()
        stats["extra_syscalls"] += a.getppid
        owed += a.per_mib * len(data) / (1 << 20)
        if owed >= 0.001:  # burn in small steps, spread over the transfer
            t = time.process_time()
            spin(owed)
            stats["burned_in_transfer_s"] += time.process_time() - t
            owed = 0.0
        conn.sendall(data)
        stats["bytes_out"] += len(data)
    conn.shutdown(socket.SHUT_WR)
    conn.close()


def fork_echo(conn: socket.socket, a: argparse.Namespace, stats: dict) -> None:
    """Echo one connection in a child process; its counts come back through a pipe (SIGTERM waits
    until they are in: the summary line holds them)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        os.close(r)
        mine = dict.fromkeys(stats, 0)
        echo(conn, a, mine)
        os.write(w, json.dumps(mine).encode())
        os._exit(0)
    os.close(w)
    conn.close()
    with os.fdopen(r) as f:
        text = f.read()
    os.waitpid(pid, 0)
    for k, v in json.loads(text).items():
        if k != "connections":
            stats[k] += v
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--per-mib", type=float, default=0.0)
    ap.add_argument("--outside", type=float, default=0.0)
    ap.add_argument("--getppid", type=int, default=0)
    ap.add_argument("--handler", choices=("main", "thread", "fork"), default="main")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, int(port)))
    ls.listen(16)
    stats = {"connections": 0, "bytes_in": 0, "bytes_out": 0, "burned_in_transfer_s": 0.0, "chunks": 0,
             "extra_syscalls": 0}
    signal.signal(signal.SIGUSR1, lambda *_: spin(a.outside))
    print(json.dumps({"event": "ready", "server": "burn", "addr": host, "port": ls.getsockname()[1],
                      "pid": os.getpid()}), flush=True)

    def stop(*_):
        print(json.dumps({"event": "summary", "server": "burn", "active": 0, "errors": 0, **stats}), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        conn, _ = ls.accept()
        stats["connections"] += 1
        if a.handler == "main":
            echo(conn, a, stats)
        elif a.handler == "thread":
            t = threading.Thread(target=echo, args=(conn, a, stats))
            t.start()
            t.join()
        else:
            fork_echo(conn, a, stats)
        spin(a.outside)
    return 0


if __name__ == "__main__":
    sys.exit(main())
