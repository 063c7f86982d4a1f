"""SSH host keys: the errors for an unknown or changed key, fingerprints, and the reject policy.

Every connection loads the known_hosts files named by the inventory (or the user's) and uses
`RejectUnknown`: an unknown key raises `UnknownHostKey`, a changed one `ChangedHostKey`, both
naming the host and the SHA256 fingerprint and saying what to do. Fabric's own default (accept any
key, load no known_hosts) is never used, also not for ProxyJump hops.
"""

from __future__ import annotations

import base64
import hashlib
import shlex

import paramiko

from splicebench.errors import HostError
from splicebench.hosts.inventory import Hop, HostSpec, known_hosts_name


class HostKeyError(HostError):
    """A host key that is not trusted: unknown or changed."""


class UnknownHostKey(HostKeyError):
    def __init__(self, spec: HostSpec | Hop, name: str, key: paramiko.PKey, files: tuple[str, ...]):
        self.fingerprint = fingerprint(key)
        self.key = key
        where = " or ".join(files) if files else "any known_hosts file"
        super().__init__(
            f"host {name} ({target(spec)}) offered an unknown {key.get_name()} host key "
            f"{self.fingerprint}, which is not in {where}. Check the fingerprint with the "
            f"host's administrator (on the host: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), "
            f"then trust it with `invoke hosts.trust {name}` (add --hosts FILE), which shows it "
            f"before writing it.")


class ChangedHostKey(HostKeyError):
    def __init__(self, spec: HostSpec | Hop, name: str, got: paramiko.PKey,
                 expected: paramiko.PKey, files: tuple[str, ...]):
        self.fingerprint = fingerprint(got)
        self.expected = fingerprint(expected)
        kh = files[0] if files else "~/.ssh/known_hosts"
        super().__init__(
            f"HOST KEY CHANGED for host {name} ({target(spec)}): known_hosts has "
            f"{expected.get_name()} {self.expected}, the host offered {got.get_name()} "
            f"{self.fingerprint}. Someone may be intercepting the connection, or the host was "
            f"reinstalled. Not connecting. If the change is expected, remove the old key with "
            f"`ssh-keygen -R {shlex.quote(known_hosts_name(spec.hostname, spec.port))} -f "
            f"{shlex.quote(kh)}` and run `invoke hosts.trust {name}`.")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint: ``SHA256:<base64 without padding>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def target(spec: HostSpec | Hop) -> str:
    return f"{spec.user}@{spec.hostname}:{spec.port}"


class RejectUnknown(paramiko.RejectPolicy):
    """RejectPolicy whose error names the host, the fingerprint and what to do."""

    def __init__(self, spec: HostSpec | Hop, name: str, files: tuple[str, ...]):
        self.spec, self.name, self.files = spec, name, files

    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(self.spec, self.name, key, self.files)


