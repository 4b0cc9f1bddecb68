"""What a VM is plugged into: nothing, an isolated LAN, NAT to the outside, or a host bridge.

``--network`` values, each one NIC (give several for several NICs):

- ``none``: no NIC at all (the default, and what a verification wants);
- ``isolated:LAN``: a virtual LAN shared by every VM started with the same LAN name and
  reaching nothing else. The LAN must be declared first (`cairn.virt.lans`). It is QEMU's
  socket backend on a multicast group bound to loopback (``localaddr=127.0.0.1``, TTL 0 on
  the host side), so frames never leave the host; the group and port are derived from the
  LAN's random identity, not its name, so another appliance's LAN of the same name on this
  host is another LAN;
- ``nat[,hostfwd=tcp::8080-:80...]``: QEMU's user networking: outbound connections, DHCP,
  and optional forwards of host ports (checked free before QEMU starts);
- ``bridge:BR``: onto an existing host bridge through ``qemu-bridge-helper`` (the bridge
  must exist and be allowed in ``/etc/qemu/bridge.conf``).

MAC addresses are derived from the VM name and NIC index (locally administered QEMU range
``52:54:00``), so a VM keeps its address across restarts and DHCP leases stay stable.
"""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path

from cairn.errors import UsageError
from cairn.virt.lans import LAN_NAME, Lans

_HOSTFWD = re.compile(r"^(tcp|udp):(127\.0\.0\.1|0\.0\.0\.0)?:(\d{1,5})-(\d{1,3}(?:\.\d{1,3}){3})?"
                      r":(\d{1,5})$")
_SYSFS_NET = Path("/sys/class/net")
_LAN_PORT_BASE = 20000
_LAN_PORTS = 20000


@dataclass(frozen=True)
class Network:
    """One NIC: its kind (``isolated``, ``nat``, ``bridge``), LAN or bridge, and forwards;
    ``identity``: an isolated LAN's, once `join_lans` found it declared."""

    kind: str
    name: str = ""
    forwards: tuple[str, ...] = ()
    identity: str = ""

    def describe(self) -> str:
        if self.kind == "nat":
            return ",".join(("nat", *(f"hostfwd={f}" for f in self.forwards)))
        return f"{self.kind}:{self.name}"


def parse_networks(values: list[str]) -> list[Network]:
    """Parse ``--network`` values; ``none`` alone means no NIC. Refuses anything unknown."""
    if not values or values == ["none"]:
        return []
    return [parse_network(v) for v in values]


def parse_network(text: str) -> Network:
    kind, _, rest = text.partition(":")
    if text.startswith("nat"):
        options = text.split(",")
        if options[0] != "nat" or any(not o.startswith("hostfwd=") for o in options[1:]):
            raise UsageError(f"--network {text!r}: write nat or nat,hostfwd=tcp::8080-:80")
        forwards = tuple(o[len("hostfwd="):] for o in options[1:])
        for forward in forwards:
            if not _HOSTFWD.match(forward):
                raise UsageError(f"--network {text!r}: a forward looks like tcp::8080-:80 "
                                 "(host port 8080 to guest port 80)")
        return Network("nat", forwards=forwards)
    if kind in ("isolated", "bridge") and rest:
        if not LAN_NAME.match(rest):
            raise UsageError(f"--network {text!r}: name the {kind} with letters, digits, "
                             "'.', '_' and '-' (up to 32)")
        return Network(kind, rest)
    raise UsageError(f"--network {text!r} is not none, isolated:LAN, nat[,hostfwd=...] or "
                     "bridge:BR")


def join_lans(networks: list[Network], lans: Lans) -> list[Network]:
    """The networks with each isolated LAN's identity; refuses a LAN not declared."""
    return [replace(n, identity=lans.get(n.name).identity) if n.kind == "isolated" else n
            for n in networks]


def check_available(networks: list[Network]) -> None:
    """Refuse, before QEMU starts, a bridge that does not exist or a host port in use."""
    for network in networks:
        if network.kind == "bridge" and not (_SYSFS_NET / network.name / "bridge").is_dir():
            raise UsageError(f"there is no bridge {network.name!r} on this host: create it "
                             f"(`ip link add {network.name} type bridge`) or pick another")
        for forward in network.forwards:
            proto, address, port = _host_side(forward)
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, kind) as probe:
                try:
                    probe.bind((address, port))
                except OSError:
                    raise UsageError(f"host port {port} ({proto}) is already in use: forward "
                                     "another port") from None


def _host_side(forward: str) -> tuple[str, str, int]:
    match = _HOSTFWD.match(forward)
    assert match is not None  # parse_network checked it
    return match.group(1), match.group(2) or "0.0.0.0", int(match.group(3))


def mac_address(vm_name: str, index: int) -> str:
    digest = hashlib.sha256(f"{vm_name}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def lan_group(identity: str) -> tuple[str, int]:
    """The multicast group and port of an isolated LAN: the same for every VM on it."""
    digest = hashlib.sha256(f"cairn-lan/{identity}".encode()).digest()
    group = f"239.{digest[0]}.{digest[1]}.{max(1, digest[2])}"
    return group, _LAN_PORT_BASE + int.from_bytes(digest[3:5], "big") % _LAN_PORTS


def qemu_args(networks: list[Network], vm_name: str, model: str) -> list[str]:
    """The QEMU arguments for these NICs (``model``: virtio-net-pci or e1000)."""
    args: list[str] = []
    for index, network in enumerate(networks):
        nic = f"{model},netdev=net{index},mac={mac_address(vm_name, index)}"
        args += ["-netdev", _netdev(network, index), "-device", nic]
    return args


def _netdev(network: Network, index: int) -> str:
    if network.kind == "nat":
        return ",".join((f"user,id=net{index}", *(f"hostfwd={f}" for f in network.forwards)))
    if network.kind == "bridge":
        return f"bridge,id=net{index},br={network.name}"
    assert network.identity, "join_lans first"
    group, port = lan_group(network.identity)
    return f"socket,id=net{index},mcast={group}:{port},localaddr=127.0.0.1"
