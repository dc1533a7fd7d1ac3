"""Starting, watching and joining the bundled programs (ovsdb-server, OVN, Ceph, libvirtd)."""
