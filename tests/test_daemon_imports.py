"""The daemon starts without the drivers' native libraries: librados/librbd, libvirt and
the OVN NB schema are imported when the stack connects (stack/drivers.py), so a
member that is not initialised stays small (bench.api prints its RSS). This guards the
import graph; it does not time or weigh anything."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("libvirt", "rados", "rbd", "ovsdbapp.schema.ovn_northbound")


def test_importing_the_daemon_loads_no_driver_library() -> None:
    code = ("import sys, microcloudd.daemon; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at daemon start: {out.stdout.strip()}"


def test_the_ovn_driver_does_without_ovsdbapps_nb_command_library() -> None:
    """Our change functions write NB rows themselves: ovsdbapp's NB commands (and netaddr,
    which they bring) would be ~1.5 MB of code resident for nothing."""
    code = ("import sys, microcloudd.drivers.network.ovn; "
            "print(','.join(m for m in ('ovsdbapp.schema.ovn_northbound', 'netaddr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported with the OVN driver: {out.stdout.strip()}"
