"""NBD over TLS with a pre-shared key instead of a certificate, relayed by ``qemu-nbd``.

Why a relay: the TLS-PSK callbacks of Python's ``ssl`` (``set_psk_server_callback``) exist
from Python 3.13 on, and the appliance runs 3.11; the rest of the server would need a
second TLS stack (pyOpenSSL) with its own socket semantics. ``qemu-nbd`` speaks NBD's
STARTTLS with GnuTLS PSK already and is installed with QEMU, so it is the TLS end: cairn
serves the export on a unix socket in a private folder (mode 0700, no network client can
reach it) and ``qemu-nbd`` serves that to the network, refusing every client that does not
upgrade to TLS with a key from the file. It dies with the process that started it.

The key file is GnuTLS's (what ``psktool`` writes and ``qemu``, ``nbdcopy`` and ``nbdinfo``
read): one ``identity:hexkey`` line per client. Clients connect with
``nbds://IDENTITY@HOST:PORT/NAME?tls-psk-file=FILE`` (libnbd) or a ``tls-creds-psk`` object
(QEMU).
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import ListenError, UsageError
from cairn.virt.qemu import die_with_parent

_PSK_LINE = re.compile(r"^([^:\s]{1,64}):((?:[0-9a-fA-F]{2}){16,64})$")
START_TIMEOUT = 30.0
RELAY_GRACE = 2.0
"""seconds qemu-nbd gets to end on SIGTERM before SIGKILL. qemu-nbd 7.2 at times does not
act on SIGTERM at all (seen under load: it stayed in poll(2), its upstream connection
idle, until killed 10 s later, so `cairn export` took 10 s to stop). A relay holds nothing
of its own: every write it acknowledged, the inner server acknowledged first."""


def psk_identities(keys: Path) -> list[str]:
    """The identities of a GnuTLS key file; refuses one that QEMU would reject later."""
    try:
        lines = keys.read_text().split()
    except OSError as exc:
        raise UsageError(f"cannot read the pre-shared key file {keys}: {exc.strerror}") from None
    found = [_PSK_LINE.match(line) for line in lines]
    if not lines or not all(found):
        raise UsageError(f"{keys} is not a pre-shared key file: write one `identity:hexkey` "
                         "line per client (16 to 64 bytes of key, e.g. `psktool -u alice -p "
                         f"{keys}`)")
    return [match.group(1) for match in found if match]


@dataclass(frozen=True)
class PskListen:
    """Where and how the relay listens: ``port`` 0 takes a free one."""

    host: str
    port: int
    name: str
    keys: Path
    read_only: bool
    max_clients: int


@contextlib.contextmanager
def psk_relay(inner: Path, inner_name: str, folder: Path, listen: PskListen) -> Iterator[int]:
    """Serve the export ``inner_name`` of unix socket ``inner`` on ``listen`` with TLS-PSK
    until the block ends; yields the port. ``folder``: private, where qemu-nbd looks for
    ``keys.psk``: a link to the key file, not a copy, so no copy of the secret is left
    behind when this process is killed (GnuTLS reads the file at each handshake)."""
    (folder / "keys.psk").symlink_to(listen.keys.resolve())
    port = listen.port or _free_port(listen.host)
    argv = ["qemu-nbd", "--object", f"tls-creds-psk,id=psk0,endpoint=server,dir={folder}",
            "--tls-creds", "psk0", "--bind", listen.host, "--port", str(port),
            "--export-name", listen.name, "--shared", str(listen.max_clients), "--persistent",
            *(["--read-only"] if listen.read_only else []), "--image-opts",
            f"driver=nbd,server.type=unix,server.path={inner},export={inner_name}"]
    log = folder / "qemu-nbd.log"  # a file, not a pipe: refused clients log lines for days
    with log.open("wb") as out:
        relay = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 preexec_fn=die_with_parent)
    try:
        _wait_listening(relay, log, listen.host, port)
        yield port
    finally:
        relay.terminate()
        try:
            relay.wait(RELAY_GRACE)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()


def _free_port(host: str) -> int:
    """A port free now, for qemu-nbd to bind (it cannot report the one it picked)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _wait_listening(relay: subprocess.Popen[bytes], log: Path, host: str, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if relay.poll() is not None:
            reason = log.read_text(errors="replace").strip().splitlines()
            raise ListenError("the pre-shared key export", host, port,
                              reason[-1] if reason else f"qemu-nbd exited {relay.returncode}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ListenError("the pre-shared key export", host, port,
                      f"qemu-nbd did not listen within {START_TIMEOUT:.0f} s")
