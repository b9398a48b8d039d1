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

  inject.py mirror --link-ns NS --link-iface IF --node NS --remote-node NS
                   --local-outer IP --remote-outer IP --encap geneve|vxlan --map FILE

Encapsulates the lab's own traffic as the CNI would: every IPv4 packet crossing the plain
link IF (in NS, between the two nodes) is written, wrapped, onto the sending node's eth0
(the underlay delivers it to the other node's eth0), until SIGTERM. --map (JSON) says how:
for geneve (OVN) {"pods": {IP: {"vni": datapath key, "port": port key, "mac": pod MAC,
"router_mac": switch router port MAC}}, "router_port": key}: VNI = the destination pod's
switch, option 0x0102/0x80 = (router port, destination pod's port); for vxlan
(OpenShift-SDN) {"netids": {IP: NETID}, "macs": {IP: MAC}}: VNI = the sender's project.
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


def udp(sport, dport, payload):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def geneve(vni, ingress, egress, inner_frame):
    """Geneve with OVN's one option: class 0x0102, type 0x80 (critical), 4 bytes of port keys."""
    option = struct.pack("!HBB", 0x0102, 0x80, 1) + struct.pack("!I", (ingress << 16) | egress)
    header = struct.pack("!BBH", len(option) // 4, 0x40, 0x6558) + struct.pack("!I", vni << 8)
    return header + option + inner_frame


def vxlan(vni, inner_frame):
    return struct.pack("!II", 0x08000000, vni << 8) + inner_frame


def mac(text):
    return bytes.fromhex(text.replace(":", ""))


def mirror(a):
    import signal

    m = json.load(open(a.map))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sniff = in_netns(a.link_ns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)))
    sniff.bind((a.link_iface, 0))
    sniff.settimeout(0.2)
    local = in_netns(a.node, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
    local.bind(("eth0", 0))
    remote = in_netns(a.remote_node, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
    remote.bind(("eth0", 0))
    local_mac, remote_mac = mac_of(a.node, "eth0"), mac_of(a.remote_node, "eth0")
    ident = [0x2000]
    print("mirroring", flush=True)
    while not stop:
        try:
            frame, addr = sniff.recvfrom(65535)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        packet = frame[14:]
        src, dst = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
        # PACKET_OUTGOING: the local node sent it toward the remote one.
        outgoing = addr[2] == socket.PACKET_OUTGOING
        if a.encap == "geneve":
            pod = m["pods"].get(dst)
            if pod is None:
                continue
            inner = mac(pod["mac"]) + mac(pod["router_mac"]) + b"\x08\x00" + packet
            payload, dport = geneve(pod["vni"], m["router_port"], pod["port"], inner), 6081
        else:
            netid = m["netids"].get(src, 0)
            inner = mac(m["macs"].get(dst, "0a:58:00:00:00:01")) + mac(m["macs"].get(src, "0a:58:00:00:00:02"))
            payload, dport = vxlan(netid, inner + b"\x08\x00" + packet), 4789
        # The tunnel's source port: a hash of the inner addresses, as the kernel's is.
        sport = 49152 + (sum(packet[12:20]) * 257 + packet[9]) % 16384
        ident[0] = (ident[0] + 1) & 0xFFFF
        if outgoing:
            outer = ipv4(a.local_outer, a.remote_outer, 17, udp(sport, dport, payload), ident[0])
            local.send(remote_mac + local_mac + b"\x08\x00" + outer)
        else:
            outer = ipv4(a.remote_outer, a.local_outer, 17, udp(sport, dport, payload), ident[0])
            remote.send(local_mac + remote_mac + b"\x08\x00" + outer)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["ipip", "mirror"])
    if len(os.sys.argv) > 1 and os.sys.argv[1] == "mirror":
        for arg in ["--link-ns", "--link-iface", "--node", "--remote-node", "--local-outer",
                    "--remote-outer", "--map"]:
            ap.add_argument(arg, required=True)
        ap.add_argument("--encap", choices=["geneve", "vxlan"], required=True)
        return mirror(ap.parse_args())
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
