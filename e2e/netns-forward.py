#!/usr/bin/env python3
"""Forward a TCP port on this machine's 127.0.0.1 into the e2e cluster's private network.

    netns-forward.py LISTEN_PORT NAMESPACE_PID TARGET[,TARGET...]

The listening socket is made in the machine's network namespace; then this process enters the
namespace of NAMESPACE_PID (setns), so every connection to a TARGET (HOST:PORT, tried in order)
is made inside the cluster's network. Used by `make demo` so kubectl, helm and curl on the
machine reach the API server and the model endpoints. Needs root (CAP_SYS_ADMIN).
"""

import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(conn: socket.socket, targets: list[tuple[str, int]]) -> None:
    for host, port in targets:
        try:
            up = socket.create_connection((host, port), timeout=5)
            break
        except OSError:
            continue
    else:
        conn.close()
        return
    up.settimeout(None)
    threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
    pipe(up, conn)
    conn.close()
    up.close()


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    targets = []
    for t in sys.argv[3].split(","):
        host, _, p = t.rpartition(":")
        targets.append((host, int(p)))
    listener = socket.create_server(("127.0.0.1", port))
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        sys.exit(f"netns-forward: setns into {pid}: {os.strerror(err)}")
    os.close(fd)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, targets), daemon=True).start()


if __name__ == "__main__":
    main()
