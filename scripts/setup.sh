#!/usr/bin/env bash
# Sets up a fresh Debian machine for cairn: the Debian tools it drives (only those missing),
# then a virtual environment in .venv with cairn and its pinned test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package providing it
declare -A NEED=(
  [qemu-img]=qemu-utils
  [qemu-system-x86_64]=qemu-system-x86
  [nbdinfo]=libnbd-bin
  [nbdcopy]=libnbd-bin
  [tesseract]=tesseract-ocr
  [mkfs.ext4]=e2fsprogs
  [mkfs.xfs]=xfsprogs
  [mkfs.btrfs]=btrfs-progs
  [mkfs.vfat]=dosfstools
  [mcopy]=mtools
  [mkntfs]=ntfs-3g
  [sfdisk]=fdisk
  [extlinux]=extlinux
  [busybox]=busybox-static
  [fusermount3]=fuse3
  [debugfs]=e2fsprogs
  [chromium]=chromium
  [npm]=npm
  [debootstrap]=debootstrap   # the bench image pair, the .deb's install test
  [dpkg-deb]=dpkg             # make deb
  [unshare]=util-linux        # the .deb's install test: a private mount namespace
  [restic]=restic             # make bench: the peers cairn is measured against
  [borg]=borgbackup
)
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
[ -e /usr/lib/syslinux/mbr/mbr.bin ] || missing+=(syslinux-common)
[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || missing+=(ovmf)                    # UEFI guests
[ -e /usr/lib/systemd/boot/efi/systemd-bootx64.efi ] || missing+=(systemd-boot-efi)  # UEFI test disk
[ -e /usr/share/novnc/core/rfb.js ] || missing+=(novnc)       # the console's VM screen
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "installing Debian packages: $pkgs"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $pkgs >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test,bench]' --config-settings editable_mode=compat
  touch "$stamp"
fi
# Byte-compile cairn once here: a cold `cairn` command otherwise compiles every module it
# imports, every run, wherever PYTHONDONTWRITEBYTECODE is set (a third of a cold delete).
.venv/bin/python -m compileall -q cairn
# axe-core (pinned) for the console's accessibility test, kept out of the repository.
axe=.cache/axe-core/node_modules/axe-core/axe.min.js
if [ ! -f "$axe" ]; then
  npm install --prefix .cache/axe-core --no-save --no-audit --no-fund --silent axe-core@4.14.1 >/dev/null
fi
