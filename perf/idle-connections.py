#!/usr/bin/env python3
"""The server memory an idle RTSP connection costs on the control core.

Opens N TCP connections to a running server, each sending OPTIONS and
DESCRIBE and reading both answers, then staying open and silent, as a
playing UDP session's connection does. Prints the growth of the server's
anonymous resident memory (`Anonymous:` of /proc/PID/smaps_rollup) from one
second after the first DESCRIBE to one second after the last, over N.

    target/release/streamalot serve --shards 1 --media DIR --rtsp-port 8554 &
    perf/idle-connections.py --pid $! --port 8554 --path /movie.mp4 --count 4000
"""

import argparse
import socket
import time


def anonymous_bytes(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no Anonymous: line")


def read_reply(sock, buf):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed a connection")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed a connection")
        rest += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise SystemExit(f"not 200: {status!r}")
    return rest[length:]


def converse(sock, url):
    buf = b""
    sock.sendall(f"OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
    buf = read_reply(sock, buf)
    sock.sendall(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n".encode())
    read_reply(sock, buf)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--path", required=True)
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--hold", type=float, default=0.0, help="seconds to keep them open after measuring")
    a = ap.parse_args()
    url = f"rtsp://{a.host}:{a.port}{a.path}"
    conns = []
    first = socket.create_connection((a.host, a.port))
    converse(first, url)
    conns.append(first)
    time.sleep(1)
    before = anonymous_bytes(a.pid)
    for _ in range(a.count - 1):
        s = socket.create_connection((a.host, a.port))
        converse(s, url)
        conns.append(s)
    time.sleep(1)
    after = anonymous_bytes(a.pid)
    grown = after - before
    print(f"{a.count} idle connections: anonymous memory {before} -> {after} bytes, "
          f"{grown / (a.count - 1):.0f} bytes a connection")
    time.sleep(a.hold)
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
