"""NoCloud seed images: an ISO9660 volume labelled `cidata` holding meta-data, user-data and
optionally network-config (cloud-init's NoCloud datasource, and what the test image reads).

The storage layer imports the bytes into RBD; the domain attaches that image as a cdrom.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from microcloudd.api.errors import InvalidArgument, Unavailable
from microcloudd.api.names import check_name
from microcloudd.atomic_file import write_atomic

VOLUME_LABEL = "cidata"


@dataclass(frozen=True)
class Seed:
    instance_id: str
    hostname: str
    user_data: str = "#cloud-config\n{}\n"
    network_config: str | None = None  # cloud-init network config (v1 or v2 YAML)

    def files(self) -> dict[str, bytes]:
        meta = yaml.safe_dump({"instance-id": self.instance_id, "local-hostname": self.hostname},
                              default_flow_style=False, sort_keys=False)
        out = {"meta-data": meta.encode(), "user-data": self.user_data.encode()}
        if self.network_config is not None:
            out["network-config"] = self.network_config.encode()
        return out


def _check(seed: Seed) -> None:
    if not seed.instance_id or any(c.isspace() for c in seed.instance_id) or len(seed.instance_id) > 128:
        raise InvalidArgument(f"invalid cloud-init instance-id {seed.instance_id!r}")
    check_name("hostname", seed.hostname)
    for name, text in (("user-data", seed.user_data), ("network-config", seed.network_config)):
        if text is None:
            continue
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InvalidArgument(f"cloud-init {name} is not valid YAML: {e}") from None


def _iso_tool() -> list[str]:
    if shutil.which("genisoimage"):
        return ["genisoimage"]
    if shutil.which("xorriso"):
        return ["xorriso", "-as", "mkisofs"]
    raise Unavailable("neither genisoimage nor xorriso is installed: cannot build cloud-init seeds")


def build_seed_iso(seed: Seed) -> bytes:
    """The seed ISO's bytes (blocking: a short genisoimage run; see build_seed_iso_async)."""
    _check(seed)
    with tempfile.TemporaryDirectory(prefix="mc-seed-") as tmp:
        d = Path(tmp)
        paths = []
        for name, data in seed.files().items():
            (d / name).write_bytes(data)
            paths.append(str(d / name))
        out = d / "seed.iso"
        # -J -r: Joliet + Rock Ridge keep the lower-case names cloud-init looks for.
        argv = [*_iso_tool(), "-quiet", "-o", str(out), "-V", VOLUME_LABEL, "-J", "-r", *paths]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise Unavailable(f"building the cloud-init seed failed: {done.stderr.strip()}")
        return out.read_bytes()


async def build_seed_iso_async(seed: Seed) -> bytes:
    return await asyncio.to_thread(build_seed_iso, seed)


def write_seed_iso(seed: Seed, path: Path) -> Path:
    write_atomic(path, build_seed_iso(seed), mode=0o644)
    return path
