"""Inventory parsing: defaults, ssh_config, and a table of bad inputs with the exact error."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import paramiko
import pytest

from splicebench.errors import UserError
from splicebench.hosts.inventory import (
    LOCAL_HOST,
    InventoryError,
    empty_inventory,
    load_inventory,
    parse_inventory,
)

pytestmark = pytest.mark.unit

SRC = Path("/srv/bench/hosts.yaml")


def parse(text: str, ssh_config: str = "", **kw):
    cfg = paramiko.SSHConfig()
    cfg.parse(io.StringIO(ssh_config))
    return parse_inventory(textwrap.dedent(text), source=SRC, ssh_config=cfg, local_user="alice",
                           **kw)


def test_minimal_host_gets_defaults():
    inv = parse("""
        version: 1
        hosts:
          web1: {host: 192.0.2.10}
    """)
    h = inv.get("web1")
    assert (h.hostname, h.port, h.user, h.sudo) == ("192.0.2.10", 22, "alice", "sudo")
    assert h.key_files == ()
    assert h.workdir == "~/.cache/splicebench"
    assert h.known_hosts[0].endswith("/.ssh/known_hosts")
    assert inv.names() == [LOCAL_HOST, "web1"]
    assert h.target == "alice@192.0.2.10:22"


def test_relative_paths_are_relative_to_the_inventory_and_defaults_apply():
    inv = parse("""
        version: 1
        known_hosts: keys/known_hosts
        defaults: {user: root, key: id_lab, port: 2222, connect_timeout: 3, workdir: /tmp/sb}
        hosts:
          a: {host: 192.0.2.1, labels: [server, x86]}
          b: {host: 192.0.2.2, user: bench, key: [/k1, k2], sudo: root}
    """)
    a, b = inv.get("a"), inv.get("b")
    assert a.key_files == ("/srv/bench/id_lab",)
    assert a.known_hosts == ("/srv/bench/keys/known_hosts",)
    assert inv.known_hosts_file == Path("/srv/bench/keys/known_hosts")
    assert (a.user, a.port, a.sudo, a.connect_timeout, a.workdir) == ("root", 2222, "root", 3.0,
                                                                      "/tmp/sb")
    assert a.known_hosts_name == "[192.0.2.1]:2222"
    assert (b.user, b.sudo, b.key_files) == ("bench", "root", ("/k1", "/srv/bench/k2"))
    assert [h.name for h in inv.with_label("server")] == ["a"]


def test_ssh_config_is_honoured_and_inventory_fields_win():
    cfg = """
        Host web*
            HostName 198.51.100.7
            User deploy
            Port 2200
            IdentityFile ~/.ssh/id_web
            ProxyJump jumper@bastion.example:2022
            ConnectTimeout 4
        Host bastion.example
            IdentityFile /keys/bastion
        Host other
            ProxyCommand nc %h %p
            UserKnownHostsFile /etc/kh1 /etc/kh2
    """
    inv = parse("""
        version: 1
        hosts:
          web1: {}
          web2: {user: root, port: 22}
          other: {}
    """, ssh_config=textwrap.dedent(cfg))
    w1, w2, o = inv.get("web1"), inv.get("web2"), inv.get("other")
    assert (w1.hostname, w1.user, w1.port, w1.connect_timeout) == ("198.51.100.7", "deploy", 2200,
                                                                    4.0)
    assert w1.key_files == (str(Path("~/.ssh/id_web").expanduser()),)
    assert len(w1.proxy_jump) == 1
    hop = w1.proxy_jump[0]
    assert (hop.hostname, hop.user, hop.port, hop.key_files) == ("bastion.example", "jumper", 2022,
                                                                 ("/keys/bastion",))
    assert (w2.user, w2.port) == ("root", 22)
    assert o.proxy_command == "nc other 22"
    assert o.known_hosts == ("/etc/kh1", "/etc/kh2")


def test_inventory_known_hosts_overrides_ssh_config():
    inv = parse("""
        version: 1
        known_hosts: /lab/known_hosts
        hosts: {other: {}}
    """, ssh_config="Host other\n  UserKnownHostsFile /etc/kh1\n")
    assert inv.get("other").known_hosts == ("/lab/known_hosts",)


def test_jump_host_from_inventory():
    inv = parse("""
        version: 1
        hosts:
          bastion: {host: 192.0.2.1}
          inner: {host: 10.0.0.2, jump: bastion}
    """)
    assert inv.get("inner").jump == "bastion"


def test_no_inventory_means_local_only():
    assert empty_inventory().names() == [LOCAL_HOST]
    with pytest.raises(InventoryError, match=r"host 'web1' is unknown: there is no inventory; name one with --hosts FILE"):
        empty_inventory().get("web1")


def test_env_variable_names_the_inventory(tmp_path):
    p = tmp_path / "inv.yaml"
    p.write_text("version: 1\nhosts:\n  h1: {host: 192.0.2.9}\n")
    inv = load_inventory(None, environ={"SPLICEBENCH_HOSTS": str(p)})
    assert inv.path == p and inv.names() == [LOCAL_HOST, "h1"]


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"cannot read inventory .*nope.yaml"):
        load_inventory(tmp_path / "nope.yaml")


HOSTILE = ["a;rm -rf /", "$(reboot)", "`id`", "a b", "a\nb", "-oProxyCommand=sh", "a|b", "a'b",
           'a"b', "a&b", "a>b", "../x", "*", "é"]

BAD = [
    ("version: 2\nhosts: {a: {}}", "'version' must be 1 (got 2)"),
    ("version: 1\nhosts: {}", "'hosts' must be a non-empty mapping"),
    ("version: 1\nhost: {a: {}}", "unknown field 'host'; allowed:"),
    ("version: 1\nhosts: {a: {hots: x}}", "hosts.a: unknown field 'hots'"),
    ("version: 1\nhosts: {local: {}}", "'local' is built in and cannot be redefined"),
    ("version: 1\nhosts: {a: {port: 70000}}", "hosts.a.port: port 70000 is outside 1-65535"),
    ("version: 1\nhosts: {a: {port: ssh}}", "hosts.a.port: 'ssh' is not a port number"),
    ("version: 1\nhosts: {a: {sudo: yes}}", "hosts.a.sudo: True is not one of auto, root, sudo, none"),
    ("version: 1\nhosts: {a: {connect_timeout: 0}}", "hosts.a.connect_timeout: must be > 0"),
    ("version: 1\nhosts: {a: {io_timeout: soon}}", "hosts.a.io_timeout: expected seconds"),
    ("version: 1\nhosts: {a: {labels: x}}", "hosts.a.labels: expected a list"),
    ("version: 1\nhosts: {a: {workdir: relative/dir}}", "hosts.a.workdir: 'relative/dir' is not"),
    ("version: 1\nhosts: {a: {workdir: /tmp/../etc}}", "hosts.a.workdir: '..' is not allowed"),
    ("version: 1\nhosts: {a: {jump: b}}", "hosts.a.jump: 'b' is not a host of this inventory"),
    ("version: 1\nhosts: {a: {jump: b}, b: {jump: a}}", "jump loop a -> b -> a"),
    ("version: 1\nhosts: {a: {key: 3}}", "hosts.a.key: expected a path or a list of paths"),
    ("version: 1\nhosts: {a: {key: [3]}}", "hosts.a.key: expected a file path, got 3"),
    ("- a\n- b", "expected a mapping with 'version' and 'hosts'"),
    ("version: 1\nhosts: {a: [}", "not valid YAML"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_inventory_is_rejected_with_a_precise_error(text, message):
    with pytest.raises(InventoryError) as e:
        parse(text)
    assert message in str(e.value)
    assert str(SRC) in str(e.value)


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["name", "host", "user", "workdir", "label", "address", "jump"])
def test_hostile_values_are_rejected(field, value):
    import yaml

    host: dict = {}
    name = "h1"
    if field == "name":
        name = value
    elif field == "label":
        host["labels"] = [value]
    elif field == "workdir":
        host["workdir"] = "/tmp/" + value
    else:
        host[field] = value
    text = yaml.safe_dump({"version": 1, "hosts": {name: host}})
    with pytest.raises(InventoryError, match="is not allowed|'..' is not allowed"):
        parse(text)


def test_hostile_ssh_config_hostname_is_rejected():
    with pytest.raises(InventoryError, match=r"ssh_config HostName: 'x;reboot' is not allowed"):
        parse("version: 1\nhosts: {a: {}}", ssh_config="Host a\n  HostName x;reboot\n")
