"""The instance's NoCloud seed, kept in RBD beside its root disk (so it starts on any member).

The storage driver has no "write these bytes into a volume" call; a volume backup file
(drivers/storage/backup_file.py) holding the ISO is imported instead, which is atomic: a
crash leaves either the whole seed or none.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import yaml

from microcloudd.api.errors import AlreadyExists
from microcloudd.db.records import Instance
from microcloudd.drivers.compute.seed import Seed, build_seed_iso_async
from microcloudd.drivers.storage.backup_file import BackupHeader, BackupWriter
from microcloudd.drivers.storage.base import StorageDriver, VolumeType
from microcloudd.services import instance_config as ic
from microcloudd.services import instance_spec as isp


def seed_for(rec: Instance) -> Seed:
    ethernets = {
        name: {"match": {"macaddress": isp.mac(rec, name)}, "set-name": name, "dhcp4": True}
        for name in ic.nic_devices(rec.devices)
    }
    network = yaml.safe_dump({"version": 2, "ethernets": ethernets}, sort_keys=False) if ethernets else None
    user_data = rec.config.get("cloud-init.user-data") or "#cloud-config\n{}\n"
    return Seed(instance_id=rec.config.get("volatile.cloud-init.instance-id") or rec.uuid,
                hostname=rec.name, user_data=user_data,
                network_config=rec.config.get("cloud-init.network-config") or network)


def _backup_file(iso: bytes, name: str, directory: Path) -> Path:
    size = -(-len(iso) // 4096) * 4096
    path = directory / f"{name}.seed"
    with open(path, "wb") as f:
        w = BackupWriter(f, BackupHeader(size=size, type=VolumeType.VM.value, name=name))
        w.extent(0, iso)
        w.finish()
    return path


async def write_seed(storage: StorageDriver, pool: str, rec: Instance) -> None:
    """Create the seed volume unless it exists (same row, same seed: a re-run keeps it)."""
    name = isp.seed_volume(rec.name)
    iso = await build_seed_iso_async(seed_for(rec))
    with tempfile.TemporaryDirectory(prefix="mc-seed-") as tmp:
        path = await asyncio.to_thread(_backup_file, iso, name, Path(tmp))
        try:
            await storage.import_volume(pool, name, path, type=VolumeType.VM)
        except AlreadyExists:
            pass


async def delete_seed(storage: StorageDriver, pool: str, name: str) -> None:
    await storage.delete_volume(pool, isp.seed_volume(name), type=VolumeType.VM, if_exists=True)
