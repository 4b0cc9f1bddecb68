"""The Debian package, built by `make deb`'s script and installed into a debootstrap chroot.

The chroot is a minbase Debian of the host's release with python3, debootstrapped once into
.cache/debootstrap and reused; each test run writes only to an overlay on top of it in
tmp_path. Every command runs in a private mount namespace (`unshare -m`) that holds the
overlay, /proc and /dev, so nothing stays mounted even if the test fails half way.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.images import debian_mirror

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "debootstrap"


def release() -> str:
    """The host's Debian codename: the package's python3 dependency is the host's."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise AssertionError("no VERSION_CODENAME in /etc/os-release")


@pytest.fixture(scope="module")
def base_root() -> Path:
    """A minbase Debian root with python3, made once per machine (about a minute)."""
    suite = release()
    root = CACHE / f"{suite}-minbase-python3"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", suite, str(root),
             debian_mirror()],
            check=True, capture_output=True,
        )
        (root / ".complete").touch()
    return root


@pytest.fixture(scope="module")
def deb() -> Path:
    """The package, built by the script `make deb` runs."""
    env = {**os.environ, "CAIRN_BUILD_PYTHON": sys.executable}
    done = subprocess.run(
        [str(ROOT / "packaging/deb/build.sh")], env=env, check=True, capture_output=True,
        text=True,
    )
    return Path(done.stdout.strip().splitlines()[-1])


def in_chroot(base: Path, layer: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` with sh in the chroot: `base` read-only below, `layer` holding changes."""
    upper, work, mnt = layer / "upper", layer / "work", layer / "mnt"
    for folder in (upper, work, mnt):
        folder.mkdir(exist_ok=True)
    setup = (
        f"mount -t overlay overlay -o lowerdir={base},upperdir={upper},workdir={work} {mnt}"
        f" && mount -t proc proc {mnt}/proc && mount --rbind /dev {mnt}/dev"
        f' && exec chroot {mnt} /bin/sh -ec "$0"'
    )
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-ec", setup, script],
        capture_output=True, text=True, check=False, timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )


def test_deb_installs_and_backs_up_in_a_debootstrap_chroot(
    base_root: Path, deb: Path, tmp_path: Path
) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    srv = layer / "upper" / "srv"
    srv.mkdir(parents=True)
    shutil.copy(deb, srv / deb.name)
    disk = srv / "disk.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(disk), "4M"], check=True)
    with disk.open("r+b") as out:
        out.seek(2 * 2**20)
        out.write(os.urandom(2**20))

    # group kvm exists on a real host (udev makes it); a repository made as root before this
    # install (an older package ran the appliance as root) must pass to the appliance's user
    installed = in_chroot(base_root, layer, f"""
        groupadd --system kvm
        mkdir -p /var/lib/cairn/old-repo && touch /var/lib/cairn/old-repo/catalog.db
        dpkg -i /srv/{deb.name}
    """)
    assert installed.returncode == 0, installed.stderr

    run = in_chroot(base_root, layer, """
        cairn --version
        cairn init --repo /srv/repo
        cairn backup --repo /srv/repo --volume disk /srv/disk.img
        cairn restore --repo /srv/repo disk@latest /srv/restored.img
        getent passwd cairn
        id -nG cairn
        stat -c '%U:%G %a' /etc/cairn /var/lib/cairn
        stat -c 'old %U:%G' /var/lib/cairn/old-repo/catalog.db
        runuser -u cairn -- cairn init --repo /var/lib/cairn/repo
        stat -c 'new %U:%G' /var/lib/cairn/repo/config.json
        grep -h -e ^ExecStart= -e ^User= /lib/systemd/system/cairn-agent.service \
            /lib/systemd/system/cairn-appliance.service
    """)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("cairn ")
    assert (srv / "restored.img").read_bytes() == disk.read_bytes()
    assert any(line.startswith("cairn:") and "/usr/sbin/nologin" in line for line in lines)
    assert "kvm" in lines[lines.index(next(x for x in lines if x.startswith("cairn:"))) + 1]
    assert "root:cairn 750" in lines and "cairn:cairn 750" in lines
    # the appliance runs as cairn, which owns its data and can make a repository there
    assert "old cairn:cairn" in lines and "new cairn:cairn" in lines
    # the agent stays root (it reads block devices): no User= in its unit
    assert lines[-3:] == ["ExecStart=/usr/bin/cairn agent run --config /etc/cairn/agent.toml",
                          "User=cairn",
                          "ExecStart=/usr/bin/cairn serve --config /etc/cairn/appliance.toml"]
