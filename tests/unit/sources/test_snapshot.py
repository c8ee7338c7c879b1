"""The snapshot file: round trip and every way read_snapshot refuses a file."""

from __future__ import annotations

import io
import json
import sys

import pytest

from twinwall.errors import InputError
from twinwall.model import HostSnapshot, InterfaceAddress, Ipv6State, ListeningSocket, RulesetText
from twinwall.sources.snapshot import SCHEMA, read_snapshot, snapshot_to_json, write_snapshot


def sample() -> HostSnapshot:
    return HostSnapshot(
        hostname="web1",
        collected_at="2026-01-02T03:04:05Z",
        kernel="6.1.0-18-amd64",
        sockets=[
            ListeningSocket("tcp", "ipv6", "::", 8080, v6only=False, process="python3", pid=42,
                            unit="app.service", uid=0),
            ListeningSocket("udp", "ipv4", "0.0.0.0", 53, interface="eth0"),
        ],
        addresses=[
            InterfaceAddress("lo", "ipv4", "127.0.0.1", 8, "host"),
            InterfaceAddress("eth0", "ipv6", "2001:db8:1::1", 64, "global"),
        ],
        addresses_known=True,
        interfaces=["lo", "eth0"],
        ipv6=Ipv6State(enabled=True, evidence=["net.ipv6.conf.all.disable_ipv6 = 0"]),
        rulesets=[
            RulesetText("ipv4", "iptables-save", "nft", "iptables-save",
                        "*filter\n:INPUT DROP [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n"),
            RulesetText("ipv6", "iptables-save", "legacy", "ip6tables-legacy-save", ""),
        ],
        missing=["process names: not visible without root (ss -p shows only your own processes)"],
        table_sources=[{"table": "ip filter", "source": "iptables-save", "reason": "iptables-nft table"}],
    )


