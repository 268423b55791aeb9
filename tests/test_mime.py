"""MIME multipart/related: parse what we build, and real captures."""

from __future__ import annotations

from daemon.transport import mime
from tests.conftest import shared_or_skip


def test_build_then_parse_round_trips_bytes_exactly():
    """XML parts (8bit) and binary parts (base64) come back byte for byte."""
    xml = "<a>æøå\r\n  tekst</a>\n".encode()
    binary = bytes(range(256)) * 10
    raw = mime.build(
        [mime.Part("s@x", "text/xml", xml), mime.Part("b@x", "application/gzip", binary)]
    )
    parsed, problem = mime.parse(raw)
    assert problem is None
    assert parsed.start.content_id == "s@x" and parsed.start.data == xml
    assert parsed.by_cid("b@x").data == binary


def test_build_is_deterministic():
    """Same parts, same bytes (replay and recovery rely on it)."""
    parts = [mime.Part("s@x", "text/xml", b"<a/>")]
    assert mime.build(parts) == mime.build(parts)


def test_start_parameter_picks_the_soap_part():
    """The `start` parameter, not the position, names the envelope part."""
    raw = (
        b'Content-Type: multipart/related; type="text/xml"; boundary="B"; start="<env@x>"\r\n\r\n'
        b"--B\r\nContent-ID: <pay@x>\r\nContent-Type: text/xml\r\n\r\n<payload/>\r\n"
        b"--B\r\nContent-ID: <env@x>\r\nContent-Type: text/xml\r\n\r\n<envelope/>\r\n--B--\r\n"
    )
    parsed, problem = mime.parse(raw)
    assert problem is None
    assert parsed.start.data == b"<envelope/>"
    assert [p.content_id for p in parsed.attachments] == ["pay@x"]


def test_not_multipart_is_t10():
    """A bare XML file is not an ebMS message."""
    parsed, problem = mime.parse(b"<MsgHead/>")
    assert parsed is None and problem.code == "T10"


def test_real_2023_capture_parses_with_smtp_headers():
    """NAV's captured message (SMTP trace headers, base64 parts) splits into SOAP + CMS."""
    msg = shared_or_skip("samples/ebxml-behandlerkrav-2023/2023_08_29T12_56_58_328.msg")
    parsed, problem = mime.parse(msg.read_bytes())
    assert problem is None
    assert parsed.start.data.startswith(b"<SOAP:Envelope")
    (cms,) = parsed.attachments
    assert cms.content_type == "application/pkcs7-mime"
    p7m = msg.with_name("2023_08_29T12_56_58_328.p7m").read_bytes()
    assert cms.data == p7m or cms.data.strip() == p7m.strip()
