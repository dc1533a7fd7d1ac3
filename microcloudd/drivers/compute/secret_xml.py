"""The libvirt secret that holds a cephx key for QEMU's RBD client."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def ceph_secret_xml(uuid: str, user: str) -> str:
    # private: the value can be set but never read back through the API.
    # The usage name carries the UUID so two secrets for one ceph user never collide.
    secret = ET.Element("secret", {"ephemeral": "no", "private": "yes"})
    ET.SubElement(secret, "uuid").text = uuid
    ET.SubElement(secret, "description").text = f"microcloud: cephx key of client.{user}"
    usage = ET.SubElement(secret, "usage", {"type": "ceph"})
    ET.SubElement(usage, "name").text = f"microcloud client.{user} {uuid}"
    return ET.tostring(secret, encoding="unicode")
