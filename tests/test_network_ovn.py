"""The OVN network driver against real NB/SB ovsdb-servers and ovn-northd: the logical
topology of each call in the NB database, northd's logical flows for it in the SB, bad
input refused with nothing half-created, idempotency, drift repair."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from microcloudd.api.errors import AlreadyExists, InUse, InvalidArgument, NotFound, QuotaExceeded
from microcloudd.drivers.network.base import (
    AclRule,
    AclSpec,
    DesiredState,
    ForwardPort,
    ForwardSpec,
    NetworkSpec,
    PortSpec,
)
from microcloudd.drivers.network.ovn import OvnNetworkDriver
from tests.fixtures.network_services import nb_rows

TABLES = ("Logical_Switch", "Logical_Switch_Port", "Logical_Router", "Logical_Router_Port", "NAT",
          "Logical_Router_Static_Route", "DHCP_Options", "DNS", "Port_Group", "ACL", "Load_Balancer",
          "Gateway_Chassis")


def rows(central: Any, table: str, **where: str) -> list[dict[str, Any]]:
    """NB rows as dicts (ovn-nbctl's JSON, maps and sets decoded)."""
    return [row for row in nb_rows(central, table) if all(str(row.get(k)) == v for k, v in where.items())]


def lflows(central: Any) -> list[str]:
    central.nbctl("--wait=sb", "sync")
    out = json.loads(central.sbctl("--format=json", "--columns=match,actions", "list", "Logical_Flow"))
    return [f"{m} => {a}" for m, a in out["data"]]


def snapshot(central: Any) -> dict[str, int]:
    return {t: len(rows(central, t)) for t in TABLES}


def dns_of(central: Any, network: str) -> dict[str, Any]:
    return next(d for d in rows(central, "DNS") if d["external_ids"].get("microcloud:network") == network)


def net_name() -> str:
    return f"n{uuid.uuid4().hex[:6]}"


async def test_network_topology_in_nb_and_flows_in_sb(
    network_driver: OvnNetworkDriver, ovn_central: Any
) -> None:
    name = net_name()
    info = await network_driver.create_network(NetworkSpec(
        name=name, ipv4_address="10.51.0.1/24", ipv6_address="fd51::1/64", lease_time=600, mtu=1400))
    assert info.spec.uplink_address == "192.0.2.100" and info.ports == 0
    p = network_driver.names
    ls = rows(ovn_central, "Logical_Switch", name=p.switch(name))[0]
    assert ls["other_config"] == {"subnet": "10.51.0.0/24", "exclude_ips": "10.51.0.1",
                                  "ipv6_prefix": "fd51::"}
    assert ls["external_ids"]["microcloud:owner"] == network_driver.owner
    assert ls["external_ids"]["microcloud:revision"] == "1"
    lr = rows(ovn_central, "Logical_Router", name=p.router(name))[0]
    assert len(lr["ports"]) == 2 and isinstance(lr["nat"], str) and isinstance(lr["static_routes"], str)
    nat = rows(ovn_central, "NAT", _uuid=lr["nat"])[0]
    assert (nat["type"], nat["external_ip"], nat["logical_ip"]) == ("snat", "192.0.2.100", "10.51.0.0/24")
    route = rows(ovn_central, "Logical_Router_Static_Route", _uuid=lr["static_routes"])[0]
    assert (route["ip_prefix"], route["nexthop"]) == ("0.0.0.0/0", "192.0.2.1")
    lrp_int = rows(ovn_central, "Logical_Router_Port", name=p.router_port_internal(name))[0]
    assert set(lrp_int["networks"]) == {"10.51.0.1/24", "fd51::1/64"}
    assert lrp_int["ipv6_ra_configs"]["address_mode"] == "slaac"
    lrp_ext = rows(ovn_central, "Logical_Router_Port", name=p.router_port_uplink(name))[0]
    assert lrp_ext["networks"] == "192.0.2.100/24"
    gw = rows(ovn_central, "Gateway_Chassis", _uuid=lrp_ext["gateway_chassis"])[0]
    assert gw["chassis_name"] == "mc-test-gw"
    dhcp = rows(ovn_central, "DHCP_Options", cidr="10.51.0.0/24")[0]["options"]
    assert dhcp["router"] == "10.51.0.1" and dhcp["lease_time"] == "600" and dhcp["mtu"] == "1400"
    assert dhcp["dns_server"] == "{192.0.2.53}" and dhcp["server_mac"] == lrp_int["mac"]
    assert rows(ovn_central, "DNS", _uuid=ls["dns_records"])
    uplink_ports = rows(ovn_central, "Logical_Switch_Port", name=p.uplink_router_port(name))
    assert uplink_ports[0]["options"] == {"router-port": p.router_port_uplink(name)}

    flows = lflows(ovn_central)
    assert any("ct_snat(192.0.2.100)" in f for f in flows)
    assert any("ip4.src == 10.51.0.0/24" in f and "ct_snat(192.0.2.100)" in f for f in flows)
    assert any("put_nd_ra_opts" in f and "fd51::" in f for f in flows)

    got = await network_driver.get_network(name)
    assert got.spec == info.spec
    assert [n.spec.name for n in await network_driver.list_networks()] == [name]


async def test_ports_addresses_dns_and_leases(
    network_driver: OvnNetworkDriver, ovn_central: Any
) -> None:
    name = net_name()
    await network_driver.create_network(NetworkSpec(name=name, ipv4_address="10.52.0.1/24"))
    static = await network_driver.create_port(PortSpec(network=name, name="web/eth0", ipv4="10.52.0.10",
                                                       mac="0a:52:00:00:00:10", hostname="web"))
    dyn = await network_driver.create_port(PortSpec(network=name, name="db/eth0", hostname="db"))
    uuid.UUID(static.id)
    assert (static.ipv4, static.dynamic, static.mac) == ("10.52.0.10", False, "0a:52:00:00:00:10")
    assert dyn.dynamic and dyn.ipv4 is not None
    assert dyn.ipv4.startswith("10.52.0.") and dyn.ipv4 not in ("10.52.0.1", "10.52.0.10")

    lsp = rows(ovn_central, "Logical_Switch_Port", name=static.id)[0]
    assert lsp["addresses"] == "0a:52:00:00:00:10 10.52.0.10"
    assert lsp["external_ids"]["microcloud:name"] == "web/eth0"
    assert lsp["dhcpv4_options"]  # the network's DHCP options
    dns = dns_of(ovn_central, name)
    assert dns["records"] == {"web": "10.52.0.10", "web.microcloud": "10.52.0.10",
                              "db": dyn.ipv4, "db.microcloud": dyn.ipv4}

    leases = await network_driver.leases(name)
    assert {(lease.hostname, lease.address, lease.type) for lease in leases} == {
        (f"{name}.gw", "10.52.0.1", "gateway"), ("web", "10.52.0.10", "static"), ("db", dyn.ipv4, "dynamic")}
    flows = lflows(ovn_central)
    assert any("10.52.0.10" in f and "put_dhcp_opts" in f for f in flows)
    assert any(f'"{static.id}"' in f for f in flows)  # northd made flows for the port itself

    # idempotent creates/deletes
    again = await network_driver.create_port(PortSpec(network=name, name="web/eth0", id=static.id,
                                                      ipv4="10.52.0.10"), may_exist=True)
    assert again.id == static.id and len(await network_driver.list_ports(name)) == 2
    with pytest.raises(AlreadyExists):
        await network_driver.create_port(PortSpec(network=name, name="x", id=static.id))
    await network_driver.delete_port(static.id)
    await network_driver.delete_port(static.id, if_exists=True)
    with pytest.raises(NotFound):
        await network_driver.delete_port(static.id)
    dns = dns_of(ovn_central, name)
    assert "web" not in dns["records"]


async def test_bad_input_is_refused_and_leaves_nothing(
    network_driver: OvnNetworkDriver, ovn_central: Any
) -> None:
    name = net_name()
    await network_driver.create_network(NetworkSpec(name=name, ipv4_address="10.53.0.1/24"))
    port = await network_driver.create_port(PortSpec(network=name, name="a", ipv4="10.53.0.5"))
    before = snapshot(ovn_central)
    bad_networks = [
        (NetworkSpec(name=net_name(), ipv4_address="10.53.0.300/24"), InvalidArgument, "not an IPv4"),
        (NetworkSpec(name=net_name(), ipv4_address="10.54.0.1"), InvalidArgument, "prefix length"),
        (NetworkSpec(name=net_name(), ipv4_address="10.54.0.0/24"), InvalidArgument, "network or broadcast"),
        (NetworkSpec(name=net_name(), ipv4_address="10.53.200.1/16"), InvalidArgument, f"network {name}"),
        (NetworkSpec(name=net_name(), ipv4_address="192.0.2.129/25"), InvalidArgument, "the uplink"),
        (NetworkSpec(name=net_name(), ipv4_address="10.55.0.1/24", ipv6_address="fd55::1/48"),
         InvalidArgument, "/64"),
        (NetworkSpec(name="bad_name", ipv4_address="10.56.0.1/24"), InvalidArgument, "Invalid network name"),
        (NetworkSpec(name=name, ipv4_address="10.57.0.1/24"), AlreadyExists, "already exists"),
        (NetworkSpec(name=net_name(), ipv4_address="10.58.0.1/24", uplink_address="192.0.2.100"),
         AlreadyExists, "already used"),
    ]
    for spec, error, text in bad_networks:
        with pytest.raises(error, match=text):
            await network_driver.create_network(spec)
    bad_ports = [
        (PortSpec(network=name, name="b", ipv4="10.99.0.5"), InvalidArgument, "not inside"),
        (PortSpec(network=name, name="b", ipv4="10.53.0.5"), AlreadyExists, "already used"),
        (PortSpec(network=name, name="b", ipv4="10.53.0.1"), AlreadyExists, "gateway"),
        (PortSpec(network=name, name="b", mac="01:00:00:00:00:01"), InvalidArgument, "unicast MAC"),
        (PortSpec(network=name, name="b", id="not-a-uuid"), InvalidArgument, "UUID"),
        (PortSpec(network=name, name="b", acls=("nope",)), NotFound, "nope"),
        (PortSpec(network="missing", name="b"), NotFound, "missing"),
    ]
    for pspec, error, text in bad_ports:
        with pytest.raises(error, match=text):
            await network_driver.create_port(pspec)
    with pytest.raises(InUse, match="still has 1 port"):
        await network_driver.delete_network(name)
    assert snapshot(ovn_central) == before

    await network_driver.delete_port(port.id)
    await network_driver.delete_network(name)
    await network_driver.delete_network(name, if_exists=True)
    with pytest.raises(NotFound):
        await network_driver.delete_network(name)
    assert not [r for t in TABLES for r in rows(ovn_central, t)
                if r.get("external_ids", {}).get("microcloud:network") == name]


async def test_create_network_is_idempotent_and_update_keeps_ports(
    network_driver: OvnNetworkDriver, ovn_central: Any
) -> None:
    name = net_name()
    spec = NetworkSpec(name=name, ipv4_address="10.59.0.1/24")
    first = await network_driver.create_network(spec)
    before = snapshot(ovn_central)
    again = await network_driver.create_network(spec, may_exist=True)
    assert again.spec == first.spec and snapshot(ovn_central) == before
    await network_driver.create_port(PortSpec(network=name, name="a"))
    upd = await network_driver.update_network(NetworkSpec(name=name, ipv4_address="10.59.0.1/24", mtu=1300,
                                                          lease_time=120, revision=2))
    assert upd.spec.uplink_address == first.spec.uplink_address and upd.ports == 1
    dhcp = rows(ovn_central, "DHCP_Options", cidr="10.59.0.0/24")[0]["options"]
    assert (dhcp["mtu"], dhcp["lease_time"]) == ("1300", "120")
    with pytest.raises(InUse):
        await network_driver.update_network(NetworkSpec(name=name, ipv4_address="10.60.0.1/24"))


async def test_acls_compile_apply_and_refuse_bad_rules(
    network_driver: OvnNetworkDriver, ovn_central: Any
) -> None:
    name = net_name()
    await network_driver.create_network(NetworkSpec(name=name, ipv4_address="10.61.0.1/24"))
    web = AclSpec(name="web", ingress=(
        AclRule(action="allow", protocol="tcp", destination_port="80,443,8000-8080"),
        AclRule(action="drop", source="10.61.0.0/28,fd00::/8", protocol="icmp4", icmp_type="8"),
    ), egress=(AclRule(action="reject", destination="198.51.100.0/24"),))
    await network_driver.create_acl(web)
    assert await network_driver.get_acl("web") == web
    pg_name = f"{network_driver.names.prefix}_acl_web"
    pg = rows(ovn_central, "Port_Group", name=pg_name)[0]
    acls = {(a["direction"], a["priority"], a["match"], a["action"])
            for a in rows(ovn_central, "ACL") if a["_uuid"] in pg["acls"]}
    assert acls == {
        ("to-lport", 1200, f"outport == @{pg_name} && ip && tcp && (tcp.dst == {{80, 443}} || "
                           "(tcp.dst >= 8000 && tcp.dst <= 8080))", "allow-related"),
        ("to-lport", 1300, f"outport == @{pg_name} && ip4 && ip4.src == 10.61.0.0/28 && icmp4 && "
                           "icmp4.type == 8", "drop"),
        ("from-lport", 1300, f"inport == @{pg_name} && ip4 && ip4.dst == 198.51.100.0/24", "reject"),
    }

    before = snapshot(ovn_central)
    bad_rules = [
        (AclRule(action="permit"), "unknown action"),
        (AclRule(action="allow", source="10.0.0.300"), "not an IP address"),
        (AclRule(action="allow", destination_port="80"), "need protocol tcp or udp"),
        (AclRule(action="allow", protocol="sctp"), "unknown protocol"),
        (AclRule(action="allow", protocol="tcp", destination_port="70000"), "out of range"),
        (AclRule(action="allow", protocol="icmp4", source="fd00::1"), "never matches"),
        (AclRule(action="allow", protocol="udp", icmp_type="3"), "need protocol icmp4"),
        (AclRule(action="drop", state="sometimes"), "unknown state"),
    ]
    for rule, text in bad_rules:
        with pytest.raises(InvalidArgument, match=text):
            await network_driver.create_acl(AclSpec(name="bad", ingress=(rule,)))
        with pytest.raises(InvalidArgument, match=text):
            await network_driver.update_acl(AclSpec(name="web", egress=(rule,)))
    with pytest.raises(AlreadyExists):
        await network_driver.create_acl(AclSpec(name="web"))
    assert snapshot(ovn_central) == before
    assert await network_driver.get_acl("web") == web

    port = await network_driver.create_port(PortSpec(network=name, name="a", acls=("web",)))
    assert port.acls == ("web",)
    pg = rows(ovn_central, "Port_Group", name=pg_name)[0]
    lsp_uuid = rows(ovn_central, "Logical_Switch_Port", name=port.id)[0]["_uuid"]
    assert pg["ports"] == lsp_uuid
    default = rows(ovn_central, "Port_Group", name=f"{network_driver.names.prefix}_acl_default")[0]
    assert lsp_uuid in default["ports"]
    flows = lflows(ovn_central)
    assert any("tcp.dst == {80, 443}" in f or "tcp.dst == 80" in f for f in flows)
    assert any("198.51.100.0/24" in f for f in flows)
    with pytest.raises(InUse):
        await network_driver.delete_acl("web")
    # a listing reads every port's ACLs in one go: the same as one port at a time
    await network_driver.create_acl(AclSpec(name="ssh"))
    more = [await network_driver.create_port(PortSpec(network=name, name=n, acls=acls))
            for n, acls in (("b", ("ssh", "web")), ("c", ()), ("d", ("ssh",)))]
    # northd fills in each new port's address and `up` on its own time: compare once it has
    # (a port it reached between the listing and the reads would differ otherwise)
    for _ in range(200):
        listed = await network_driver.list_ports(name)
        if all(p.ipv4 and p.up is not None for p in listed):
            break
        await asyncio.sleep(0.05)
    assert [p.acls for p in listed] == [("web",), ("ssh", "web"), (), ("ssh",)]
    assert listed == [await network_driver.get_port(p.id) for p in [port, *more]]
    for p in more:
        await network_driver.delete_port(p.id)
    await network_driver.delete_acl("ssh")
    assert (await network_driver.set_port_acls(port.id, ())).acls == ()
    await network_driver.delete_acl("web")
    await network_driver.delete_acl("web", if_exists=True)
    assert not rows(ovn_central, "Port_Group", name=pg_name)


async def test_forwards(
    network_driver: OvnNetworkDriver, ovn_central: Any
) -> None:
    name = net_name()
    net = await network_driver.create_network(NetworkSpec(name=name, ipv4_address="10.62.0.1/24"))
    fwd = ForwardSpec(listen_address="192.0.2.150", target_address="10.62.0.5", ports=(
        ForwardPort(protocol="tcp", listen_port="80,8080", target_address="10.62.0.6", target_port="8000"),
        ForwardPort(protocol="udp", listen_port="53", target_address="10.62.0.7"),
    ))
    await network_driver.create_forward(name, fwd)
    assert await network_driver.list_forwards(name) == [fwd]
    nat = rows(ovn_central, "NAT", type="dnat_and_snat", external_ip="192.0.2.150")[0]
    assert nat["logical_ip"] == "10.62.0.5"
    lbs = {lb["protocol"]: lb["vips"] for lb in rows(ovn_central, "Load_Balancer")
           if lb["external_ids"].get("microcloud:network") == name}
    assert lbs == {"tcp": {"192.0.2.150:80": "10.62.0.6:8000", "192.0.2.150:8080": "10.62.0.6:8000"},
                   "udp": {"192.0.2.150:53": "10.62.0.7:53"}}
    flows = lflows(ovn_central)
    assert any("ct_dnat" in f and "10.62.0.5" in f for f in flows)
    assert any("10.62.0.6:8000" in f for f in flows)

    assert await network_driver.create_forward(name, fwd, may_exist=True) == fwd
    before = snapshot(ovn_central)
    bad = [
        (ForwardSpec(listen_address="192.0.2.150", target_address="10.62.0.9"), AlreadyExists),
        (ForwardSpec(listen_address=str(net.spec.uplink_address), target_address="10.62.0.9"), AlreadyExists),
        (ForwardSpec(listen_address="198.51.100.1", target_address="10.62.0.9"), InvalidArgument),
        (ForwardSpec(listen_address="192.0.2.151", target_address="10.99.0.9"), InvalidArgument),
        (ForwardSpec(listen_address="192.0.2.151", ports=(
            ForwardPort(protocol="icmp", listen_port="1", target_address="10.62.0.9"),)), InvalidArgument),
        (ForwardSpec(listen_address="192.0.2.151", ports=(
            ForwardPort(protocol="tcp", listen_port="1-3", target_address="10.62.0.9", target_port="5-6"),)),
         InvalidArgument),
    ]
    for spec, error in bad:
        with pytest.raises(error):
            await network_driver.create_forward(name, spec)
    assert snapshot(ovn_central) == before
    await network_driver.delete_forward(name, "192.0.2.150")
    await network_driver.delete_forward(name, "192.0.2.150", if_exists=True)
    assert await network_driver.list_forwards(name) == []
    assert not rows(ovn_central, "NAT", type="dnat_and_snat", external_ip="192.0.2.150")


async def test_reconcile_repairs_drift_and_removes_orphans(
    network_driver: OvnNetworkDriver, ovn_central: Any
) -> None:
    name = net_name()
    net = (await network_driver.create_network(NetworkSpec(name=name, ipv4_address="10.63.0.1/24"))).spec
    acl = AclSpec(name="ssh", ingress=(AclRule(action="allow", protocol="tcp", destination_port="22"),))
    await network_driver.create_acl(acl)
    keep = await network_driver.create_port(PortSpec(network=name, name="keep", ipv4="10.63.0.10",
                                                     hostname="keep", acls=("ssh",)))
    orphan = await network_driver.create_port(PortSpec(network=name, name="orphan"))
    stray = net_name()
    await network_driver.create_network(NetworkSpec(name=stray, ipv4_address="10.64.0.1/24"))

    # drift: the port vanishes behind our back
    ovn_central.nbctl("lsp-del", keep.id)
    desired = DesiredState(
        networks=(net,), acls=(acl,),
        ports=(PortSpec(network=name, name="keep", id=keep.id, mac=keep.mac, ipv4="10.63.0.10",
                        hostname="keep", acls=("ssh",)),))
    report = await network_driver.reconcile(desired)
    assert f"port {keep.id}" in report.created
    assert set(report.removed) == {f"port {orphan.id}", f"network {stray}"}
    back = await network_driver.get_port(keep.id)
    assert (back.mac, back.ipv4, back.acls) == (keep.mac, "10.63.0.10", ("ssh",))
    with pytest.raises(NotFound):
        await network_driver.get_port(orphan.id)
    with pytest.raises(NotFound):
        await network_driver.get_network(stray)
    dns = dns_of(ovn_central, name)
    assert dns["records"]["keep"] == "10.63.0.10"

    # a second run finds nothing to do; rows of another owner are never touched
    foreign = ovn_central.nbctl("ls-add", f"foreign-{name}", "--", "set", "Logical_Switch",
                                f"foreign-{name}", "external_ids:microcloud\\:owner=someone-else")
    del foreign
    assert not (await network_driver.reconcile(desired)).changed
    assert rows(ovn_central, "Logical_Switch", name=f"foreign-{name}")
    ovn_central.nbctl("ls-del", f"foreign-{name}")


async def test_create_ports_batch_is_all_or_nothing(
    network_driver: OvnNetworkDriver, ovn_central: Any
) -> None:
    name = net_name()
    await network_driver.create_network(NetworkSpec(name=name, ipv4_address="10.65.0.1/24"))
    before = snapshot(ovn_central)
    batch = [PortSpec(network=name, name=f"p{i}", ipv4=f"10.65.0.{i + 10}") for i in range(20)]
    with pytest.raises(AlreadyExists, match=r"10\.65\.0\.15"):
        await network_driver.create_ports([*batch, PortSpec(network=name, name="dup", ipv4="10.65.0.15")])
    assert snapshot(ovn_central) == before
    made = await network_driver.create_ports([*batch, PortSpec(network=name, name="dyn", hostname="dyn")])
    assert [p.ipv4 for p in made[:20]] == [f"10.65.0.{i + 10}" for i in range(20)]
    assert len(await network_driver.list_ports(name)) == 21
    same = PortSpec(network=name, name="p0", id=made[0].id)
    again = await network_driver.create_ports([same], may_exist=True)
    assert again[0].id == made[0].id


async def test_a_full_subnet_refuses_another_port_and_changes_nothing(
    network_driver: OvnNetworkDriver, ovn_central: Any
) -> None:
    """A /29 holds 5 instance addresses (network, broadcast and gateway excepted): a 6th port,
    dynamic or static, is refused instead of created without an address."""
    name = net_name()
    await network_driver.create_network(NetworkSpec(name=name, ipv4_address="10.66.0.1/29"))
    made = [await network_driver.create_port(PortSpec(network=name, name=f"p{i}")) for i in range(4)]
    made.append(await network_driver.create_port(PortSpec(network=name, name="s", ipv4="10.66.0.6")))
    before = snapshot(ovn_central)
    for spec in (PortSpec(network=name, name="p5"), PortSpec(network=name, name="s2", ipv4="10.66.0.7")):
        with pytest.raises(QuotaExceeded, match=rf"network {name} has no free IPv4 address: its 5 "):
            await network_driver.create_port(spec)
        with pytest.raises(QuotaExceeded):
            await network_driver.create_ports([spec])
    assert snapshot(ovn_central) == before
    await network_driver.delete_port(made[0].id)
    await network_driver.create_port(PortSpec(network=name, name="p5"))  # room again
