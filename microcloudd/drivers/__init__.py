"""Backend drivers: compute (libvirt), storage (Ceph RBD), network (OVN). Each kind has base.py + real driver(s)."""
