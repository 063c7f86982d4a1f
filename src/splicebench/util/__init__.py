"""Small helpers with one home each: atomic files and clocks, signal handling, processes, SSH keys.

Pure standard library; every other package may import from here, nothing here imports them.
"""
