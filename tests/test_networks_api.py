"""The networks API end to end: the real CLI and HTTP against an in-process microcloudd on a
real socket, a real Microcloud database and real OVN NB/SB/northd. Each test checks what
landed in the NB database and in our database, and that refused requests left nothing."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from microcloudd.daemon import Daemon
from microcloudd.db.records import Network as NetworkRecord
from microcloudd.db.records import NetworkACL, NetworkForward
from microcloudd.drivers.network.base import PortSpec
from microcloudd.services import network_store, networks
from microcloudd.services.network_reconciler import reconcile_once, start_reconciler
from tests.fixtures.network_services import nb_owned

CLI = str(Path(sys.executable).parent / "microcloud")


def uniq(prefix: str = "n") -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def http(network_daemon: Daemon) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(network_daemon.socket_path)),
                                     base_url="http://localhost") as s:
        yield s


async def cli(daemon: Daemon, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, env={"MICROCLOUD_DIR": str(daemon.state_dir), "PATH": "/usr/bin:/bin"},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode() if stdin is not None else b"")
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def ok(daemon: Daemon, *args: str, stdin: str | None = None) -> str:
    rc, out, err = await cli(daemon, *args, stdin=stdin)
    assert rc == 0, f"microcloud {' '.join(args)}: {err}"
    return out


def owner(daemon: Daemon) -> str:
    assert daemon.cloud.network is not None
    return daemon.cloud.network.owner  # type: ignore[attr-defined]


def nb_state(central: Any, who: str) -> dict[str, int]:
    tables = ("Logical_Switch", "Logical_Switch_Port", "Logical_Router", "NAT", "DHCP_Options", "Port_Group",
              "Load_Balancer")
    return {t: len(nb_owned(central, t, who)) for t in tables}


async def test_network_create_list_show_edit_delete_via_cli(network_daemon: Daemon, ovn_central: Any) -> None:
    d, who, db = network_daemon, owner(network_daemon), network_daemon.cloud.need_db()
    name, auto = uniq(), uniq()
    assert "created" in await ok(d, "network", "create", name, "--ipv4", "10.61.0.1/24",
                                 "dns.domain=lab.example", "--description", "first")
    ls = nb_owned(ovn_central, "Logical_Switch", who,
                  **{"microcloud:kind": "network", "microcloud:name": name})
    assert len(ls) == 1 and ls[0]["other_config"]["subnet"] == "10.61.0.0/24"
    dhcp = nb_owned(ovn_central, "DHCP_Options", who, **{"microcloud:network": name})[0]
    assert dhcp["options"]["domain_name"] == '"lab.example"' and dhcp["options"]["router"] == "10.61.0.1"
    nat = nb_owned(ovn_central, "NAT", who, **{"microcloud:network": name})[0]
    assert nat["type"] == "snat" and nat["logical_ip"] == "10.61.0.0/24"
    rec = db.get(NetworkRecord, name)
    assert rec.status == "Created" and rec.config["volatile.network.ipv4.address"] == nat["external_ip"]

    # auto: a free /24 that overlaps neither the first network nor the uplink
    await ok(d, "network", "create", auto)
    auto_v4 = db.get(NetworkRecord, auto).config["ipv4.address"]
    assert auto_v4.startswith("10.") and auto_v4.endswith(".1/24") and auto_v4 != "10.61.0.1/24"

    listed = json.loads(await ok(d, "network", "list", "--format", "json"))
    assert {n["name"] for n in listed} == {name, auto}
    assert all(n["type"] == "ovn" and n["managed"] and n["status"] == "Created" for n in listed)
    table = await ok(d, "network", "list")
    assert name in table and "10.61.0.1/24" in table and "CREATED" in table
    shown = yaml.safe_load(await ok(d, "network", "show", name))
    assert shown["description"] == "first" and shown["config"]["ipv4.address"] == "10.61.0.1/24"

    # set: one key, re-applied to OVN (DHCP options) in place
    await ok(d, "network", "set", name, "bridge.mtu=1400", "ipv4.dhcp.expiry=1h")
    dhcp = nb_owned(ovn_central, "DHCP_Options", who, **{"microcloud:network": name})[0]
    assert dhcp["options"]["mtu"] == "1400" and dhcp["options"]["lease_time"] == "3600"
    # edit: YAML on stdin, as `lxc network edit < file`
    shown = yaml.safe_load(await ok(d, "network", "show", name))
    shown["description"] = "edited"
    shown["config"]["dns.nameservers"] = "192.0.2.53"
    shown["config"].pop("bridge.mtu")
    await ok(d, "network", "edit", name, stdin=yaml.safe_dump(shown))
    rec = db.get(NetworkRecord, name)
    assert rec.description == "edited" and "bridge.mtu" not in rec.config
    assert rec.config["volatile.network.ipv4.address"] == nat["external_ip"]  # kept
    dhcp = nb_owned(ovn_central, "DHCP_Options", who, **{"microcloud:network": name})[0]
    assert dhcp["options"]["mtu"] == "1442" and dhcp["options"]["dns_server"] == "{192.0.2.53}"

    for n in (name, auto):
        assert "deleted" in await ok(d, "network", "delete", n)
    assert nb_state(ovn_central, who)["Logical_Switch"] == 1  # only the uplink switch is left
    assert nb_owned(ovn_central, "Logical_Router", who) == [] and db.all(NetworkRecord) == []


async def test_bad_network_input_is_refused_and_leaves_nothing(network_daemon: Daemon, ovn_central: Any,
                                                               http: aiohttp.ClientSession) -> None:
    d, who, db = network_daemon, owner(network_daemon), network_daemon.cloud.need_db()
    first = uniq()
    await ok(d, "network", "create", first, "--ipv4", "10.62.0.1/24")
    before_nb, before_db = nb_state(ovn_central, who), db.all(NetworkRecord)

    async def refused(body: dict[str, Any], status: int, *needles: str) -> None:
        r = await http.post("/1.0/networks", json=body)
        got = await r.json()
        assert r.status == status, got
        for n in needles:
            assert n in got["error"], got["error"]

    new = uniq()
    await refused({"name": new, "config": {"ipv4.address": "10.62.0.300/24"}}, 400, "10.62.0.300/24",
                  "not an IPv4")
    await refused({"name": new, "config": {"ipv4.address": "10.62.0.1"}}, 400, "prefix length")
    await refused({"name": new, "config": {"ipv4.address": "10.62.0.0/24"}}, 400, "network or broadcast")
    await refused({"name": new, "config": {"ipv4.address": "10.62.0.129/25"}}, 400, "10.62.0.128/25",
                  "10.62.0.0/24", first)
    await refused({"name": new, "config": {"ipv4.address": "192.0.2.10/28"}}, 400, "192.0.2.0/28",
                  "192.0.2.0/24", "uplink")
    await refused({"name": new, "config": {"ipv6.address": "fd00::1/48"}}, 400, "/64")
    await refused({"name": new, "config": {"bridge.mtu": "100"}}, 400, "bridge.mtu")
    await refused({"name": new, "config": {"ipv4.nat": "false"}}, 400, "not supported")
    await refused({"name": new, "config": {"bogus.key": "1"}}, 400, "bogus.key")
    await refused({"name": "bad_name!", "config": {}}, 400, "Invalid network name")
    await refused({"name": new, "type": "bridge"}, 400, "type 'bridge'")
    await refused({"name": first, "config": {"ipv4.address": "10.63.0.1/24"}}, 409, "already exists")
    # the CLI: one line, exit 1
    rc, _, err = await cli(d, "network", "create", new, "--ipv4", "10.62.0.1/16")
    assert rc == 1 and err.count("\n") == 1
    assert err.startswith("Error: ipv4.address subnet 10.62.0.0/16 overlaps")
    # unknown networks
    rc, _, err = await cli(d, "network", "show", "nosuchnet")
    assert rc == 1 and err.strip() == "Error: Network 'nosuchnet' not found"
    for method in ("DELETE", "GET"):
        r = await http.request(method, "/1.0/networks/nosuchnet")
        assert r.status == 404
    r = await http.patch(f"/1.0/networks/{first}", json={"config": {"ipv4.address": "192.0.2.1/24"}})
    assert r.status == 400 and "uplink" in (await r.json())["error"]

    assert nb_state(ovn_central, who) == before_nb
    assert db.all(NetworkRecord) == before_db


async def test_ports_leases_and_deleting_a_network_in_use(network_daemon: Daemon, ovn_central: Any,
                                                          http: aiohttp.ClientSession) -> None:
    d, who, cloud = network_daemon, owner(network_daemon), network_daemon.cloud
    name = uniq()
    await ok(d, "network", "create", name, "--ipv4", "10.64.0.1/24")
    mac = "0a:00:00:00:00:10"
    web = await networks.attach_port(cloud, name, "web1", "eth0", ipv4="10.64.0.10", mac=mac)
    again = await networks.attach_port(cloud, name, "web1", "eth0", ipv4="10.64.0.10", mac=mac)
    assert again.id == web.id and (web.mac, web.ipv4) == ("0a:00:00:00:00:10", "10.64.0.10")
    db_port = await networks.attach_port(cloud, name, "db1", "eth0")
    assert db_port.ipv4 is not None and db_port.ipv4.startswith("10.64.0.")
    lsp = nb_owned(ovn_central, "Logical_Switch_Port", who, **{"microcloud:kind": "port"})
    assert {p["name"] for p in lsp} == {web.id, db_port.id}

    leases = json.loads(await ok(d, "network", "list-leases", name, "--format", "json"))
    by_host = {(le["hostname"], le["type"]): le for le in leases}
    assert by_host[("web1", "static")]["address"] == "10.64.0.10"
    assert by_host[("web1", "static")]["hwaddr"] == "0a:00:00:00:00:10"
    assert by_host[("db1", "dynamic")]["address"] == db_port.ipv4
    assert by_host[(f"{name}.gw", "gateway")]["address"] == "10.64.0.1"
    assert "10.64.0.10" in await ok(d, "network", "list-leases", name)

    # a port on it: delete refused, naming the instances; addressing cannot change either
    rc, _, err = await cli(d, "network", "delete", name)
    assert rc == 1 and "/1.0/instances/db1" in err and "/1.0/instances/web1" in err
    r = await http.patch(f"/1.0/networks/{name}", json={"config": {"ipv4.address": "10.65.0.1/24"}})
    assert r.status == 409
    shown = (await (await http.get(f"/1.0/networks/{name}")).json())["metadata"]
    assert shown["used_by"] == ["/1.0/instances/db1", "/1.0/instances/web1"]
    assert shown["config"]["ipv4.address"] == "10.64.0.1/24"
    # a port address outside the subnet is refused up front
    with pytest.raises(Exception, match=r"not inside 10\.64\.0\.0/24"):
        await networks.attach_port(cloud, name, "x1", "eth0", ipv4="10.99.0.5")
    assert len(nb_owned(ovn_central, "Logical_Switch_Port", who, **{"microcloud:kind": "port"})) == 2

    await networks.detach_port(cloud, name, "web1", "eth0")
    await networks.detach_port(cloud, name, "web1", "eth0")  # already gone: fine
    await networks.detach_port(cloud, name, "db1", "eth0")
    assert network_store.ports(cloud.need_db()) == []
    await ok(d, "network", "delete", name)
    assert nb_owned(ovn_central, "Logical_Switch_Port", who, **{"microcloud:kind": "port"}) == []


async def test_acl_crud_rules_and_in_use(network_daemon: Daemon, ovn_central: Any,
                                         http: aiohttp.ClientSession) -> None:
    d, who, cloud = network_daemon, owner(network_daemon), network_daemon.cloud
    db = cloud.need_db()
    acl, net = uniq("web"), uniq()
    await ok(d, "network", "create", net, "--ipv4", "10.66.0.1/24")
    await ok(d, "network", "acl", "create", acl, "user.team=ops", "--description", "web servers")
    await ok(d, "network", "acl", "rule", "add", acl, "ingress", "action=allow", "protocol=tcp",
             "destination_port=80,443", "source=10.0.0.0/8")
    await ok(d, "network", "acl", "rule", "add", acl, "egress", "action=drop", "destination=192.0.2.0/24")
    shown = yaml.safe_load(await ok(d, "network", "acl", "show", acl))
    assert shown["ingress"][0]["destination_port"] == "80,443" and shown["egress"][0]["action"] == "drop"
    assert shown["config"] == {"user.team": "ops"}
    pg = nb_owned(ovn_central, "Port_Group", who, **{"microcloud:kind": "acl", "microcloud:name": acl})
    assert len(pg) == 1
    matches = [a["match"] for a in nb_owned(ovn_central, "ACL", who, **{"microcloud:name": acl})]
    assert any("tcp.dst == {80, 443}" in m and "ip4.src == 10.0.0.0/8" in m for m in matches)
    assert any("ip4.dst == 192.0.2.0/24" in m for m in matches)
    listed = json.loads(await ok(d, "network", "acl", "list", "--format", "json"))
    assert [a["name"] for a in listed] == [acl]

    # a rule that does not parse: refused, the ACL as it was (DB and NB)
    before = db.get(NetworkACL, acl)
    rc, _, err = await cli(d, "network", "acl", "rule", "add", acl, "ingress", "action=allow", "protocol=tcp",
                           "destination_port=http")
    assert rc == 1 and "destination_port 'http' is not a port" in err
    r = await http.post("/1.0/network-acls", json={"name": uniq("bad"),
                                                   "ingress": [{"action": "allow", "source": "10.0.0.999"}]})
    assert r.status == 400 and "10.0.0.999" in (await r.json())["error"]
    r = await http.post("/1.0/network-acls", json={"name": uniq("bad"), "egress": [{"action": "permit"}]})
    assert r.status == 400 and "unknown action 'permit'" in (await r.json())["error"]
    assert db.get(NetworkACL, acl) == before and len(db.all(NetworkACL)) == 1
    assert len(nb_owned(ovn_central, "Port_Group", who, **{"microcloud:kind": "acl"})) == 1
    assert (await http.get("/1.0/network-acls/nosuch")).status == 404

    # applied to a port: the port joins the group; delete refused while applied
    port = await networks.attach_port(cloud, net, "web1", "eth0", acls=[acl])
    assert port.acls == (acl,)
    group = nb_owned(ovn_central, "Port_Group", who, **{"microcloud:kind": "acl", "microcloud:name": acl})[0]
    lsp = nb_owned(ovn_central, "Logical_Switch_Port", who, **{"microcloud:kind": "port"})[0]
    assert group["ports"] in ([lsp["_uuid"]], lsp["_uuid"])  # ovsdb JSON: a one-element set is the element
    rc, _, err = await cli(d, "network", "acl", "delete", acl)
    assert rc == 1 and "/1.0/instances/web1" in err
    with pytest.raises(Exception, match="Network ACL 'nosuch' not found"):
        await networks.attach_port(cloud, net, "web2", "eth0", acls=["nosuch"])

    await ok(d, "network", "acl", "rule", "remove", acl, "egress", "action=drop")
    assert db.get(NetworkACL, acl).egress == []
    await networks.set_port_acls(cloud, net, "web1", "eth0", [])
    assert nb_owned(ovn_central, "Port_Group", who, **{"microcloud:name": acl})[0]["ports"] == []
    await networks.detach_port(cloud, net, "web1", "eth0")
    await ok(d, "network", "acl", "delete", acl)
    assert db.all(NetworkACL) == []
    assert nb_owned(ovn_central, "Port_Group", who, **{"microcloud:kind": "acl"}) == []
    await ok(d, "network", "delete", net)


async def test_forward_crud(network_daemon: Daemon, ovn_central: Any, http: aiohttp.ClientSession) -> None:
    d, who, db = network_daemon, owner(network_daemon), network_daemon.cloud.need_db()
    net = uniq()
    await ok(d, "network", "create", net, "--ipv4", "10.67.0.1/24")
    await ok(d, "network", "forward", "create", net, "192.0.2.150", "target_address=10.67.0.5")
    nat = [n for n in nb_owned(ovn_central, "NAT", who, **{"microcloud:network": net})
           if n["type"] == "dnat_and_snat"]
    assert [(n["external_ip"], n["logical_ip"]) for n in nat] == [("192.0.2.150", "10.67.0.5")]
    await ok(d, "network", "forward", "port", "add", net, "192.0.2.150", "tcp", "80,443", "10.67.0.6",
             "8080,8443")
    lbs = nb_owned(ovn_central, "Load_Balancer", who, **{"microcloud:network": net})
    assert len(lbs) == 1 and lbs[0]["vips"] == {"192.0.2.150:80": "10.67.0.6:8080",
                                                "192.0.2.150:443": "10.67.0.6:8443"}
    shown = yaml.safe_load(await ok(d, "network", "forward", "show", net, "192.0.2.150"))
    assert shown["config"] == {"target_address": "10.67.0.5"} and shown["ports"][0]["listen_port"] == "80,443"
    listed = json.loads(await ok(d, "network", "forward", "list", net, "--format", "json"))
    assert [f["listen_address"] for f in listed] == ["192.0.2.150"]

    # bad input: refused up front, nothing changed
    bad = [({"listen_address": "198.51.100.7", "config": {"target_address": "10.67.0.5"}}, 400, "not inside"),
           ({"listen_address": "192.0.2.151", "config": {"target_address": "10.99.0.5"}}, 400, "not inside"),
           ({"listen_address": "192.0.2.151"}, 400, "needs config target_address"),
           ({"listen_address": "192.0.2.150", "config": {"target_address": "10.67.0.5"}}, 409, "already"),
           ({"listen_address": "192.0.2.151", "ports": [{"protocol": "sctp", "listen_port": "1",
                                                        "target_address": "10.67.0.5"}]}, 400, "sctp")]
    for body, status, needle in bad:
        r = await http.post(f"/1.0/networks/{net}/forwards", json=body)
        assert r.status == status and needle in (await r.json())["error"], body
    rc, _, err = await cli(d, "network", "forward", "port", "add", net, "192.0.2.150", "tcp", "99999",
                           "10.67.0.6")
    assert rc == 1 and "out of range" in err
    assert len(db.all(NetworkForward)) == 1
    assert len(nb_owned(ovn_central, "Load_Balancer", who, **{"microcloud:network": net})) == 1

    await ok(d, "network", "forward", "port", "remove", net, "192.0.2.150", "tcp")
    assert nb_owned(ovn_central, "Load_Balancer", who, **{"microcloud:network": net}) == []
    await ok(d, "network", "forward", "delete", net, "192.0.2.150")
    assert (await http.get(f"/1.0/networks/{net}/forwards/192.0.2.150")).status == 404
    assert [n for n in nb_owned(ovn_central, "NAT", who) if n["type"] == "dnat_and_snat"] == []
    assert db.all(NetworkForward) == []
    await ok(d, "network", "delete", net)


async def test_reconciler_repairs_a_deleted_port_and_removes_an_orphan(network_cloud: Any,
                                                                       ovn_central: Any) -> None:
    cloud = network_cloud
    who = cloud.network.owner
    name = uniq()
    await networks.create_network(cloud, name, config={"ipv4.address": "10.68.0.1/24"})
    port = await networks.attach_port(cloud, name, "web1", "eth0", ipv4="10.68.0.10")
    assert await reconcile_once(cloud) is not None
    events = cloud.events.subscribe(["lifecycle"])

    # behind our back: our port deleted, an orphan port of ours created; and a setting recorded
    # in the database whose OVN update never ran (a daemon killed in between)
    ovn_central.nbctl("lsp-del", port.id)
    orphan = await cloud.network.create_port(PortSpec(network=name, name="ghost/eth0"))
    rec = cloud.need_db().get(NetworkRecord, name)
    await cloud.need_db().update(NetworkRecord, name, config={**rec.config, "bridge.mtu": "1400"})

    reconciler = start_reconciler(cloud, interval=3600)
    try:
        for _ in range(100):
            if reconciler.passes:
                break
            await asyncio.sleep(0.05)
        report = reconciler.last_report
    finally:
        await reconciler.stop()
    assert report is not None
    assert f"port {port.id}" in report.created and f"port {orphan.id}" in report.removed
    assert f"network {name} (settings)" in report.created
    lsp = nb_owned(ovn_central, "Logical_Switch_Port", who, **{"microcloud:kind": "port"})
    assert [(p["name"], p["addresses"]) for p in lsp] == [(port.id, f"{port.mac} 10.68.0.10")]
    dhcp = nb_owned(ovn_central, "DHCP_Options", who, **{"microcloud:network": name})[0]
    assert dhcp["options"]["mtu"] == "1400"
    event = await asyncio.wait_for(events.queue.get(), 5)
    assert event is not None and event.metadata["action"] == "network-reconciled"
    assert f"port {orphan.id}" in event.metadata["context"]["removed"]
    # nothing left to repair: a quiet pass
    again = await reconcile_once(cloud)
    assert again is not None and not again.changed
    await networks.detach_port(cloud, name, "web1", "eth0")
    await networks.delete_network(cloud, name)


async def test_default_network_is_idempotent_and_summarised(network_cloud: Any, ovn_central: Any) -> None:
    cloud = network_cloud
    first = await networks.ensure_default_network(cloud, name="default")
    again = await networks.ensure_default_network(cloud, name="default")
    assert first.config["ipv4.address"] == again.config["ipv4.address"] and again.status == "Created"
    switches = nb_owned(ovn_central, "Logical_Switch", cloud.network.owner, **{"microcloud:kind": "network"})
    assert len(switches) == 1
    port = await networks.attach_port(cloud, "default", "vm1", "eth0")
    assert port.id == network_store.port_id("default", "vm1", "eth0")
    assert networks.summary(cloud) == {"networks": 1, "ports": 1, "uplink": "192.0.2.0/24 via 192.0.2.1"}
    # a default network left Pending by an interrupted init is realised by the next one
    await networks.detach_port(cloud, "default", "vm1", "eth0")
    await networks.delete_network(cloud, "default")
    db = cloud.need_db()
    await db.insert(NetworkRecord(name="default", config={"ipv4.address": "10.69.0.1/24"}, status="Pending"))
    fixed = await networks.ensure_default_network(cloud, name="default")
    assert fixed.status == "Created" and fixed.config["volatile.network.ipv4.address"].startswith("192.0.2.")
    await networks.delete_network(cloud, "default")
