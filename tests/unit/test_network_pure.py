"""Pure parts of the guest network code: nft rendering, hosts/resolv.conf content, DNS packets, records."""

import struct

import pytest

from pymachine_agent.network import dns, hostsfile, nat
from pymachine_agent.network.model import Attachment, EndpointInfo, InvalidParameterError, PublishedPort
from pymachine_agent.network.networks import matches


def test_nat_render_is_one_atomic_table_with_isolation_masquerade_and_dnat():
    text = nat.render(
        "pm",
        [nat.BridgeNet("br0", "172.17.0.0/16"), nat.BridgeNet("br1", "10.1.0.0/24", internal=True)],
        [nat.Dnat("tcp", 8080, "172.17.0.2", 80)],
    )
    lines = [line.strip() for line in text.splitlines()]
    assert lines[:3] == ["table ip pm", "delete table ip pm", "table ip pm {"]
    assert "tcp dport 8080 dnat to 172.17.0.2:80" in lines
    assert 'ip saddr 172.17.0.0/16 oifname != "br0" masquerade' in lines
    assert not any("10.1.0.0/24 oifname !=" in line for line in lines)  # internal: no way out
    assert 'iifname "br0" oifname { "br1" } drop' in lines and 'iifname "br1" oifname { "br0" } drop' in lines
    assert 'oifname "br0" ip saddr 127.0.0.0/8 masquerade' in lines
    assert 'oifname "br0" ip saddr 172.17.0.0/16 ct status dnat masquerade' in lines  # hairpin
    assert lines.index("ct status dnat accept") < lines.index('iifname "br0" oifname { "br1" } drop')
    assert text.count("{") == text.count("}")


def test_resolv_conf_rules():
    guest = hostsfile.parse_resolv_conf(
        "# c\nnameserver 10.0.2.3\nnameserver 127.0.0.53\nsearch a b\noptions edns0\n"
    )
    assert guest.nameservers == ["10.0.2.3", "127.0.0.53"] and guest.search == ["a", "b"]
    assert hostsfile.container_resolv_conf(guest, embedded=True) == (
        "nameserver 127.0.0.11\nsearch a b\noptions ndots:0\n"
    )
    assert hostsfile.container_resolv_conf(guest, embedded=False) == (
        "nameserver 10.0.2.3\nsearch a b\noptions edns0\n"
    )
    assert hostsfile.container_resolv_conf(guest, False, ["1.1.1.1"], ["x"], ["ndots:2"]) == (
        "nameserver 1.1.1.1\nsearch x\noptions ndots:2\n"
    )


def test_hosts_file_and_add_host():
    text = hostsfile.container_hosts(
        "web", "", ["172.17.0.5"], ["db:10.0.0.9", "gw=host-gateway"], "172.17.0.1"
    )
    assert text.startswith("127.0.0.1\tlocalhost\n")
    assert text.endswith("172.17.0.5\tweb\n10.0.0.9\tdb\n172.17.0.1\tgw\n")
    with pytest.raises(InvalidParameterError):
        hostsfile.parse_extra_host("nocolon", "")


def _query(name: str, qtype: int = 1) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def test_dns_question_parsing_and_answers():
    query = _query("Web.Front")
    qid, name, qtype, qclass, end = dns.parse_question(query)
    assert (qid, name, qtype, qclass, end) == (0x1234, "Web.Front", 1, 1, len(query))
    reply = dns.build_answer(query, end, qtype, ["10.0.0.2", "10.0.0.3"])
    rid, flags, qd, an, _, _ = struct.unpack_from("!HHHHHH", reply)
    assert (rid, qd, an) == (0x1234, 1, 2) and flags & 0x8000 and flags & 0x0100 and flags & 0xF == 0
    assert reply.endswith(bytes([10, 0, 0, 3]))
    aaaa = _query("web", 28)
    assert struct.unpack_from("!HHHH", dns.build_answer(aaaa, len(aaaa), 28, ["10.0.0.2"]))[3] == 0
    nx = dns.build_answer(query, end, 1, [], rcode=dns.RCODE_NXDOMAIN)
    assert struct.unpack_from("!H", nx, 2)[0] & 0xF == 3
    with pytest.raises(ValueError):
        dns.parse_question(b"\0" * 5)


def test_dns_server_answers_known_names_without_forwarding():
    server = dns.DnsServer(lambda cid, name: ["10.0.0.7"] if (cid, name) == ("c1", "web") else None, [])
    try:
        reply = server.answer("c1", _query("WEB"))
        assert reply.endswith(bytes([10, 0, 0, 7]))
        servfail = server.answer("c1", _query("other"))  # no upstream configured
        assert struct.unpack_from("!H", servfail, 2)[0] & 0xF == dns.RCODE_SERVFAIL
    finally:
        server.close()


def test_endpoint_info_network_settings_shape():
    a = Attachment("nid", "bridge", "eid", "eth0", "v0", "02:42:ac:11:00:02", "172.17.0.2", 16, "172.17.0.1")
    info = EndpointInfo(
        "cid",
        "bridge",
        "/proc/1/ns/net",
        "h",
        "",
        "",
        [a],
        [PublishedPort("cid", "tcp", "", 32768, "172.17.0.2", 80)],
    )
    ns = info.network_settings()
    assert ns["IPAddress"] == "172.17.0.2" and ns["Gateway"] == "172.17.0.1" and ns["IPPrefixLen"] == 16
    assert ns["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}]}
    assert ns["Networks"]["bridge"]["EndpointID"] == "eid"
    assert info.ports[0].event("add")["guest_port"] == 32768


def test_network_filters():
    rec = {"Name": "front", "Id": "abcdef", "Driver": "bridge", "Labels": {"a": "1"}}
    assert matches(rec, {"name": ["ron"], "id": ["abc"], "driver": ["bridge"], "label": ["a", "a=1"]})
    assert matches(rec, {"type": ["custom"]}) and not matches(rec, {"type": ["builtin"]})
    assert not matches(rec, {"label": ["a=2"]}) and not matches(rec, {"name": {"back": True}})
