"""The seed's broker URL grammar: broker/urls.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qstore.urls import (
    DEFAULT_PORT,
    Address,
    BrokerUrl,
    UrlError,
    format_addresses,
    mask_password,
    parse_addresses,
    parse_client_url,
    parse_host,
    parse_url,
)


def tcp(host: str, port: int = DEFAULT_PORT) -> Address:
    return Address("tcp", host, port)


@pytest.mark.parametrize(
    ("text", "addresses"),
    [
        ("localhost", (tcp("localhost"),)),
        ("localhost:5673", (tcp("localhost", 5673),)),
        ("amqp:localhost", (tcp("localhost"),)),
        ("AMQP:localhost", (tcp("localhost"),)),
        ("10.0.0.1,10.0.0.2:6000", (tcp("10.0.0.1"), tcp("10.0.0.2", 6000))),
        ("  node1 , node2:1 ", (tcp("node1"), tcp("node2", 1))),
        ("tcp:node1:5672", (tcp("node1"),)),
        ("TCP:node1", (tcp("node1"),)),
        ("ssl:node1:5671", (Address("ssl", "node1", 5671),)),
        ("ssl:node1", (Address("ssl", "node1", 5672),)),
        ("[::1]:5672", (tcp("::1"),)),
        ("[::1]", (tcp("::1"),)),
        ("ssl:[fe80::1]:99", (Address("ssl", "fe80::1", 99),)),
        ("tcp:tcp:7", (tcp("tcp", 7),)),
        ("my-host.example.com:65535", (tcp("my-host.example.com", 65535),)),
        ("amqp:a,tcp:b:2,ssl:[::2]:3", (tcp("a"), tcp("b", 2), Address("ssl", "::2", 3))),
    ],
)
def test_addresses(text: str, addresses: tuple[Address, ...]) -> None:
    url = parse_url(text)
    assert url.addresses == addresses
    assert url.user is None and url.password is None


@pytest.mark.parametrize(
    ("text", "user", "password"),
    [
        ("amqp:guest@h", "guest", None),
        ("amqp:guest/secret@h", "guest", "secret"),
        ("guest/secret@h:1,h2", "guest", "secret"),
        ("me/pa/ss@h", "me", "pa/ss"),  # the user ends at the first "/"
        ("me/p@ss@h", "me", "p@ss"),  # the user info ends at the last "@"
        ("me/p,w:x@h", "me", "p,w:x"),
        ("a@b@h", "a@b", None),
    ],
)
def test_credentials(text: str, user: str, password: str | None) -> None:
    url = parse_url(text)
    assert (url.user, url.password) == (user, password)
    assert url.addresses[0].host == "h"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty URL"),
        ("   ", "empty URL"),
        ("amqp:", "no address"),
        ("guest@", "no address"),
        ("@h", "empty user name"),
        ("u/@h", "empty password after 'u/'"),
        ("a,,b", "empty address"),
        ("a,", "empty address"),
        ("h:x", "bad port 'x' in 'h:x'"),
        ("h:0", "bad port '0'"),
        ("h:65536", "bad port '65536'"),
        ("h:", "bad port ''"),
        ("h:-1", "bad port '-1'"),
        ("h:+1", "bad port '+1'"),
        ("rdma:h:5672", "rdma transport is not supported"),
        ("amqp:u/p@good,RDMA:h", "rdma transport is not supported"),
        ("udp:h:1", "unknown transport 'udp:'"),
        ("::1", "IPv6 address must be in brackets"),
        ("fe80::1:5672", "IPv6 address must be in brackets"),
        ("[::1", "missing ']'"),
        ("[::1]5672", "unexpected '5672' after ']'"),
        ("[::1]:x", "bad port 'x'"),
        ("[nope]:1", "bad IPv6 address '[nope]'"),
        ("h/x:1", "bad host 'h/x'"),
        ("-h", "bad host '-h'"),
        ("a b", "bad host 'a b'"),
        (":5672", "empty host"),
        ("amqp://guest:pw@h:5672", "'amqp://' is not in this grammar"),
    ],
)
def test_errors_name_the_bad_part(text: str, fragment: str) -> None:
    with pytest.raises(UrlError) as err:
        parse_url(text)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


def test_password_never_in_errors_or_repr() -> None:
    for text in ("u/topsecret@h:x", "u/topsecret@", "amqp://u:topsecret@h", "u/topsecret@rdma:h"):
        with pytest.raises(UrlError) as err:
            parse_url(text)
        assert "topsecret" not in str(err.value)
    url = parse_url("u/topsecret@h")
    assert "topsecret" not in repr(url)
    assert url.masked() == "amqp:u/****@h:5672"
    assert str(url) == "amqp:u/topsecret@h:5672"


def test_render() -> None:
    url = parse_url("tcp:a, ssl:b:5671 ,[::1]:7,tcp:ssl")
    assert str(url) == "amqp:a:5672,ssl:b:5671,[::1]:7,tcp:ssl:5672"
    assert url.masked() == str(url)
    assert str(parse_url("u@h")) == "amqp:u@h:5672"
    assert url.addresses[2].hostport == "[::1]:7"
    assert str(url.addresses[1]) == "ssl:b:5671"


def test_direct_construction_is_checked() -> None:
    with pytest.raises(UrlError):
        BrokerUrl(None, None, ())
    with pytest.raises(UrlError):
        BrokerUrl(None, "pw", (tcp("h"),))
    with pytest.raises(UrlError):
        BrokerUrl("a/b", None, (tcp("h"),))
    with pytest.raises(UrlError):
        Address("rdma", "h", 1)
    with pytest.raises(UrlError):
        Address("tcp", "h", 0)
    with pytest.raises(UrlError):
        Address("tcp", "bad host", 1)


def test_parse_addresses_for_tools() -> None:
    assert parse_addresses("localhost:5673") == (tcp("localhost", 5673),)
    assert parse_addresses("a:1,b") == (tcp("a", 1), tcp("b"))
    assert parse_addresses("amqp:a", default_port=1) == (tcp("a", 1),)
    assert parse_addresses("[::1]:9,ssl:x") == (tcp("::1", 9), Address("ssl", "x", 5672))
    assert format_addresses(parse_addresses("a:1,ssl:[::1]:2")) == "a:1,ssl:[::1]:2"
    with pytest.raises(UrlError, match="without user/password"):
        parse_addresses("guest/pw@h")
    with pytest.raises(UrlError, match="not in this grammar"):
        parse_addresses("amqp://h")
    with pytest.raises(UrlError, match="bad port"):
        parse_addresses("h:99999")


def test_parse_host() -> None:
    assert parse_host("0.0.0.0") == "0.0.0.0"
    assert parse_host("::") == "::"
    assert parse_host("[::1]") == "::1"
    assert parse_host(" node1 ") == "node1"
    for bad in ("", "a:b", "[x]", "a b", "a/b"):
        with pytest.raises(UrlError):
            parse_host(bad)


def test_mask_password() -> None:
    assert mask_password("amqp:u/pw@h") == "amqp:u/****@h"
    assert mask_password("u/p/w@x@h,h2") == "u/****@h,h2"
    assert mask_password("amqp://u:pw@h") == "amqp://u:****@h"
    assert mask_password("u@h") == "u@h"
    assert mask_password("h:1") == "h:1"


_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
_v6 = st.ip_addresses(v=6).map(str)
_hosts = st.one_of(_names, st.ip_addresses(v=4).map(str), _v6, st.sampled_from(["tcp", "ssl"]))
_addresses = st.builds(
    Address, st.sampled_from(["tcp", "ssl"]), _hosts, st.integers(min_value=1, max_value=65535)
)
_user = st.text(
    st.characters(blacklist_characters="/", min_codepoint=33, max_codepoint=126), min_size=1
)
_password = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1)


@given(
    user=st.none() | _user,
    password=st.none() | _password,
    addresses=st.lists(_addresses, min_size=1, max_size=4),
)
def test_render_parses_back(
    user: str | None, password: str | None, addresses: list[Address]
) -> None:
    if user is None:
        password = None
    url = BrokerUrl(user, password, tuple(addresses))
    assert parse_url(str(url)) == url
    assert parse_url(url.masked()).addresses == url.addresses


def test_parse_client_url_takes_both_forms() -> None:
    u = parse_client_url("amqps://app:p%40ss%2Fw@h1:1,h2")
    assert (u.user, u.password) == ("app", "p@ss/w")
    assert u.addresses == (Address("ssl", "h1", 1), Address("ssl", "h2", 5671))
    assert "p@ss" not in repr(u) and u.masked() == "amqp:app/****@ssl:h1:1,ssl:h2:5671"
    u = parse_client_url("amqp://admin:pw@127.0.0.1:5672/")
    assert (u.user, u.password, u.addresses) == ("admin", "pw", (tcp("127.0.0.1", 5672),))
    assert parse_client_url("amqp://[::1]").addresses == (tcp("::1"),)
    assert parse_client_url("u/p@ssl:h:9") == parse_url("u/p@ssl:h:9")  # the seed's grammar
    for bad, why in (
        ("amqps://ssl:h", "no transport prefix in an amqps:// URL"),
        ("amqp://:pw@h", "empty user name"),
        ("amqp://u:@h", "empty password after 'u:'"),
        ("amqps://", "no address"),
    ):
        with pytest.raises(UrlError, match=why):
            parse_client_url(bad)
