#!/usr/bin/env bash
# Install everything microcloud needs on a Debian 12 machine: the Debian packages of the
# stack (Ceph, OVN/OVS, libvirt/QEMU, image tooling) and a pinned Python venv at .venv.
# Safe to re-run: installs only what is missing, keeps an up-to-date venv.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

APT_PACKAGES=(
  # the cluster database and networking
  openvswitch-switch openvswitch-common ovn-central ovn-host
  # storage
  ceph-mon ceph-mgr ceph-osd ceph-common python3-rados python3-rbd
  # compute (Debian 12 ships the monolithic libvirtd)
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  qemu-system-x86 qemu-utils qemu-block-extra tini
  # the tiny test image and NoCloud seeds
  xorriso isolinux syslinux-common genisoimage kmod
  # host networking and the tools tests use in namespaces
  iproute2 nftables ethtool iputils-ping busybox tcpdump uuid-runtime
  # building Python extensions (libvirt-python, systemd-python)
  gcc pkg-config libsystemd-dev make curl
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d keeps package scripts from starting system daemons: microcloudd runs its own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's QEMU driver refuses to start unless this user exists (libvirt-daemon-system adds it).
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
getent group microcloud >/dev/null || groupadd -r microcloud

# Python: a venv on Python 3.11 with pinned packages, plus only the rados/rbd modules of
# Debian's python3-rados/python3-rbd (built for 3.11) exposed through a .pth.
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p .venv/ceph-modules
for m in rados rbd; do
  so=$(ls /usr/lib/python3/dist-packages/$m.cpython-311-*.so | head -n1)
  ln -sf "$so" .venv/ceph-modules/
done
echo "$here/.venv/ceph-modules" >"$site/ceph-modules.pth"

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip==24.3.1
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps -e .
  echo "$want" >"$stamp"
fi
echo "setup: ok ($(.venv/bin/python --version), venv at $here/.venv)"
