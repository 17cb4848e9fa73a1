"""A SOAP toolkit nobody here wrote (zeep) loads our WSDL and calls the service with a
standard WS-Security UsernameToken (PasswordText)."""

from __future__ import annotations

import pytest
from zeep import Client as ZeepClient
from zeep.exceptions import Fault
from zeep.wsse.username import UsernameToken

from conftest import PASSWORD, Running


def test_zeep_lists_headers_with_a_username_token(server: Running) -> None:
    server.client().send(["bob@localhost"], "for zeep", "hello toolkit")
    zeep = ZeepClient(server.url + "?wsdl", wsse=UsernameToken("bob@localhost", PASSWORD))
    answer = zeep.service.ListHeaders(Folder="inbox", Limit=10, UnreadOnly=False)
    headers = answer["MessageHeader"] if isinstance(answer, dict) else answer.MessageHeader
    assert [h.Subject for h in headers] == ["for zeep"]
    assert headers[0].From == "alice@localhost" and headers[0].Seen is False
    message = zeep.service.Retrieve(Id=headers[0].Id)
    assert message.Body == "hello toolkit"


def test_zeep_with_a_wrong_password_gets_a_fault(server: Running) -> None:
    zeep = ZeepClient(server.url + "?wsdl", wsse=UsernameToken("bob@localhost", "wrong!!!"))
    with pytest.raises(Fault) as caught:
        zeep.service.ListHeaders(Folder="inbox")
    assert "authentication failed" in str(caught.value.message)
    assert server.stored()[0] == 0


def test_zeep_sends_mail(server: Running) -> None:
    zeep = ZeepClient(server.url + "?wsdl", wsse=UsernameToken("carol@localhost", PASSWORD))
    zeep.service.Send(Message={"To": ["bob@localhost"], "Subject": "via zeep", "Body": "hi"})
    bob = server.client("bob@localhost")
    assert [h.sender for h in bob.list_headers().headers] == ["carol@localhost"]
