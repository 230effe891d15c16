"""Properties of the PROXY protocol reader: any bytes give a value; what we encode reads back."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.proxy.proxyproto import (
    V2_SIGNATURE,
    NeedMore,
    ProxyError,
    ProxyHeader,
    encode_v1,
    encode_v2,
    looks_like_proxy,
    parse,
)

SETTINGS = settings(max_examples=300, deadline=None)

IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
PORTS = st.integers(min_value=0, max_value=65535)
HEADS = st.sampled_from([b"", b"P", b"PROXY ", b"PROXY TCP4 ", b"PROXY UNKNOWN", V2_SIGNATURE, V2_SIGNATURE[:5]])


@SETTINGS
@given(head=HEADS, data=st.binary(max_size=300))
def test_any_bytes_give_a_value(head: bytes, data: bytes) -> None:
    result = parse(head + data)
    assert isinstance(result, NeedMore | ProxyHeader | ProxyError)
    if isinstance(result, ProxyHeader):
        assert 0 < result.consumed <= len(head + data)
    assert isinstance(looks_like_proxy(head + data), bool)


@SETTINGS
@given(v2_tail=st.binary(min_size=4, max_size=300), cut=st.integers(min_value=0, max_value=400))
def test_any_v2_header_and_every_prefix_of_it(v2_tail: bytes, cut: int) -> None:
    whole = V2_SIGNATURE + v2_tail
    result = parse(whole)
    prefix = parse(whole[: min(cut, len(whole))])
    if isinstance(result, ProxyHeader):
        # A prefix of a valid header is never mistaken for another header or for an error.
        assert isinstance(prefix, NeedMore) or prefix == result
    assert isinstance(prefix, NeedMore | ProxyHeader | ProxyError)


@SETTINGS
@given(
    family=st.sampled_from([IPV4, IPV6]).flatmap(lambda s: st.tuples(s, s)),
    ports=st.tuples(PORTS, PORTS),
    rest=st.binary(max_size=40),
    v2=st.booleans(),
    partner=st.none() | st.text(max_size=20),
)
def test_encoded_headers_read_back(
    family: tuple[str, str], ports: tuple[int, int], rest: bytes, v2: bool, partner: str | None
) -> None:
    source, destination = (family[0], ports[0]), (family[1], ports[1])
    header = (
        encode_v2(source, destination, None, identity=None, partner=partner) if v2 else encode_v1(source, destination)
    )
    result = parse(header + rest)
    assert isinstance(result, ProxyHeader)
    assert result.version == (2 if v2 else 1) and result.command == "proxy"
    assert result.consumed == len(header)
    assert result.source is not None and result.destination is not None
    assert ipaddress.ip_address(result.source[0]) == ipaddress.ip_address(source[0])
    assert ipaddress.ip_address(result.destination[0]) == ipaddress.ip_address(destination[0])
    assert (result.source[1], result.destination[1]) == ports
    for cut in range(len(header)):
        assert isinstance(parse(header[:cut]), NeedMore)
