"""Real block devices for tests: a loop device over a sparse file, always detached after.

    with loop_device(tmp_path / "disk.img", 4 << 30) as dev:   # "/dev/loop7"
        ...
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def loop_device(backing: Path, size: int) -> Iterator[str]:
    with open(backing, "wb") as f:
        f.truncate(size)
    dev = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        yield dev
    finally:
        # Only the device we attached: by its name, checked to still be over our file.
        back = subprocess.run(["losetup", "-n", "-O", "BACK-FILE", dev], capture_output=True,
                              text=True).stdout.strip()
        if back.startswith(str(backing)):
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        backing.unlink(missing_ok=True)
