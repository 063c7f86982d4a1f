"""Provisioning decisions (pure) and the package check on this host (dpkg, no network)."""

from __future__ import annotations

import pytest

from splicebench.programs import provision
from splicebench.errors import ProvisionError
from splicebench.hosts.local import LocalHost

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nID=debian\n'
UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 24.04 LTS"\n'
FEDORA = 'NAME="Fedora Linux"\nID=fedora\nPRETTY_NAME="Fedora Linux 40 (Server Edition)"\n'
NEED = [provision.Package("clang", "clang"), provision.Package("libbpf-dev", "/usr/include/bpf/libbpf.h")]


@pytest.mark.unit
def test_os_release():
    assert provision.parse_os_release(DEBIAN) == provision.OsInfo("debian", (), "Debian GNU/Linux 12 (bookworm)")
    assert provision.parse_os_release(UBUNTU).apt
    assert not provision.parse_os_release(FEDORA).apt


@pytest.mark.unit
def test_apt_commands_as_root_and_with_sudo():
    install, update = provision.install_commands("local", provision.parse_os_release(DEBIAN), NEED, [], "build deps")
    assert install == ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                       "--no-install-recommends", "clang", "libbpf-dev"]
    assert update == ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "update", "-q"]
    install, _ = provision.install_commands("h", provision.parse_os_release(UBUNTU), NEED, ["sudo", "-n"], "x")
    assert install[:3] == ["sudo", "-n", "env"]


@pytest.mark.unit
def test_without_root_the_user_gets_the_command():
    with pytest.raises(ProvisionError) as exc:
        provision.install_commands("lab1", provision.parse_os_release(DEBIAN), NEED, None, "build dependencies")
    assert str(exc.value) == ("host lab1: missing build dependencies: clang libbpf-dev. Installing them needs root: "
                              "run as root, or install them first with: sudo apt-get install -y "
                              "--no-install-recommends clang libbpf-dev")


@pytest.mark.unit
def test_other_systems_get_a_clear_message():
    with pytest.raises(ProvisionError) as exc:
        provision.install_commands("box", provision.parse_os_release(FEDORA), NEED, [], "build dependencies")
    assert str(exc.value).startswith("host box: missing build dependencies: clang (clang), libbpf-dev "
                                     "(/usr/include/bpf/libbpf.h). Fedora Linux 40 (Server Edition) is not "
                                     "Debian or Ubuntu")


@pytest.mark.e2e
def test_missing_on_this_host():
    host = LocalHost()
    # The build ran on this host, so its dependencies are installed; an unknown package is not.
    assert provision.missing(host, provision.BUILD_PACKAGES) == []
    ghost = provision.Package("splicebench-no-such-package", "/nonexistent/splicebench")
    assert provision.missing(host, [ghost, *provision.BUILD_PACKAGES[:2]]) == [ghost]
    assert provision.ensure(host, provision.BUILD_PACKAGES, log=lambda m: None) == []
