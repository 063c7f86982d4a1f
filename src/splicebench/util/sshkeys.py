"""SSH key pairs for the hosts the tool creates itself (lab namespaces, the arm64 guest)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def keygen(path: Path, comment: str) -> None:
    """Create an ed25519 key pair without passphrase: path (private) and path.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
