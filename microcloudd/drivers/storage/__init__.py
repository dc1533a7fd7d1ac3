"""Storage drivers: the interface (base.py) and the Ceph RBD driver (rbd.py)."""
