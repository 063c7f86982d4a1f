"""The whole lab, as `invoke lab.up` and `invoke lab.down` see it: the namespace hosts (netns) and the
arm64 guest (`invoke lab.arm64`) that shares their state directory.

netns knows nothing of the guest: it takes the guest's power-off as a tenant of the state directory,
stopped before the directory goes. Use these functions wherever a guest may be running.
"""

from __future__ import annotations

from splicebench.lab import arm64_guest
from splicebench.lab import netns, users

#: What else lives in a lab's state directory, each stopped (given the directory) before it is removed.
TENANTS: tuple[netns.Tenant, ...] = (arm64_guest.power_off,)


def up(n: int = 2, config: netns.LabConfig | None = None, user: users.LabUser | None = None) -> netns.Lab:
    """A lab of n namespace hosts (netns.up; user: log in as that non-root user, users.py); a lab that
    is rebuilt loses its arm64 guest too."""
    return netns.up(n, config, tenants=TENANTS, user=user)


def down(config: netns.LabConfig | None = None) -> list[str]:
    """Power the arm64 guest off, then remove the namespaces, links and state directory; idempotent.
    Returns what was removed."""
    return netns.down(config, tenants=TENANTS)
