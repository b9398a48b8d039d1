#!/usr/bin/env python3
"""Traffic for the lab: tiny TCP/UDP echo servers and clients that send a known number of
messages, so tests can reason about what was sent.

  echo.py serve-tcp ADDR PORT     echo.py tcp HOST PORT ROUNDS
  echo.py serve-udp ADDR PORT     echo.py udp HOST PORT DATAGRAMS
  echo.py flood HOST FLOWS        one UDP datagram to each of FLOWS ports: FLOWS new flows
  echo.py refused HOST PORT       a TCP connection that must be refused (a service without
                                  endpoints); fails if it is not
  echo.py unanswered HOST PORT SECS   a TCP connection that must fail within SECS (dropped
                                  on the way, no route); fails if it is answered
  echo.py bulk HOST PORT BYTES SECS   BYTES in large writes that must not all come back within
                                  SECS (an MTU black hole); fails if they do
Servers stop by themselves after 30 seconds.
"""
import socket
import sys
import threading


def serve_tcp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(16)
    s.settimeout(30)

    def handle(conn):
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(data)

    try:
        while True:
            conn, _ = s.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    except socket.timeout:
        pass


def serve_udp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(30)
    try:
        while True:
            data, peer = s.recvfrom(4096)
            s.sendto(data, peer)
    except socket.timeout:
        pass


def tcp(host, port, rounds):
    with socket.create_connection((host, port), timeout=5) as s:
        for i in range(rounds):
            msg = b"ping %d\n" % i
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += s.recv(4096)


def udp(host, port, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    for i in range(count):
        s.sendto(b"dgram %d" % i, (host, port))
        s.recvfrom(4096)


def refused(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return
    sys.exit("%s:%d accepted a connection; expected a refusal" % (host, port))


def unanswered(host, port, secs):
    try:
        socket.create_connection((host, port), timeout=secs).close()
    except OSError:
        return
    sys.exit("%s:%d answered; expected no answer" % (host, port))


def bulk(host, port, size, secs):
    s = socket.create_connection((host, port), timeout=5)
    s.settimeout(secs)
    got = 0
    try:
        s.sendall(b"x" * size)
        while got < size:
            data = s.recv(65536)
            if not data:
                break
            got += len(data)
    except OSError:
        return
    finally:
        s.close()
    if got >= size:
        sys.exit("%s:%d echoed all %d bytes; expected them lost" % (host, port, size))


def flood(host, flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(flows):
        s.sendto(b"x", (host, 20000 + i))


if __name__ == "__main__":
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "serve-tcp":
        serve_tcp(host, port)
    elif cmd == "serve-udp":
        serve_udp(host, port)
    elif cmd == "tcp":
        tcp(host, port, int(sys.argv[4]))
    elif cmd == "udp":
        udp(host, port, int(sys.argv[4]))
    elif cmd == "flood":
        flood(host, port)
    elif cmd == "refused":
        refused(host, port)
    elif cmd == "unanswered":
        unanswered(host, port, float(sys.argv[4]))
    elif cmd == "bulk":
        bulk(host, port, int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit("unknown command " + cmd)
