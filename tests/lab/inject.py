#!/usr/bin/env python3
"""Writes encapsulated frames onto a lab node's uplink through AF_PACKET, for tunnels the
kernel here cannot build (no ipip module): the agent's probes see them as they would see a
real node's traffic. Frames from the remote node are sent from the underlay side of the
node's veth (they arrive as ingress); the local node's replies are sent on the node's own
uplink (they leave as egress). Nothing leaves the lab's namespaces.

  inject.py ipip --ul NS --ul-iface IF --node NS --node-iface IF --remote-node NS
                 --local-outer IP --remote-outer IP --client IP:PORT --server IP:PORT
                 [--ping-from IP]

--client is a pod on the remote node, --server a pod on the local node: one TCP connection
(handshake, one request and reply, teardown: 8 packets) and, with --ping-from, two echo
requests and replies from that address (a node's tunnel address) to the server pod.
"""
import argparse
import ctypes
import json
import os
import socket
import struct
import subprocess
import time

CLONE_NEWNET = 0x40000000


def mac_of(ns, iface):
    out = subprocess.check_output(["ip", "-n", ns, "-j", "link", "show", iface])
    return bytes.fromhex(json.loads(out)[0]["address"].replace(":", ""))


def in_netns(ns, fn):
    """Runs fn() inside network namespace ns (sockets keep the namespace they were made in)."""
    libc = ctypes.CDLL(None, use_errno=True)
    here = os.open("/proc/self/ns/net", os.O_RDONLY)
    there = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        return fn()
    finally:
        libc.setns(here, CLONE_NEWNET)
        os.close(here)
        os.close(there)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto, payload, ident):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    h = h[:10] + struct.pack("!H", checksum(h)) + h[12:]
    return h + payload


def tcp(src, dst, sport, dport, seq, ack, flags, payload=b""):
    h = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(h) + len(payload))
    c = checksum(pseudo + h + payload)
    return h[:16] + struct.pack("!H", c) + h[18:] + payload


def icmp_echo(kind, ident, seq):
    h = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + b"cniscope"
    return h[:2] + struct.pack("!H", checksum(h)) + h[4:]


SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["ipip"])
    for a in ["--ul", "--ul-iface", "--node", "--node-iface", "--remote-node", "--local-outer",
              "--remote-outer", "--client", "--server"]:
        ap.add_argument(a, required=True)
    ap.add_argument("--ping-from")
    a = ap.parse_args()

    local_mac = mac_of(a.node, a.node_iface)
    remote_mac = mac_of(a.remote_node, "eth0")
    inbound = in_netns(a.ul, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
    inbound.bind((a.ul_iface, 0))
    outbound = in_netns(a.node, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
    outbound.bind((a.node_iface, 0))
    ident = [0x4000]

    def send(from_remote, inner_src, inner_dst, proto, payload):
        ident[0] += 1
        inner = ipv4(inner_src, inner_dst, proto, payload, ident[0])
        if from_remote:
            outer = ipv4(a.remote_outer, a.local_outer, 4, inner, ident[0] + 0x1000)
            inbound.send(local_mac + remote_mac + b"\x08\x00" + outer)
        else:
            outer = ipv4(a.local_outer, a.remote_outer, 4, inner, ident[0] + 0x1000)
            outbound.send(remote_mac + local_mac + b"\x08\x00" + outer)
        time.sleep(0.005)

    (c, cp), (s, sp) = a.client.split(":"), a.server.split(":")
    cp, sp = int(cp), int(sp)
    ci, si = 0x1000, 0x9000
    send(True, c, s, 6, tcp(c, s, cp, sp, ci, 0, SYN))
    send(False, s, c, 6, tcp(s, c, sp, cp, si, ci + 1, SYN | ACK))
    send(True, c, s, 6, tcp(c, s, cp, sp, ci + 1, si + 1, ACK))
    send(True, c, s, 6, tcp(c, s, cp, sp, ci + 1, si + 1, PSH | ACK, b"ping"))
    send(False, s, c, 6, tcp(s, c, sp, cp, si + 1, ci + 5, PSH | ACK, b"pong"))
    send(True, c, s, 6, tcp(c, s, cp, sp, ci + 5, si + 5, FIN | ACK))
    send(False, s, c, 6, tcp(s, c, sp, cp, si + 5, ci + 6, FIN | ACK))
    send(True, c, s, 6, tcp(c, s, cp, sp, ci + 6, si + 6, ACK))
    if a.ping_from:
        for seq in (1, 2):
            send(True, a.ping_from, s, 1, icmp_echo(8, 0x77, seq))
            send(False, s, a.ping_from, 1, icmp_echo(0, 0x77, seq))


if __name__ == "__main__":
    main()
