"""A physical uplink in the preseed: the interface must be free (real veth pairs and a real
bridge on this host), its IPv4 network well-formed; every problem named, nothing changed."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator

import pytest

from microcloudd.api.errors import InvalidArgument
from microcloudd.init import preseed


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def links() -> Iterator[dict[str, str]]:
    """Three host veth ends (free, addressed, bridged) and a bridge; ours by a per-test tag."""
    tag = os.urandom(3).hex()
    names = {"free": f"hcf{tag}", "addressed": f"hca{tag}", "bridged": f"hcb{tag}", "bridge": f"hcr{tag}"}
    try:
        for kind in ("free", "addressed", "bridged"):
            ip("link", "add", names[kind], "type", "veth", "peer", "name", names[kind] + "p")
        ip("addr", "add", "192.0.2.77/24", "dev", names["addressed"])
        ip("link", "add", names["bridge"], "type", "bridge")
        ip("link", "set", names["bridged"], "master", names["bridge"])
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "link", "del", name], capture_output=True)


def plan_text(uplink: str, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        member: n1
        storage: {{file_osd_size: 4GiB}}
        network:
          uplink: {uplink}
        """) + extra


def problems(text: str) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as e:
        preseed.parse(text, "init.yaml")
    return {str(p["key"]): str(p["message"]) for p in e.value.details["problems"]}


GOOD = "  uplink_gateway: 198.51.100.1/24\n  uplink_range: 198.51.100.100-198.51.100.150\n"


def test_a_free_interface_with_its_network_is_a_plan(links: dict[str, str]) -> None:
    plan = preseed.parse(plan_text(links["free"], GOOD + "  uplink_dns: [198.51.100.53]\n"), "init.yaml")
    assert plan.network.uplink == links["free"]
    assert plan.network.uplink_gateway == "198.51.100.1/24"
    assert plan.network.uplink_range == "198.51.100.100-198.51.100.150"


def test_busy_or_unknown_interfaces_are_refused(links: dict[str, str]) -> None:
    def why(uplink: str) -> str:
        return problems(plan_text(uplink, GOOD))["network.uplink"]

    assert "192.0.2.77/24, so the host uses it" in why(links["addressed"])
    assert f"already a port of {links['bridge']}" in why(links["bridged"])
    assert "is a bridge or bond" in problems(plan_text(links["bridge"], GOOD))["network.uplink"]
    assert "no such network interface" in problems(plan_text("hcnosuch0", GOOD))["network.uplink"]
    assert "loopback" in problems(plan_text("lo", GOOD))["network.uplink"]
    # nothing changed: the addressed one keeps its address, the bridged one its bridge
    out = subprocess.run(["ip", "-br", "addr", "show", "dev", links["addressed"]], capture_output=True,
                         text=True, check=True).stdout
    assert "192.0.2.77/24" in out
    assert os.path.exists(f"/sys/class/net/{links['bridged']}/master")


def test_the_uplink_network_is_checked(links: dict[str, str]) -> None:
    free = links["free"]
    ps = problems(plan_text(free))
    assert "needs uplink_gateway: its upstream router's address/prefix" in ps["network"]  # line of network:
    ps = problems(plan_text(free, "  uplink_gateway: 198.51.100.0/24\n  uplink_range: 1-2\n"
                                  "  uplink_dns: [resolver]\n"))
    assert "router's address" in ps["network.uplink_gateway"]
    ps = problems(plan_text(free, "  uplink_gateway: 198.51.100.1/24\n"
                                  "  uplink_range: 198.51.100.1-198.51.100.9\n"
                                  "  uplink_dns: [resolver]\n  subnet: 198.51.100.1/25\n"))
    assert "contains the gateway 198.51.100.1" in ps["network.uplink_range"]
    assert "not an IP address" in ps["network.uplink_dns[0]"]
    assert "overlaps the uplink network 198.51.100.0/24" in ps["network.subnet"]
    ps = problems(plan_text(free, "  uplink_gateway: 198.51.100.1/24\n  uplink_range: 10.0.0.1-10.0.0.9\n"))
    assert "host addresses in 198.51.100.0/24" in ps["network.uplink_range"]
    ps = problems(plan_text("nat", GOOD))
    assert "only for a physical uplink" in ps["network.uplink_gateway"]
