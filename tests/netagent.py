"""What runs inside one pod's network namespace: a server, a prober, a UDP sequence stream.

tests/netmodel.py starts it with ``nsenter --net=/var/run/netns/NS python3 netagent.py MODE ...``.
It imports nothing from policyc, so a pod holds nothing but sockets.

serve NAME PORT... [--seqlog FILE]
    TCP and UDP servers on every PORT; each answers with NAME. UDP datagrams ``seq STREAM N`` are
    not answered but logged as ``SRC STREAM N`` lines to FILE, so a test counts what arrived.
probe TIMEOUT
    reads ``[[addr, port, "TCP"|"UDP"], ...]`` as JSON on stdin, runs them all at once and prints
    ``[[verdict, answer], ...]``: verdict ``allow`` (an answer came back), ``deny`` (silence until
    TIMEOUT, twice: a dropped packet is silence, a slow machine is not twice) or ``error``.
stream ADDR PORT STREAM INTERVAL
    sends ``seq STREAM N`` datagrams from one source port every INTERVAL seconds until stdin
    closes, then prints ``{"sent": [[N, monotonic time just before sending], ...]}``.
connect ADDR PORT PROTOCOL COUNT TIMEOUT
    COUNT connections one after the other, each a new source port and a single attempt (no retry:
    a Service may pick another backend for a second one); prints ``[answer, ...]`` as JSON: the
    server's name, "" for silence until TIMEOUT, or "error: ..." (a refusal, an unreachable).
refusal ADDR PORT PROTOCOL TIMEOUT [dstopts]
    one attempt on a connected socket; prints ``{"outcome": "refused" | "answered" | "timeout",
    "seconds": ...}`` (a connected UDP socket hears of an ICMP port unreachable, an unconnected one not).
    ``dstopts`` (IPv6): every packet carries a Destination Options header (one PadN option).
hold ADDR PORT
    opens a TCP connection, prints ``connected`` (or ``failed``), then for each line on stdin
    sends it and prints the echo of the server's answer, or ``timeout``.
sink PORT
    prints ``ready``, accepts one TCP connection, reads it to the end and answers with the number
    of bytes it read.
send ADDR PORT NBYTES TIMEOUT
    sends NBYTES over one TCP connection, closes its side and prints ``{"answer": ...}`` (the sink's
    count) or ``{"error": ...}`` when nothing completes within TIMEOUT seconds.
udpecho PORT
    prints ``ready``, then answers each UDP datagram with one of the same size.
udpbig ADDR PORT NBYTES TIMEOUT
    sends one NBYTES datagram (the kernel fragments it) and prints the size of the answer, or 0.
spoof SRC ADDR PORT STREAM
    sends one ``seq STREAM 0`` UDP datagram to ADDR:PORT from source address SRC (any address: a raw
    socket, as a compromised pod can), then prints ``sent``.
vxlan NODE VNI MAC SRC ADDR PORT STREAM
    sends the ``spoof`` datagram (source SRC, to ADDR:PORT) encapsulated in VXLAN (UDP 4789, network
    VNI, inner destination MAC, no outer UDP checksum as VXLAN sends) to NODE, as an outside host can,
    then prints ``sent``.
tagged TPIDS ADDR PORT STREAM MAC
    sends the ``spoof`` datagram from the pod's own address to ADDR:PORT from eth0, through a packet
    socket, as an Ethernet frame to next hop MAC behind VID-0 VLAN tags with tag protocol ids TPIDS
    (hex, outermost first: ``88a8,8100``), which the receiving kernel strips before it delivers the
    datagram inside; then prints ``sent``.
unreach_wait ADDR PORT SPORT TIMEOUT
    sends one UDP datagram from SPORT to ADDR:PORT, prints ``sent``, then prints ``got`` when an ICMP
    port unreachable quoting it arrives within TIMEOUT seconds, else ``none``.
unreach_send DST QSPORT QDPORT SIZE LINEAR MAC
    sends from eth0, through a packet socket, an ICMP port unreachable to DST quoting DST's UDP
    datagram QSPORT -> QDPORT to this pod, padded to SIZE bytes, to next hop MAC; only its first
    LINEAR bytes in the skb's linear part (a virtio-net header's hdr_len; the rest in pages, which
    takes SIZE above a page and an MTU to match), then prints ``sent``.
synflood ADDR PORT COUNT
    sends COUNT TCP SYNs to ADDR:PORT from the pod's address and COUNT source ports, as fast as it can
    (bounded by COUNT), then prints ``sent N``.
udppush PORT
    prints ``ready``, answers the first UDP datagram with ``first``, then sends each line on stdin to
    that datagram's sender (the backend speaking first) and prints ``sent``.
udpwait ADDR PORT TIMEOUT
    a connected UDP socket: sends ``hello`` and prints ``LOCALPORT ANSWER`` (``timeout`` for none); then
    for each line on stdin waits up to TIMEOUT for a datagram and prints it, ``timeout`` or ``refused``
    (an ICMP port unreachable the kernel matched to the socket).
unreach SRC DST QSRC QSPORT QDST QDPORT
    sends DST one ICMP port unreachable from SRC quoting a UDP datagram QSRC:QSPORT -> QDST:QDPORT (a
    raw socket: any addresses, as a compromised pod can), then prints ``sent``.
"""
from __future__ import annotations