def write_doc(tmp_path, doc, name="host.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_round_trip_file(tmp_path):
    path = str(tmp_path / "host.json")
    snap = sample()
    write_snapshot(snap, path)
    doc = json.loads(open(path).read())
    assert doc["schema"] == SCHEMA
    assert list(doc)[0] == "schema"
    assert read_snapshot(path) == snap
    assert snapshot_to_json(read_snapshot(path)) == doc


def test_round_trip_stdout_and_stdin(capsys, monkeypatch):
    write_snapshot(sample(), "-")
    out = capsys.readouterr().out
    assert json.loads(out)["hostname"] == "web1"

    class Stdin:
        buffer = io.BytesIO(out.encode())

    monkeypatch.setattr("sys.stdin", Stdin)
    assert read_snapshot("-") == sample()


def test_minimal_document_gets_defaults(tmp_path):
    snap = read_snapshot(write_doc(tmp_path, {"schema": SCHEMA}))
    assert snap.sockets == [] and snap.sockets_known is True
    assert snap.ipv6.enabled is None and snap.rulesets == []
    # unknown extra fields are ignored (a newer writer may add some)
    doc = snapshot_to_json(sample())
    doc["future_field"] = {"x": 1}
    doc["sockets"][0]["future"] = True
    assert read_snapshot(write_doc(tmp_path, doc)) == sample()


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.json: no such file$"):
        read_snapshot(str(tmp_path / "nope.json"))


def test_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        read_snapshot(str(tmp_path))


def test_not_json_says_line_and_column(tmp_path):
    path = tmp_path / "host.json"
    path.write_text('{\n  "schema": "twinwall.snapshot/1",\n  "hostname": oops\n}\n')
    with pytest.raises(InputError) as info:
        read_snapshot(str(path))
    assert "invalid JSON at line 3, column 15" in str(info.value)
    path.write_text("")
    with pytest.raises(InputError, match="invalid JSON at line 1, column 1"):
        read_snapshot(str(path))


def test_not_utf8(tmp_path):
    path = tmp_path / "host.json"
    path.write_bytes(b'{"schema": "\xff"}')
    with pytest.raises(InputError, match="not UTF-8"):
        read_snapshot(str(path))


def test_schema_missing_wrong_and_top_level(tmp_path):
    with pytest.raises(InputError) as info:
        read_snapshot(write_doc(tmp_path, {"hostname": "x"}))
    assert 'no "schema" field (expected "twinwall.snapshot/1")' in str(info.value)
    with pytest.raises(InputError) as info:
        read_snapshot(write_doc(tmp_path, {"schema": "twinwall.snapshot/2"}))
    assert str(info.value).endswith(
        'unsupported snapshot schema "twinwall.snapshot/2" (expected "twinwall.snapshot/1")')
    with pytest.raises(InputError, match="top level is a list"):
        read_snapshot(write_doc(tmp_path, [1, 2]))


@pytest.mark.parametrize(
    "mutate, where, words",
    [
        (lambda d: d.update(hostname=5), "hostname", "expected a string, found an integer"),
        (lambda d: d.update(sockets={}), "sockets", "expected a list, found an object"),
        (lambda d: d["sockets"][0].update(port="22"), "sockets[0].port", "expected an integer, found a string"),
        (lambda d: d["sockets"][0].update(port=True), "sockets[0].port", "expected an integer, found a boolean"),
        (lambda d: d["sockets"][1].update(port=70000), "sockets[1].port", "not a port number"),
        (lambda d: d["sockets"][0].update(v6only="no"), "sockets[0].v6only", "expected true or false"),
        (lambda d: d["sockets"][0].pop("address"), "sockets[0].address", "missing"),
        (lambda d: d["sockets"][0].update(protocol="sctp"), "sockets[0].protocol", 'not one of "tcp", "udp"'),
        (lambda d: d["sockets"][1].update(family="inet"), "sockets[1].family", "not one of"),
        (lambda d: d["sockets"].append("tcp/22"), "sockets[2]", "expected an object, found a string"),
        (lambda d: d["addresses"][1].update(prefixlen=129), "addresses[1].prefixlen", "out of range"),
        (lambda d: d["addresses"][0].update(prefixlen=None), "addresses[0].prefixlen", "found null"),
        (lambda d: d.update(interfaces=["lo", 3]), "interfaces[1]", "expected a string"),
        (lambda d: d.update(ipv6=True), "ipv6", "expected an object"),
        (lambda d: d["ipv6"].update(enabled="yes"), "ipv6.enabled", "expected true or false"),
        (lambda d: d["ipv6"].update(evidence="x"), "ipv6.evidence", "expected a list of strings"),
        (lambda d: d["rulesets"][0].pop("text"), "rulesets[0].text", "missing"),
        (lambda d: d["rulesets"][0].update(family="ipx"), "rulesets[0].family", "not one of"),
        (lambda d: d.update(missing="nothing"), "missing", "expected a list of strings"),
        (lambda d: d.update(sockets_known="true"), "sockets_known", "expected true or false"),
        (lambda d: d["table_sources"][0].update(table=None), "table_sources[0].table", "found null"),
        (lambda d: d["table_sources"].append("ip nat"), "table_sources[1]", "expected an object"),
        # an address is an IP address of its object's family
        (lambda d: d["addresses"][0].update(address="999.1.1.1"), "addresses[0].address", "not an IP address"),
        (lambda d: d["sockets"][1].update(address="999.1.1.1"), "sockets[1].address", "not an IP address"),
        (lambda d: d["sockets"][1].update(address="::"), "sockets[1].address", "not an ipv4 address"),
        (lambda d: d["addresses"][1].update(address="192.0.2.1"), "addresses[1].address", "not an ipv6 address"),
        (lambda d: d["sockets"][0].update(address="localhost"), "sockets[0].address", "not an IP address"),
    ],
)
def test_wrong_field_types(tmp_path, mutate, where, words):
    doc = snapshot_to_json(sample())
    mutate(doc)
    with pytest.raises(InputError) as info:
        read_snapshot(write_doc(tmp_path, doc))
    msg = str(info.value)
    assert f"bad snapshot field {where}: " in msg
    assert words in msg
    assert "\n" not in msg


@pytest.mark.parametrize("model, key", [(ListeningSocket, "sockets"), (InterfaceAddress, "addresses")])
def test_every_model_field_is_checked(tmp_path, model, key):
    """The validator follows the model: every field of the dataclass is type-checked (a field
    added to ListeningSocket is checked without repeating it in sources/snapshot.py)."""
    import dataclasses

    for f in dataclasses.fields(model):
        doc = snapshot_to_json(sample())
        doc[key][0][f.name] = ["not", "a", "scalar"]
        with pytest.raises(InputError, match=rf"bad snapshot field {key}\[0\]\.{f.name}: "):
            read_snapshot(write_doc(tmp_path, doc))


def test_snapshot_json_is_the_reports_json(tmp_path):
    """The collector writes its JSON with the standard library: the same bytes as the report
    writer (orjson where installed)."""
    from twinwall.report.json_out import dumps

    snap = sample()
    snap.hostname = "h\u00f6st \u2028 \U0001f600"
    write_snapshot(snap, str(tmp_path / "s.json"))
    assert (tmp_path / "s.json").read_bytes() == dumps(snapshot_to_json(snap), pretty=True) + b"\n"


def test_write_to_missing_directory(tmp_path):
    with pytest.raises(InputError, match="cannot write"):
        write_snapshot(sample(), str(tmp_path / "no" / "such" / "dir" / "host.json"))


# --- facts that go into a snapshot: the pure parts of twinwall.sources.host -----------------

from twinwall.sources import host  # noqa: E402


def fake_tree(tmp_path, disable_param, conf):
    sysdir = tmp_path / "sys"
    proc = tmp_path / "proc"
    if disable_param is not None:
        p = sysdir / "module/ipv6/parameters"
        p.mkdir(parents=True)
        (p / "disable").write_text(f"{disable_param}\n")
    if conf is not None:
        for name, value in conf.items():
            d = proc / "sys/net/ipv6/conf" / name
            d.mkdir(parents=True)
            (d / "disable_ipv6").write_text(f"{value}\n")
    return str(proc), str(sysdir)


GLOBAL6 = [InterfaceAddress("eth0", "ipv6", "2001:db8::5", 64, "global"),
           InterfaceAddress("eth0", "ipv6", "fe80::1", 64, "link"),
           InterfaceAddress("lo", "ipv6", "::1", 128, "host")]


def test_ipv6_state_module_disabled(tmp_path):
    proc, sysdir = fake_tree(tmp_path, 1, {"all": 0, "default": 0})
    st = host.ipv6_state([], proc=proc, sys=sysdir)
    assert st.enabled is False
    assert st.evidence[0] == f"ipv6.disable = 1 ({sysdir}/module/ipv6/parameters/disable)"
    assert "no IPv6 address other than loopback and link-local" in st.evidence


def test_ipv6_state_sysctls_and_addresses(tmp_path):
    proc, sysdir = fake_tree(tmp_path, 0, {"all": 1, "default": 1, "eth0.100": 1, "lo": 0})
    st = host.ipv6_state(GLOBAL6, proc=proc, sys=sysdir)
    assert st.enabled is False
    assert st.evidence[1:5] == [
        "net.ipv6.conf.all.disable_ipv6 = 1",
        "net.ipv6.conf.default.disable_ipv6 = 1",
        "net.ipv6.conf.eth0/100.disable_ipv6 = 1",
        "net.ipv6.conf.lo.disable_ipv6 = 0",
    ]
    assert st.evidence[-1] == "IPv6 addresses other than loopback and link-local: 2001:db8::5 (eth0)"
    proc, sysdir = fake_tree(tmp_path / "b", 0, {"all": 1, "default": 0})
    assert host.ipv6_state(GLOBAL6, proc=proc, sys=sysdir).enabled is True


def test_ipv6_state_no_ipv6_in_kernel(tmp_path):
    proc, sysdir = fake_tree(tmp_path, None, None)
    st = host.ipv6_state(None, proc=proc, sys=sysdir)
    assert st.enabled is False
    assert st.evidence == [
        f"{sysdir}/module/ipv6/parameters/disable: not present",
        f"{proc}/sys/net/ipv6: not present (no IPv6 in this kernel or namespace)",
    ]


def test_iptables_backend():
    assert host.iptables_backend("iptables-save v1.8.9 (nf_tables)") == "nft"
    assert host.iptables_backend("iptables v1.8.7 (legacy)\n") == "legacy"
    assert host.iptables_backend("iptables v1.4.21") == "legacy"  # before 1.8: legacy only
    assert host.iptables_backend("ip6tables-save v1.6.1") == "legacy"
    assert host.iptables_backend("iptables v1.8.2") == "unknown"
    assert host.iptables_backend("") == "unknown"


def test_addresses_from_old_ip_oneline_output():
    link = ("1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\\    link/loopback 00:00:00:00:00:00\n"
            "2: eth0@if9: <BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state UP\\    link/ether 52:54:00:12:34:56\n"
            "3: wg0: <POINTOPOINT,NOARP> mtu 1420 qdisc noop state DOWN\\    link/none\n")
    addr = ("1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
            "1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever\n"
            "2: eth0    inet 198.51.100.7/24 brd 198.51.100.255 scope global eth0\\       valid_lft forever\n"
            "2: eth0    inet6 2001:db8:0:0::7/64 scope global \\       valid_lft forever\n"
            "2: eth0    inet6 fe80::5054:ff:fe12:3456/64 scope link \\       valid_lft forever\n")
    ifaces, addrs = host._addresses_from_oneline(addr, link)
    assert ifaces == ["lo", "eth0", "wg0"]
    assert [(a.interface, a.family, a.address, a.prefixlen, a.scope) for a in addrs] == [
        ("lo", "ipv4", "127.0.0.1", 8, "host"),
        ("lo", "ipv6", "::1", 128, "host"),
        ("eth0", "ipv4", "198.51.100.7", 24, "global"),
        ("eth0", "ipv6", "2001:db8::7", 64, "global"),
        ("eth0", "ipv6", "fe80::5054:ff:fe12:3456", 64, "link"),
    ]


def test_addresses_from_json_skips_placeholders():
    text = json.dumps([
        {"ifindex": 1, "ifname": "lo", "addr_info": [
            {"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}]},
        {"ifindex": 2, "ifname": "eth0", "addr_info": [
            {}, {"family": "inet6", "local": "2001:db8::1", "prefixlen": 64, "scope": "global"}]},
        {},
    ])
    ifaces, addrs = host._addresses_from_json(text)
    assert ifaces == ["lo", "eth0"]
    assert [a.address for a in addrs] == ["127.0.0.1", "2001:db8::1"]


def test_run_command_helper(tmp_path):
    missing = host.run_command(["twinwall-no-such-tool-xyz"])
    assert missing.not_installed and not missing.ok
    code = "import os, sys; print(os.environ['LC_ALL']); sys.stderr.write('oops\\n'); sys.exit(3)"
    res = host.run_command([sys.executable, "-c", code])
    assert res.stdout == "C\n" and res.returncode == 3
    assert res.reason() == "oops (exit status 3)"
    slow = host.run_command(["sleep", "5"], timeout=0.2)
    assert slow.error == "timed out after 0.2 s" and not slow.ok


def test_deep_nesting_is_a_one_line_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"schema": "twinwall.snapshot/1", "x": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(InputError, match="nested too deeply"):
        read_snapshot(str(path))


def test_bad_snapshot_exits_2_with_one_line(tmp_path):
    import subprocess

    doc = snapshot_to_json(sample())
    doc["sockets"][1]["address"] = "::"
    r = subprocess.run([sys.executable, "-m", "twinwall", "audit", "--snapshot", write_doc(tmp_path, doc)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("twinwall: ") and r.stderr.count("\n") == 1, r.stderr
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    r = subprocess.run([sys.executable, "-m", "twinwall", "audit", "--snapshot", str(deep)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("key", ["backend", "source"])
@pytest.mark.parametrize("gone", ["left out", "null"])
def test_a_rulesets_backend_and_source_may_be_null_or_left_out(tmp_path, key, gone):
    doc = snapshot_to_json(sample())
    if gone == "null":
        doc["rulesets"][0][key] = None
    else:
        del doc["rulesets"][0][key]
    ruleset = read_snapshot(write_doc(tmp_path, doc)).rulesets[0]
    assert getattr(ruleset, key) == {"backend": "unknown", "source": ""}[key]
    assert ruleset.text == sample().rulesets[0].text
