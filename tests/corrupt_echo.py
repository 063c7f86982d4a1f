"""A tiny echo server that misbehaves on purpose, to prove that sb-client notices.

It speaks the servers' stdout protocol (ready line; summary line on SIGTERM/SIGINT, see
docs/programs.md) so tests start it like the real servers. One thread per connection, blocking
sockets: it is a test fixture, not a data path. Every mode applies to every connection, at offset N
of that connection's byte stream:

  --flip N       echo everything, but XOR the byte at offset N with 0x01
  --truncate N   echo the first N bytes, then half-close (FIN) and discard the rest
  --reset N      echo the first N bytes, then reset (SO_LINGER 0)
  --extra N      echo everything, then send N more bytes before closing
  --zero N:L     echo everything, but with the L bytes from offset N on zeroed
  --drop N:L     echo everything but the L bytes from offset N on (lost bytes)
  --repeat N:L   echo everything, sending the L bytes before offset N once more at N (repeated
                 bytes; L <= 65536)
  --stall        read everything, echo nothing, never close
  --stop N       echo the first N bytes, then neither read nor write again, never close
  --dump DIR     plain echo that also stores the first 64 KiB of connection k as DIR/conn-k.bin
  (no mode)      plain echo
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import threading
from pathlib import Path

DUMP_BYTES = 65536


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.active = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.peers: list[str] = []

    def add(self, **delta: int) -> None:
        with self.lock:
            for key, value in delta.items():
                setattr(self, key, getattr(self, key) + value)


def serve(conn: socket.socket, k: int, args: argparse.Namespace, stats: Stats) -> None:
    """Echo one connection, misbehaving as args say."""
    off = 0  # bytes echoed so far
    read = 0  # bytes read so far (--drop)
    history = b""  # the last bytes echoed (--repeat)
    dump = bytearray()
    cut = next((c for c in (args.truncate, args.reset, args.stop) if c is not None), None)
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            stats.add(bytes_in=len(data))
            if args.stall:
                continue
            if args.flip is not None and off <= args.flip < off + len(data):
                changed = bytearray(data)
                changed[args.flip - off] ^= 0x01
                data = bytes(changed)
            if args.zero is not None:
                lo, hi = args.zero[0] - off, args.zero[0] + args.zero[1] - off
                if lo < len(data) and hi > 0:
                    lo, hi = max(lo, 0), min(hi, len(data))
                    data = data[:lo] + bytes(hi - lo) + data[hi:]
            if args.drop is not None:  # offsets count what was read; the echo skips [N, N + L)
                lo, hi = args.drop[0], args.drop[0] + args.drop[1]
                start = read
                read += len(data)
                data = data[: max(0, lo - start)] + data[max(0, hi - start):]
            if args.repeat is not None and off <= args.repeat[0] < off + len(data):
                at = args.repeat[0] - off
                again = (bytes(history) + data[:at])[-args.repeat[1]:]
                data = data[:at] + again + data[at:]
                off -= len(again)  # offsets stay those of the client's stream
            if args.repeat is not None:
                history = (history + data)[-65536:]
            if cut is not None and off + len(data) >= cut:
                conn.sendall(data[: cut - off])
                stats.add(bytes_out=cut - off)
                if args.reset is not None:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if args.stop is not None:
                    threading.Event().wait()  # silent from here on, until the process ends
                # FIN now; keep reading so that close() finds no unread data (that would RST).
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass
                return
            if args.dump is not None and len(dump) < DUMP_BYTES:
                dump += data[: DUMP_BYTES - len(dump)]
            conn.sendall(data)
            off += len(data)
            stats.add(bytes_out=len(data))
        if args.stall:
            threading.Event().wait()  # keep the connection open until the process ends
        if args.extra:
            conn.sendall(bytes(range(256)) * (args.extra // 256) + bytes(args.extra % 256))
            stats.add(bytes_out=args.extra)
    except OSError:
        pass
    finally:
        if args.dump is not None:
            Path(args.dump, f"conn-{k}.bin").write_bytes(bytes(dump))
        conn.close()
        stats.add(active=-1)


def parse_listen(text: str) -> tuple[int, str, int]:
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, host[1:-1], int(port)
    return socket.AF_INET, host, int(port)


def span(text: str) -> tuple[int, int]:
    offset, _, length = text.partition(":")
    return int(offset), int(length)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--flip", type=int, metavar="N")
    mode.add_argument("--truncate", type=int, metavar="N")
    mode.add_argument("--reset", type=int, metavar="N")
    mode.add_argument("--extra", type=int, metavar="N")
    mode.add_argument("--zero", type=span, metavar="N:L")
    mode.add_argument("--drop", type=span, metavar="N:L")
    mode.add_argument("--repeat", type=span, metavar="N:L")
    mode.add_argument("--stall", action="store_true")
    mode.add_argument("--stop", type=int, metavar="N")
    mode.add_argument("--dump", metavar="DIR")
    args = parser.parse_args()

    family, host, port = parse_listen(args.listen)
    lsock = socket.socket(family, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(4096)
    stats = Stats()

    def on_signal(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    addr, bound_port = lsock.getsockname()[:2]
    ready = {"event": "ready", "server": "corrupt", "addr": addr, "port": bound_port}
    print(json.dumps({**ready, "pid": os.getpid()}), flush=True)
    try:
        k = 0
        while True:
            conn, peer = lsock.accept()
            stats.add(connections=1, active=1)
            with stats.lock:
                stats.peers.append(peer[0])
            threading.Thread(target=serve, args=(conn, k, args, stats), daemon=True).start()
            k += 1
    except SystemExit:
        pass
    with stats.lock:
        summary = {
            "event": "summary",
            "server": "corrupt",
            "connections": stats.connections,
            "active": stats.active,
            "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out,
            "errors": 0,
            "peers": stats.peers,  # the clients' addresses, in the order they were accepted
        }
    print(json.dumps(summary), flush=True)
    sys.stdout.flush()
    os._exit(0)  # daemon threads may still block in recv(): do not wait for them


if __name__ == "__main__":
    sys.exit(main())
