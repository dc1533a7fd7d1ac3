"""The tiny bootable test image, from Debian packages only (no mount, no loop device).

  1. `apt-get download` the kernel (what linux-image-amd64 depends on) and busybox-static
     into CACHE/debs (kept: later builds download nothing);
  2. `dpkg-deb -x` both, `depmod -b`, pack busybox + guest_init.sh + the few modules the
     guest needs (virtio, IDE cdrom, iso9660, ACPI button) into a gzip'ed newc initramfs;
  3. xorriso makes a hybrid ISO with ISOLINUX (`-isohybrid-mbr`): SeaBIOS boots it as a
     plain virtio *disk* (so it can be an RBD image), and as a cdrom.
Built images are cached in CACHE/images/KEY/disk.iso, KEY = hash of the .deb names and of
this builder's sources: a re-run with the same inputs copies the cached image in ~0 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import lzma
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from testimage.cpio import CpioWriter

HERE = Path(__file__).resolve().parent
KERNEL_META = "linux-image-amd64"
BUSYBOX = "busybox-static"
MODULES = ["virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "sd_mod", "ata_piix", "ahci",
           "sr_mod", "isofs"]
OPTIONAL_MODULES = ["button", "evdev"]  # ACPI power button -> graceful shutdown (may be built in)
ISOLINUX_DIR = Path("/usr/lib/ISOLINUX")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
KERNEL_ARGS = "console=ttyS0,115200 panic=-1 edd=off loglevel=4"
VOLUME_ID = "MCTEST"


def default_cache_dir() -> Path:
    base = os.environ.get("MICROCLOUD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "microcloud")
    return Path(base) / "test-image"


def _run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Parallel test runs share the cache: one builds, the others wait and reuse."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def kernel_package() -> str:
    out = _run(["apt-cache", "depends", KERNEL_META])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split()[1]
    raise RuntimeError(f"apt-cache finds no kernel behind {KERNEL_META}: run apt-get update")


def fetch_debs(debdir: Path) -> tuple[Path, Path]:
    debdir.mkdir(parents=True, exist_ok=True)
    found = []
    for pkg in (kernel_package(), BUSYBOX):
        have = sorted(debdir.glob(f"{pkg}_*.deb"))
        if not have:
            _run(["apt-get", "download", "-q", pkg], cwd=debdir)
            have = sorted(debdir.glob(f"{pkg}_*.deb"))
        if not have:
            raise RuntimeError(f"apt-get download {pkg} left no .deb in {debdir}")
        found.append(have[-1])
    return found[0], found[1]


def _module_order(moddir: Path) -> list[Path]:
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[Path(path).name.split(".ko")[0].replace("-", "_")] = (path, rest.split())
    by_path = {v[0]: k for k, v in deps.items()}
    order: list[str] = []

    def add(name: str) -> None:
        path, needs = deps[name]
        for dep in reversed(needs):  # modules.dep lists the nearest dependency first
            add(by_path[dep])
        if path not in order:
            order.append(path)

    for name in MODULES:
        add(name)
    for name in OPTIONAL_MODULES:
        if name in deps:
            add(name)
    return [moddir / p for p in order]


def build_kernel_and_initramfs(kernel_deb: Path, busybox_deb: Path, work: Path) -> tuple[Path, Path]:
    kroot, bbroot = work / "kernel", work / "busybox"
    _run(["dpkg-deb", "-x", str(kernel_deb), str(kroot)])
    _run(["dpkg-deb", "-x", str(busybox_deb), str(bbroot)])
    kver = next((kroot / "lib/modules").iterdir()).name
    _run(["depmod", "-b", str(kroot), kver])
    cpio = CpioWriter()
    for d in ("bin", "dev", "proc", "sys", "etc", "mnt", "lib", "lib/modules", "tmp"):
        cpio.directory(d)
    cpio.file("bin/busybox", (bbroot / "bin/busybox").read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", (HERE / "guest_init.sh").read_bytes(), 0o755)
    names = []
    for path in _module_order(kroot / "lib/modules" / kver):
        data = path.read_bytes()
        if path.name.endswith(".xz"):
            data = lzma.decompress(data)
        name = path.name.split(".ko")[0] + ".ko"
        cpio.file(f"lib/modules/{name}", data)
        names.append(name)
    cpio.file("etc/modules.order", ("\n".join(names) + "\n").encode())
    initrd = work / "initrd.gz"
    initrd.write_bytes(gzip.compress(cpio.finish(), compresslevel=6))
    vmlinuz = work / "vmlinuz"
    shutil.copy(next((kroot / "boot").glob("vmlinuz-*")), vmlinuz)
    return vmlinuz, initrd


def isolinux_cfg(extra_args: str = "") -> str:
    return ("SERIAL 0 115200\nDEFAULT mctest\nPROMPT 0\nTIMEOUT 0\nLABEL mctest\n"
            "  KERNEL /boot/vmlinuz\n"
            f"  APPEND initrd=/boot/initrd.gz {KERNEL_ARGS} {extra_args}".rstrip() + "\n")


def build_hybrid_iso(vmlinuz: Path, initrd: Path, out: Path, work: Path) -> Path:
    root = work / "isoroot"
    (root / "isolinux").mkdir(parents=True)
    (root / "boot").mkdir()
    shutil.copy(ISOLINUX_DIR / "isolinux.bin", root / "isolinux")
    shutil.copy(LDLINUX, root / "isolinux")
    (root / "isolinux" / "isolinux.cfg").write_text(isolinux_cfg())
    shutil.copy(vmlinuz, root / "boot" / "vmlinuz")
    shutil.copy(initrd, root / "boot" / "initrd.gz")
    _run(["xorriso", "-report_about", "WARNING", "-as", "mkisofs", "-o", str(out),
          "-isohybrid-mbr", str(ISOLINUX_DIR / "isohdpfx.bin"),
          "-c", "isolinux/boot.cat", "-b", "isolinux/isolinux.bin",
          "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
          "-V", VOLUME_ID, "-r", "-J", str(root)])
    return out


def cache_key(kernel_deb: Path, busybox_deb: Path) -> str:
    h = hashlib.sha256()
    for part in (kernel_deb.name, busybox_deb.name, isolinux_cfg(), " ".join(MODULES + OPTIONAL_MODULES)):
        h.update(part.encode() + b"\0")
    for src in [*sorted(HERE.glob("*.py")), HERE / "guest_init.sh"]:
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


def build(outdir: Path, cache: Path | None = None) -> Path:
    """OUTDIR/disk.iso, from the cache when its inputs did not change. Returns the path."""
    cache = cache or default_cache_dir()
    with _locked(cache / "lock"):
        kernel_deb, busybox_deb = fetch_debs(cache / "debs")
        cached = cache / "images" / cache_key(kernel_deb, busybox_deb) / "disk.iso"
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="mctest-image-") as tmp:
                work = Path(tmp)
                vmlinuz, initrd = build_kernel_and_initramfs(kernel_deb, busybox_deb, work)
                partial = build_hybrid_iso(vmlinuz, initrd, work / "disk.iso", work)
                shutil.copy(partial, cached.with_suffix(".tmp"))
                cached.with_suffix(".tmp").replace(cached)
    outdir.mkdir(parents=True, exist_ok=True)
    out = outdir / "disk.iso"
    if out.resolve() != cached.resolve():
        shutil.copy(cached, out.with_suffix(".tmp"))
        out.with_suffix(".tmp").replace(out)
    return out
