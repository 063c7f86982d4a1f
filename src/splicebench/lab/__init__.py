"""Test hosts this machine creates itself: SSH hosts in network namespaces, an emulated arm64 guest."""
