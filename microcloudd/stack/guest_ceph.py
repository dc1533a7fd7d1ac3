"""The ceph.conf QEMU's RBD client reads: `<config file=...>` on every RBD disk of every
domain (drivers/compute/domain_xml.guest_ceph_conf), written before the compute driver
connects. It names this cloud's monitors and bounds Ceph's timeouts, so a guest start whose
Ceph does not answer fails after MOUNT_TIMEOUT s instead of librados' default 300 s.

Where: Layout.guest_ceph_conf, under the state dir. QEMU opens it itself at the path the
domain XML gives (libvirt hands QEMU no descriptor for it, unlike console logs), so
- our private libvirtd (components/libvirtd.py) must see it at that same path: it runs in a
  mount namespace where five libvirt directories are bind-mounted over, so the file must not
  be under them (checked); `ip netns exec` remounts only /sys and /etc/netns files;
- a host libvirtd's QEMU runs unprivileged (Debian: user libvirt-qemu): the file is mode 0644
  in a 0755 directory and every directory above it must let others through (the daemon makes
  its state dir 0711). AppArmor, where the host enforces it, may confine QEMU further (its
  profile must allow reading the file); not checked here.
Where the file could not be read by QEMU it is not used: guests start as before (unbounded),
and a warning says why.
"""

from __future__ import annotations

import logging
from pathlib import Path

from microcloudd.atomic_file import write_atomic
from microcloudd.components import libvirtd
from microcloudd.drivers.compute.domain_xml import guest_ceph_conf
from microcloudd.stack.layout import Layout

log = logging.getLogger(__name__)

MOUNT_TIMEOUT = 30  # s librados in QEMU waits for a monitor at a guest start (default 300)
OP_TIMEOUT = 60  # s for a monitor command (rados_mon_op_timeout; default: none)


def problem(path: Path, *, host_libvirt: bool) -> str:
    """Why QEMU could not read `path` (once written), or ""."""
    path = Path(path).absolute()
    if not host_libvirt:
        for hidden in libvirtd.BIND_MOUNTS.values():
            if path.is_relative_to(hidden):
                return f"{path} is under {hidden}, which our libvirtd's mount namespace replaces"
    else:
        for d in path.parents:
            try:
                mode = d.stat().st_mode
            except FileNotFoundError:  # not made yet: `write` makes it 0755
                continue
            except OSError as e:
                return f"cannot check {d}: {e.strerror}"
            if not mode & 0o001:
                return (f"{d} is mode {mode & 0o7777:04o}: the host libvirtd's QEMU (not root) cannot reach "
                        f"{path}; make it traversable (chmod o+x)")
    return ""


def write(lay: Layout, mon_host: str, *, host_libvirt: bool) -> Path | None:
    """Write the guest ceph.conf (atomically: a QEMU starting meanwhile reads a whole one);
    its path, or None if QEMU could not read it there (see the module docstring)."""
    path = lay.guest_ceph_conf
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    why = problem(path, host_libvirt=host_libvirt)
    if why:
        log.warning("not giving guests a ceph.conf with bounded timeouts (a start whose Ceph does not "
                    "answer then waits up to 300 s): %s", why)
        return None
    text = guest_ceph_conf(mount_timeout=MOUNT_TIMEOUT, op_timeout=OP_TIMEOUT, mon_host=mon_host)
    write_atomic(path, text, mode=0o644)
    return path
