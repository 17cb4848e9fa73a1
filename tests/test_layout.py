"""The shape of the package: a curated public surface, a headless core without Textual."""

from __future__ import annotations

import subprocess
import sys

import wsemail


def test_public_names_are_sorted_and_exist() -> None:
    assert wsemail.__all__ == sorted(wsemail.__all__)
    for name in wsemail.__all__:
        assert hasattr(wsemail, name), name


def test_headless_core_never_imports_textual() -> None:
    code = (
        "import sys, wsemail, wsemail.cli, wsemail.server.app, wsemail.server.controller;"
        "sys.exit(1 if 'textual' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_wsdl_is_served_and_names_every_operation(server) -> None:  # type: ignore[no-untyped-def]
    import httpx
    from lxml import etree

    response = httpx.get(server.url + "?wsdl")
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    wsdl = "http://schemas.xmlsoap.org/wsdl/"
    operations = {o.get("name") for o in root.iter(f"{{{wsdl}}}operation")}
    assert operations == {
        "GetSalt",
        "Send",
        "ListHeaders",
        "Retrieve",
        "Delete",
        "GetCertificate",
        "Extension",
        "ListFolders",
        "CreateFolder",
        "RenameFolder",
        "DeleteFolder",
        "Move",
        "SetFlags",
        "Search",
        "SaveDraft",
        "GetDraft",
        "ListDrafts",
        "DeleteDraft",
        "SendDraft",
        "ImportMessages",
        "ListThreads",
        "GetThread",
    }
    address = root.find(".//{http://schemas.xmlsoap.org/wsdl/soap12/}address")
    assert address is not None and address.get("location") == server.url


def test_every_fault_subcode_maps_back_to_one_class() -> None:
    from wsemail.protocol.errors import RemoteFault, fault_classes

    seen: dict[str, type[RemoteFault]] = {}
    pending: list[type[RemoteFault]] = [RemoteFault]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.subcode in seen and cls is not RemoteFault and seen[cls.subcode] is not RemoteFault:
            parent = seen[cls.subcode]
            assert issubclass(cls, parent) and cls.status == parent.status, cls
        seen.setdefault(cls.subcode, cls)
    assert fault_classes()["wsemail:InvalidRequest"].__name__ == "RequestInvalid"