import json
import selectors
import socket
import struct
import sys
import threading
import time


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _listen(kind: int, port: int) -> socket.socket:
    """Dual-stack socket on ``::`` (IPv4 arrives v4-mapped), or IPv4 only where IPv6 is off."""
    try:
        sock = socket.socket(socket.AF_INET6, kind)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
    except OSError:
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setblocking(False)
    return sock


def _plain(addr: str) -> str:
    return addr[7:] if addr.startswith("::ffff:") else addr


def serve(name: str, ports: list[int], seqlog: str | None) -> None:
    answer = name.encode() + b"\n"
    log = open(seqlog, "a", buffering=1) if seqlog else None
    sel = selectors.DefaultSelector()
    for port in ports:
        sel.register(_listen(socket.SOCK_STREAM, port), selectors.EVENT_READ, "accept")
        sel.register(_listen(socket.SOCK_DGRAM, port), selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if key.data == "accept":
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                conn.send(answer)
                sel.register(conn, selectors.EVENT_READ, "conn")
            elif key.data == "conn":
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if data:
                    sock.send(answer)  # one answer per request: held connections probe with it
                else:
                    sel.unregister(sock)
                    sock.close()
            else:
                try:
                    data, peer = sock.recvfrom(2048)
                except OSError:
                    continue
                if data.startswith(b"seq "):
                    if log:
                        log.write(f"{_plain(peer[0])} {data[4:].decode().strip()}\n")
                else:
                    sock.sendto(answer, peer)


def _tcp(addr: str, port: int, timeout: float) -> tuple[str, str]:
    try:
        with socket.create_connection((addr, port), timeout=timeout) as sock:
            return "allow", sock.recv(256).decode().strip()
    except socket.timeout:
        return "deny", ""
    except OSError as exc:
        return "error", str(exc)


def _udp(addr: str, port: int, timeout: float) -> tuple[str, str]:
    with socket.socket(_family(addr), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(b"probe", (addr, port))
            data, _ = sock.recvfrom(256)
            return "allow", data.decode().strip()
        except socket.timeout:
            return "deny", ""
        except OSError as exc:
            return "error", str(exc)


def probe_one(addr: str, port: int, protocol: str, timeout: float) -> tuple[str, str]:
    check = _tcp if protocol == "TCP" else _udp
    result = check(addr, port, timeout)
    if result[0] == "deny":
        result = check(addr, port, timeout)
    return result


def probe(timeout: float) -> None:
    todo = json.load(sys.stdin)
    results: list = [None] * len(todo)

    def work(i: int) -> None:
        results[i] = list(probe_one(todo[i][0], int(todo[i][1]), todo[i][2], timeout))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(todo))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump(results, sys.stdout)


def connect(addr: str, port: int, protocol: str, count: int, timeout: float) -> None:
    check = _tcp if protocol == "TCP" else _udp
    results = (check(addr, port, timeout) for _ in range(count))
    json.dump([{"allow": answer, "deny": ""}.get(verdict, f"error: {answer}") for verdict, answer in results],
              sys.stdout)


def refusal(addr: str, port: int, protocol: str, timeout: float, dstopts: bool = False) -> None:
    """One attempt on a connected socket (UDP too: only a connected one hears of an ICMP error) and how it
    ended, as JSON: ``refused`` (an ICMP port unreachable or a TCP RST: kube-proxy's REJECT), ``answered``
    or ``timeout``, and after how many seconds. ``dstopts``: an IPv6 Destination Options header on every
    packet the socket sends (a sticky option), which nf_node's PREROUTING does not let on to a REJECT."""
    start = time.monotonic()
    with socket.socket(_family(addr), socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM) as sock:
        if dstopts:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
        sock.settimeout(timeout)
        try:
            sock.connect((addr, port))
            if protocol != "TCP":
                sock.send(b"probe")
            sock.recv(256)
            outcome = "answered"
        except ConnectionRefusedError:
            outcome = "refused"
        except socket.timeout:
            outcome = "timeout"
    json.dump({"outcome": outcome, "seconds": round(time.monotonic() - start, 3)}, sys.stdout)


def stream(addr: str, port: int, name: str, interval: float) -> None:
    sock = socket.socket(_family(addr), socket.SOCK_DGRAM)
    sock.connect((addr, port))
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    sent = []
    n = 0
    next_at = time.monotonic()
    print("started", flush=True)
    while not stop.is_set():
        sent.append([n, time.monotonic()])  # taken before sending: the datagram left after this
        try:
            sock.send(f"seq {name} {n}".encode())
        except OSError:
            pass  # ICMP errors of earlier datagrams surface here; the sequence number still counts
        n += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    json.dump({"sent": sent}, sys.stdout)


def hold(addr: str, port: int) -> None:
    try:
        sock = socket.create_connection((addr, port), timeout=2)
        sock.recv(256)
    except OSError:
        print("failed", flush=True)
        return
    print("connected", flush=True)
    sock.settimeout(1.0)
    for line in sys.stdin:
        try:
            sock.send(line.encode())
            print(sock.recv(256).decode().strip() or "closed", flush=True)
        except socket.timeout:
            print("timeout", flush=True)
        except OSError as exc:
            print(f"error {exc}", flush=True)


def _bind(kind: int, port: int) -> socket.socket:
    sock = _listen(kind, port)
    sock.setblocking(True)
    print("ready", flush=True)
    return sock


def sink(port: int) -> None:
    server = _bind(socket.SOCK_STREAM, port)
    conn, _ = server.accept()
    total = 0
    while data := conn.recv(65536):
        total += len(data)
    conn.sendall(str(total).encode())
    conn.close()


def send(addr: str, port: int, nbytes: int, timeout: float) -> None:
    try:
        with socket.create_connection((addr, port), timeout=timeout) as sock:
            sock.sendall(b"x" * nbytes)
            sock.shutdown(socket.SHUT_WR)
            answer = sock.recv(64).decode()
        print(json.dumps({"answer": answer}))
    except OSError as exc:
        print(json.dumps({"error": str(exc)}))


def udpecho(port: int) -> None:
    sock = _bind(socket.SOCK_DGRAM, port)
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(b"y" * len(data), peer)


def udpbig(addr: str, port: int, nbytes: int, timeout: float) -> None:
    with socket.socket(_family(addr), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(b"x" * nbytes, (addr, port))
            print(len(sock.recvfrom(65535)[0]))
        except OSError:
            print(0)


def _raw_send(packets: list[bytes], dst: str) -> int:
    """IPv4 packets with their own headers (any source address) through a raw socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        for pkt in packets:
            sock.sendto(pkt, (dst, 0))
    return len(packets)


def spoof(src: str, addr: str, port: int, name: str) -> None:
    from scapy.layers.inet import IP, UDP  # crafted packets: scapy builds, a raw socket sends
    _raw_send([bytes(IP(src=src, dst=addr) / UDP(sport=40999, dport=port) / f"seq {name} 0".encode())], addr)
    print("sent", flush=True)


def vxlan(node: str, vni: int, mac: str, src: str, addr: str, port: int, name: str) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    inner = (IPv6(src=src, dst=addr) if ":" in addr else IP(src=src, dst=addr)) / UDP(sport=40999, dport=port)
    frame = Ether(src="02:00:00:00:fe:02", dst=mac) / inner / f"seq {name} 0".encode()
    header = struct.pack("!II", 0x08000000, vni << 8)  # flag I, the VNI (scapy's VXLAN adds GPE bits)
    _raw_send([bytes(IP(dst=node) / UDP(sport=49999, dport=4789, chksum=0) / header / frame)], node)
    print("sent", flush=True)


def tagged(tpids: str, addr: str, port: int, name: str, mac: str) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    types = [int(t, 16) for t in tpids.split(",")] + [0x0800]
    datagram = IP(src=_own_address(addr), dst=addr) / UDP(sport=40999, dport=port) / f"seq {name} 0".encode()
    tags = b"".join(struct.pack("!HH", 0, inner) for inner in types[1:])  # TCI 0 (VID 0), the next ethertype
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind(("eth0", 0))
        sock.send(bytes(Ether(src=sock.getsockname()[4], dst=mac, type=types[0])) + tags + bytes(datagram))
    print("sent", flush=True)


def unreach_wait(addr: str, port: int, sport: int, timeout: float) -> None:
    from scapy.layers.inet import ICMP, IP, UDPerror  # scapy parses an ICMP error's quote as IPerror/UDPerror
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as icmp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("", sport))
        udp.sendto(b"quoted", (addr, port))
        print("sent", flush=True)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            icmp.settimeout(left)
            try:
                pkt = IP(icmp.recv(65535))
            except socket.timeout:
                break
            err = pkt.getlayer(ICMP)
            if err is not None and err.type == 3 and err.code == 3 and UDPerror in err \
                    and err[UDPerror].sport == sport:
                print("got", flush=True)
                return
    print("none", flush=True)


def unreach_send(dst: str, qsport: int, qdport: int, size: int, linear: int, mac: str) -> None:
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import Ether
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind(("eth0", 0))
        sock.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR: each frame starts with a virtio_net_hdr
        own = _own_address(dst)
        quoted = IP(src=dst, dst=own) / UDP(sport=qsport, dport=qdport) / b"quoted"
        pkt = Ether(src=sock.getsockname()[4], dst=mac) / IP(src=own, dst=dst) / ICMP(type=3, code=3) / quoted
        data = bytes(pkt / (b"\0" * max(0, size - len(pkt))))
        sock.send(struct.pack("<BBHHHH", 0, 0, linear, 0, 0, 0) + data)  # no GSO, no checksum offload
    print("sent", flush=True)


def _own_address(dst: str) -> str:
    """The source address this pod's kernel picks towards ``dst``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((dst, 9))
        return probe.getsockname()[0]


def synflood(addr: str, port: int, count: int) -> None:
    from scapy.layers.inet import IP, TCP
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((addr, port))
        src = probe.getsockname()[0]  # the pod's own address: source validation lets it out
    packets = [bytes(IP(src=src, dst=addr) / TCP(sport=1024 + n % 60000, dport=port, flags="S", seq=n))
               for n in range(count)]
    print(f"sent {_raw_send(packets, addr)}", flush=True)


def udppush(port: int) -> None:
    sock = _bind(socket.SOCK_DGRAM, port)
    _, peer = sock.recvfrom(2048)
    sock.sendto(b"first", peer)
    for line in sys.stdin:
        sock.sendto(line.strip().encode(), peer)
        print("sent", flush=True)


def udpwait(addr: str, port: int, timeout: float) -> None:
    sock = socket.socket(_family(addr), socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    sock.connect((addr, port))

    def answer() -> str:
        try:
            return sock.recv(2048).decode().strip()
        except socket.timeout:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"

    sock.send(b"hello")
    print(sock.getsockname()[1], answer(), flush=True)
    for _ in sys.stdin:
        print(answer(), flush=True)


def unreach(src: str, dst: str, qsrc: str, qsport: int, qdst: str, qdport: int) -> None:
    from scapy.layers.inet import ICMP, IP, UDP
    quoted = IP(src=qsrc, dst=qdst) / UDP(sport=qsport, dport=qdport) / b"hello"
    _raw_send([bytes(IP(src=src, dst=dst) / ICMP(type=3, code=3) / quoted)], dst)
    print("sent", flush=True)


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "serve":
        seqlog = None
        if "--seqlog" in argv:
            i = argv.index("--seqlog")
            seqlog = argv[i + 1]
            argv = argv[:i] + argv[i + 2:]
        serve(argv[1], [int(p) for p in argv[2:]], seqlog)
    elif mode == "probe":
        probe(float(argv[1]))
    elif mode == "stream":
        stream(argv[1], int(argv[2]), argv[3], float(argv[4]))
    elif mode == "connect":
        connect(argv[1], int(argv[2]), argv[3], int(argv[4]), float(argv[5]))
    elif mode == "refusal":
        refusal(argv[1], int(argv[2]), argv[3], float(argv[4]), argv[5:] == ["dstopts"])
    elif mode == "hold":
        hold(argv[1], int(argv[2]))
    elif mode == "sink":
        sink(int(argv[1]))
    elif mode == "send":
        send(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
    elif mode == "udpecho":
        udpecho(int(argv[1]))
    elif mode == "udpbig":
        udpbig(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
    elif mode == "spoof":
        spoof(argv[1], argv[2], int(argv[3]), argv[4])
    elif mode == "vxlan":
        vxlan(argv[1], int(argv[2]), argv[3], argv[4], argv[5], int(argv[6]), argv[7])
    elif mode == "tagged":
        tagged(argv[1], argv[2], int(argv[3]), argv[4], argv[5])
    elif mode == "unreach_wait":
        unreach_wait(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
    elif mode == "unreach_send":
        unreach_send(argv[1], int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5]), argv[6])
    elif mode == "synflood":
        synflood(argv[1], int(argv[2]), int(argv[3]))
    elif mode == "udppush":
        udppush(int(argv[1]))
    elif mode == "udpwait":
        udpwait(argv[1], int(argv[2]), float(argv[3]))
    elif mode == "unreach":
        unreach(argv[1], argv[2], argv[3], int(argv[4]), argv[5], int(argv[6]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
