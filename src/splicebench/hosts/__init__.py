"""Reaching a host: the Host/Proc interface, this machine, SSH hosts, the inventory, host facts."""
