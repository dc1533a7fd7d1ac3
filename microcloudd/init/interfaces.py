"""Can this host interface become the physical uplink? (read-only checks, before any change)

Init moves the interface into the member's network namespace and makes it a port of the OVS
provider bridge, so the host loses it: it must be unused. Unused means no IP address (an
IPv6 link-local one is automatic and does not count), not a port of a bridge or bond, not
itself a bridge, bond or the loopback.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

SYS_NET = Path("/sys/class/net")


def _addresses(name: str) -> list[str]:
    done = subprocess.run(["ip", "-j", "addr", "show", "dev", name], capture_output=True, text=True,
                          timeout=20)
    if done.returncode != 0:
        return []
    out = []
    for link in json.loads(done.stdout or "[]"):
        for a in link.get("addr_info", []):
            addr = ipaddress.ip_address(a["local"])
            if not addr.is_link_local:
                out.append(f"{a['local']}/{a['prefixlen']}")
    return out


def problem(name: str, sys_net: Path = SYS_NET) -> str:
    """Why host interface `name` cannot be the uplink ("" if it can)."""
    dev = sys_net / name
    if "/" in name or not name or not dev.exists():
        return f"{name}: no such network interface (or use nat)"
    if name == "lo" or (dev / "type").read_text().strip() == "772":  # ARPHRD_LOOPBACK
        return f"{name}: the loopback cannot be an uplink"
    if (dev / "bridge").is_dir() or (dev / "bonding").is_dir():
        return f"{name}: is a bridge or bond; give an unused interface (or a port you take out of it)"
    if (dev / "master").exists():
        return f"{name}: already a port of {(dev / 'master').resolve().name}; take it out first"
    addresses = _addresses(name)
    if addresses:
        return (f"{name}: has address {', '.join(addresses)}, so the host uses it; an uplink interface "
                "must carry no address (it moves into microcloud's namespace)")
    return ""
