"""The service description served at `GET /wsemail?wsdl`: WSDL 1.1 with a SOAP 1.2
binding and the XSD of every operation, so toolkits nobody here wrote can call us."""

from __future__ import annotations

from functools import cache


@cache
def _template() -> str:
    from importlib.resources import files  # imported at the first GET ?wsdl

    folder = files("wsemail.server") / "wsdl"
    schema = (folder / "wsemail.xsd").read_text(encoding="utf-8")
    schema = schema.split("?>", 1)[1].strip()  # drop the XML declaration when embedding
    return (folder / "wsemail.wsdl").read_text(encoding="utf-8").replace("@@SCHEMA@@", schema)


def wsdl_document(location: str) -> bytes:
    """The WSDL with the service address set to `location`."""
    from xml.sax.saxutils import quoteattr

    return _template().replace('"@@LOCATION@@"', quoteattr(location)).encode("utf-8")
