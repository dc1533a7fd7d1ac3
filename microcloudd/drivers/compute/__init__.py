"""Compute: VMs as libvirt domains (see base.ComputeDriver, libvirt.LibvirtDriver)."""
