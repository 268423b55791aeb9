"""Every kind of output validates against the OFFICIAL ebMS 2.0 and AppRec 1.0 XSDs."""

from __future__ import annotations

import pytest
from lxml import etree

from daemon.tools.wrap import wrap
from daemon.transport import mime
from tests.conftest import demo_claim, wrap_demo
from tests.test_schemas import official_schema, require_reference

SCENARIOS = {
    "ok": lambda: wrap_demo(),
    "remarks": lambda: wrap_demo(demo_claim().replace(b'sumBelop="6.96"', b'sumBelop="6.90"')),
    "schema-errors": lambda: wrap_demo(demo_claim().replace(b' regningNr="1002"', b"")),
    "not-well-formed": lambda: wrap_demo(b"<MsgHead><broken></MsgHead>"),
    "unknown-partner": lambda: wrap(demo_claim(), from_her="1", cpa_id="x:1"),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_outputs_validate_against_official_schemas(sandbox, scenario):
    """Envelopes by the official SOAP+ebMS XSDs; AppRecs by the official AppRec 1.0 XSD."""
    require_reference()
    sandbox.drop(SCENARIOS[scenario]())
    sandbox.process()
    outputs = sandbox.outbox()
    assert any(p.name.startswith("apprec-") for p in outputs)
    for path in outputs:
        multipart, problem = mime.parse(path.read_bytes())
        assert problem is None
        envelope = etree.fromstring(multipart.start.data)
        schema = official_schema("envelope")
        assert schema.validate(envelope), (path.name, schema.error_log)
        for part in multipart.attachments:
            apprec = etree.fromstring(part.data)
            schema = official_schema("apprec")
            assert schema.validate(apprec), (path.name, schema.error_log)
