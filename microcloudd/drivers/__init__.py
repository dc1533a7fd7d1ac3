"""Backend drivers: compute (libvirt), storage (Ceph RBD), network (OVN).

Each kind has base.py (the interface) and its real driver(s) beside it."""
