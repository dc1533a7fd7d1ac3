"""The domain XML we generate: RBD disks, the seed cdrom, OVS ports, console, owner tag."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from microcloudd.drivers.compute import domain_xml as dx
from microcloudd.drivers.compute.types import METADATA_NS, CephMonitor, Disk, DomainSpec, Nic, domain_name
from tests.fixtures.libvirt import make_spec, rbd_image


def build(spec: DomainSpec, virt: str = "qemu") -> ET.Element:
    return ET.fromstring(dx.build_domain_xml(spec, "member-1", virt))


def test_root_disk_is_rbd_over_the_network_with_cephx() -> None:
    secret = str(uuid.uuid4())
    root = rbd_image("vm1-root", pool="vms", secret_uuid=secret, mon=CephMonitor("10.0.0.1", 3300))
    dom = build(make_spec("vm1", root=root))
    disk = dom.find("devices/disk[@device='disk']")
    assert disk is not None and disk.get("type") == "network"
    src = disk.find("source")
    assert src is not None and src.get("protocol") == "rbd" and src.get("name") == "vms/vm1-root"
    host = src.find("host")
    assert host is not None and (host.get("name"), host.get("port")) == ("10.0.0.1", "3300")
    auth = disk.find("auth")
    assert auth is not None and auth.get("username") == "admin"
    assert auth.find("secret").attrib == {"type": "ceph", "uuid": secret}  # type: ignore[union-attr]
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}  # type: ignore[union-attr]
    assert disk.find("boot").get("order") == "1"  # type: ignore[union-attr]


def test_seed_is_a_readonly_rbd_cdrom() -> None:
    dom = build(make_spec("vm1"))
    cd = dom.find("devices/disk[@device='cdrom']")
    assert cd is not None and cd.find("readonly") is not None
    assert cd.find("source").get("name") == "vms/vm1-seed"  # type: ignore[union-attr]
    assert cd.find("target").attrib == {"dev": "hdc", "bus": "ide"}  # type: ignore[union-attr]


def test_nic_is_an_ovs_port_named_by_the_ovn_port_uuid_without_checksum_offload() -> None:
    port = str(uuid.uuid4())
    dom = build(make_spec(nics=(Nic(mac="52:54:00:aa:bb:cc", port_id=port),)))
    iface = dom.find("devices/interface")
    assert iface is not None and iface.get("type") == "bridge"
    assert iface.find("source").get("bridge") == "br-int"  # type: ignore[union-attr]
    assert iface.find("virtualport").get("type") == "openvswitch"  # type: ignore[union-attr]
    assert iface.find("virtualport/parameters").get("interfaceid") == port  # type: ignore[union-attr]
    assert iface.find("mac").get("address") == "52:54:00:aa:bb:cc"  # type: ignore[union-attr]
    assert iface.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    assert iface.find("driver/host").get("csum") == "off"  # type: ignore[union-attr]


def test_console_is_a_pty_logged_to_a_file() -> None:
    dom = build(make_spec(console_log=Path("/var/log/mc/vm1.log")))
    serial = dom.find("devices/serial")
    assert serial is not None and serial.get("type") == "pty"
    assert serial.find("log").get("file") == "/var/log/mc/vm1.log"  # type: ignore[union-attr]
    assert dom.find("devices/console").get("type") == "pty"  # type: ignore[union-attr]


def test_machine_limits_and_virt_type() -> None:
    dom = build(make_spec(vcpus=2, memory_mib=512, max_vcpus=4, max_memory_mib=1024), virt="kvm")
    assert dom.get("type") == "kvm"
    assert dom.find("os/type").get("machine") == "pc"  # type: ignore[union-attr]
    assert dom.find("vcpu").text == "4" and dom.find("vcpu").get("current") == "2"  # type: ignore[union-attr]
    assert dom.findtext("memory") == "1024" and dom.findtext("currentMemory") == "512"
    usable_kvm = Path("/dev/kvm").exists() and dx._cpu_has_virt_extensions()
    assert dx.host_virt_type() == ("kvm" if usable_kvm else "qemu")


def test_owner_metadata_and_project_naming() -> None:
    dom = build(make_spec("web", project="team-a"))
    assert dom.findtext("name") == "team-a_web" == domain_name("team-a", "web")
    md = dom.find(f"metadata/{{{METADATA_NS}}}instance")
    assert md is not None
    assert md.findtext(f"{{{METADATA_NS}}}owner") == "member-1"
    assert md.findtext(f"{{{METADATA_NS}}}name") == "web"
    assert md.findtext(f"{{{METADATA_NS}}}project") == "team-a"


def test_extra_disks_get_the_next_free_names() -> None:
    spec = make_spec(disks=(Disk(rbd_image("v1")), Disk(rbd_image("v2"), target="vdc"),
                            Disk(rbd_image("v3"))))
    dom = build(spec)
    targets = {d.find("source").get("name"): d.find("target").get("dev")  # type: ignore[union-attr]
               for d in dom.findall("devices/disk[@device='disk']")}
    assert targets == {"vms/" + spec.root.image: "vda", "vms/v1": "vdb", "vms/v2": "vdc", "vms/v3": "vdd"}


def test_parse_round_trip() -> None:
    spec = make_spec(disks=(Disk(rbd_image("data"), target="vdb", readonly=True),),
                     console_log=Path("/tmp/x.log"), vcpus=2, memory_mib=300)
    parsed = dx.parse_domain_xml(dx.build_domain_xml(spec, "member-1", "qemu"))
    assert (parsed.name, parsed.uuid, parsed.virt_type) == (spec.name, spec.uuid, "qemu")
    assert (parsed.vcpus, parsed.memory_kib) == (2, 300 * 1024)
    assert (parsed.owner, parsed.instance, parsed.project) == ("member-1", spec.instance, "default")
    assert parsed.root == spec.root and parsed.seed == spec.seed
    assert parsed.disks == list(spec.disks)
    assert parsed.nics == list(spec.nics)
    assert parsed.console_log == Path("/tmp/x.log")
