"""Every frame on a network interface, read with an AF_PACKET socket (no tcpdump needed), searched
for secrets as it passes; plaintext TCP flows to chosen ports are also kept whole, so a secret
split across segments is found too. Test-only: it proves what did (not) cross the guest's veth."""

from __future__ import annotations

import socket
import struct
import threading
from collections import defaultdict
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33  # linux/asm-generic/socket.h; Python's socket module does not name it
RECEIVE_BUFFER = 64 << 20
_TLS_HANDSHAKE = 0x16
_FLOW_LIMIT = 1 << 20
# The guest's own services; everything else is the guest as a client (packages, S3, ACME) or
# traffic the guest does not take part in.
_SERVICE_PORTS = {22, 80, 443, 4200, 4201}


@dataclass
class Flow:
    client: tuple[str, int]
    server: tuple[str, int]
    first_byte: int | None = None  # of the client's first payload: 0x16 is a TLS handshake
    client_bytes: bytearray = field(default_factory=bytearray)

    @property
    def tls(self) -> bool:
        return self.first_byte == _TLS_HANDSHAKE


class PacketCapture:
    """Start with `with PacketCapture("vh-ph2", needles, watch_ports={443, 4200}) as capture:`;
    after the block: `capture.hits` (needle, src, dst) and `capture.flows` to the watched ports."""

    def __init__(self, interface: str, needles: list[bytes], *, server_ip: str, watch_ports: set[int]):
        self.needles = [n for n in needles if n]
        self.server_ip = server_ip
        self.watch_ports = watch_ports
        self.hits: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []
        self.flows: dict[tuple, Flow] = {}
        self.frames = 0
        self.dropped = 0
        self.bytes_by_port: dict[int | str, int] = defaultdict(int)
        self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        # SO_RCVBUF is capped at net.core.rmem_max (often 4 MiB: frames drop while the machine is busy);
        # root may force the size past it.
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except PermissionError:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self._socket.bind((interface, 0))
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PacketCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.drops()
        self._socket.close()

    def drops(self) -> int:
        """Frames the kernel dropped for want of buffer space since the previous call."""
        _, dropped = struct.unpack("II", self._socket.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.dropped += dropped
        return self.dropped

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._socket.recv(1 << 16)
            except TimeoutError:
                continue
            self.frames += 1
            self._inspect(frame)

    def _inspect(self, frame: bytes) -> None:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":  # IPv4 only: the guest's link has no IPv6
            return
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        if ip[9] != socket.IPPROTO_TCP:
            return
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        total = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[header:total]
        sport, dport = struct.unpack("!HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if not payload:
            return
        guest_port = dport if dst == self.server_ip else sport if src == self.server_ip else None
        self.bytes_by_port[guest_port if guest_port in _SERVICE_PORTS else "other"] += len(payload)
        for needle in self.needles:
            if needle in payload:
                self.hits.append((needle, (src, sport), (dst, dport)))
        if dst == self.server_ip and dport in self.watch_ports:
            key = (src, sport, dst, dport)
            flow = self.flows.setdefault(key, Flow(client=(src, sport), server=(dst, dport)))
            if flow.first_byte is None:
                flow.first_byte = payload[0]
            if not flow.tls and len(flow.client_bytes) < _FLOW_LIMIT:
                flow.client_bytes += payload

    def plaintext_hits(self) -> list[tuple[bytes, Flow]]:
        """Needles in the reassembled (in arrival order) client bytes of non-TLS watched flows."""
        return [
            (needle, flow)
            for flow in self.flows.values()
            if not flow.tls
            for needle in self.needles
            if needle in flow.client_bytes
        ]
