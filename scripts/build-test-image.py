#!/usr/bin/env python3
"""Build the tiny bootable test image: OUTDIR/disk.iso (hybrid ISO, boots as a virtio disk).

Usage: scripts/build-test-image.py OUTDIR [--cache DIR]

From Debian packages only (apt-get download of the kernel and busybox-static). Cache:
$MICROCLOUD_CACHE_DIR/test-image, else ~/.cache/microcloud/test-image (debs/ and
images/KEY/). The guest prints "MCTEST: ..." lines on its serial console: BOOT-OK,
SEED instance-id=.. hostname=.. (from its NoCloud seed), LEASE ip=.. (udhcpc on eth0),
HTTP-UP (busybox httpd on :80 serving the instance-id), READY ip=.., BLOCKDEVS [..] on disk
changes; it stays up (kernel argument mctest.poweroff=N powers it off N s after READY) and
powers off on the ACPI power button (ACPID-UP at boot, POWER-BUTTON when pressed), so a
graceful `microcloud stop` works. Any change to scripts/testimage/ changes the cache key.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testimage.builder import build, default_cache_dir


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir", type=Path)
    p.add_argument("--cache", type=Path, default=default_cache_dir())
    a = p.parse_args()
    t0 = time.monotonic()
    out = build(a.outdir.absolute(), a.cache.absolute())
    took = time.monotonic() - t0
    print(f"{out} {out.stat().st_size} bytes in {took:.1f}s (cache {a.cache})", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
