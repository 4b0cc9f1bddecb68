"""Isolated LANs are declared, and each appliance's LAN of a name is its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.errors import InUse, UsageError
from cairn.virt.lans import Lans, UnknownLan
from cairn.virt.network import join_lans, parse_networks, qemu_args


def test_two_appliances_on_one_host_do_not_share_a_lan_of_the_same_name(tmp_path: Path) -> None:
    first, second = Lans(tmp_path / "a"), Lans(tmp_path / "b")
    for lans in (first, second):
        lans.path.parent.mkdir()
        lans.add("office")
    nets = parse_networks(["isolated:office"])
    here = qemu_args(join_lans(nets, first), "dc", "e1000")
    again = qemu_args(join_lans(nets, Lans(tmp_path / "a")), "app", "e1000")
    there = qemu_args(join_lans(nets, second), "dc", "e1000")
    assert here[1].startswith("socket,id=net0,mcast=239.") and here[1].endswith(
        ",localaddr=127.0.0.1")
    assert here[1] == again[1]  # VMs of one appliance meet on its LAN
    assert here[1] != there[1]  # the other appliance's "office" is another LAN
    assert (first.path.stat().st_mode & 0o777) == 0o600


def test_an_undeclared_lan_is_refused_and_a_used_one_is_kept(tmp_path: Path) -> None:
    lans = Lans(tmp_path)
    with pytest.raises(UnknownLan, match=r"no isolated LAN 'office' \(none declared yet\)"):
        join_lans(parse_networks(["nat", "isolated:office"]), lans)
    lans.add("office")
    with pytest.raises(UnknownLan, match=r"'ofice' \(declared: office\).*cairn vm lan add"):
        join_lans(parse_networks(["isolated:ofice"]), lans)
    with pytest.raises(UsageError, match="already declared"):
        lans.add("office")
    with pytest.raises(InUse, match=r"VMs on it \(dc\)"):
        lans.remove("office", ["dc"])
    assert [lan.name for lan in lans.list()] == ["office"]
    lans.remove("office", [])
    assert lans.list() == []
    with pytest.raises(UsageError, match="no isolated LAN 'office' to remove"):
        lans.remove("office", [])
