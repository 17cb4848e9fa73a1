"""TLS, the in-process transport seam, and the real `wsemail serve` process."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import requests
from zeep import Client as ZeepClient
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

from wsemail.client.mail import Client
from wsemail.protocol.errors import TransportError

from certs import make_tls_files
from conftest import PASSWORD, fault_subcode, start_server, wsemail_binary


def test_tls_for_the_client_cli_and_a_third_party_toolkit(tmp_path: Path) -> None:
    ca, cert, key = make_tls_files(tmp_path)
    running = start_server(tmp_path / "s", tls_cert=cert, tls_key=key)
    try:
        assert running.url.startswith("https://127.0.0.1:")
        with Client(running.url, "alice@localhost", PASSWORD, verify=str(ca)) as alice:
            alice.send(["bob@localhost"], "over TLS", "secret")
        with (
            Client(running.url, "bob@localhost", PASSWORD) as untrusting,
            pytest.raises(TransportError),
        ):
            untrusting.list_headers()  # the test CA is not in the system trust store
        env = {
            **os.environ,
            "WSEMAIL_SERVER": running.url,
            "WSEMAIL_USER": "bob@localhost",
            "WSEMAIL_PASSWORD": PASSWORD,
            "WSEMAIL_CACERT": str(ca),
        }
        listed = subprocess.run(
            [wsemail_binary(), "list", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0 and "over TLS" in listed.stdout
        session = requests.Session()
        session.verify = str(ca)
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        zeep = ZeepClient(
            running.url + "?wsdl",
            transport=Transport(session=session),
            wsse=UsernameToken("bob@localhost", PASSWORD),
        )
        assert zeep.service.ListHeaders(Folder="inbox").MessageHeader[0].Subject == "over TLS"
        session.close()
    finally:
        running.stop()


def test_tls_checks_hold_with_the_bundle_read_at_the_first_handshake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client reads its CA bundle when it first connects over TLS (wsemail/client/tls.py):
    the host name is still checked, SSL_CERT_FILE is honoured as httpx honours it, and an
    unreadable bundle refuses the connection rather than skipping the check."""
    ca, cert, key = make_tls_files(tmp_path)
    running = start_server(tmp_path / "s", tls_cert=cert, tls_key=key)
    try:
        with (
            Client(
                running.url, "alice@localhost", PASSWORD, verify=str(ca), tls_name="a.test"
            ) as wrong_name,
            pytest.raises(TransportError),
        ):
            wrong_name.list_headers()  # the certificate names localhost and 127.0.0.1 only
        with (
            Client(
                running.url, "alice@localhost", PASSWORD, verify=str(tmp_path / "none.pem")
            ) as no_bundle,
            pytest.raises(TransportError),
        ):
            no_bundle.list_headers()
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        with Client(running.url, "alice@localhost", PASSWORD) as trusting:
            assert trusting.list_headers().headers == []
        # the server still answers, and the refused clients stored nothing
        with Client(running.url, "bob@localhost", PASSWORD, verify=str(ca)) as bob:
            assert bob.list_headers().headers == []
    finally:
        running.stop()


def test_password_text_is_refused_without_tls_from_a_remote_peer(tmp_path: Path) -> None:
    running = start_server(tmp_path / "s")
    try:
        app = running.controller.server.asgi()
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        zeep_envelope = (
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
            b'xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-'
            b'secext-1.0.xsd"><s:Header><wsse:Security><wsse:UsernameToken>'
            b"<wsse:Username>bob@localhost</wsse:Username>"
            b"<wsse:Password>" + PASSWORD.encode() + b"</wsse:Password>"
            b"</wsse:UsernameToken></wsse:Security></s:Header><s:Body>"
            b'<w:ListHeaders xmlns:w="urn:wsemail"/></s:Body></s:Envelope>'
        )

        async def post() -> httpx.Response:
            async with httpx.AsyncClient(transport=transport) as client:
                return await client.post("http://testserver/wsemail", content=zeep_envelope)

        import asyncio

        response = asyncio.run(post())
        assert response.status_code == 400
        assert fault_subcode(response) == "wsse:InvalidSecurity"
        assert b"only over TLS" in response.content
    finally:
        running.stop()


def _start_serve(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [wsemail_binary(), "serve", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "serving" in line, line
    return proc, line.split(" at ")[1].split()[0]


def test_real_serve_process_embedded_default_and_restart(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    env["HOME"] = str(tmp_path)
    proc, url = _start_serve(["--port", "0"], env)
    data = tmp_path / "xdg" / "wsemail" / "server"
    try:
        assert (data / "wsemail.db").exists() and (data / "secret.key").stat().st_mode & 0o077 == 0
        for user in ("alice@localhost", "bob@localhost"):
            subprocess.run(
                [wsemail_binary(), "user", "add", user, "--password-stdin"],
                input=PASSWORD + "\n",
                env=env,
                check=True,
                timeout=60,
                capture_output=True,
                text=True,
            )
        client_env = {
            **env,
            "WSEMAIL_SERVER": url,
            "WSEMAIL_USER": "alice@localhost",
            "WSEMAIL_PASSWORD": PASSWORD,
        }
        subprocess.run(
            [wsemail_binary(), "send", "--to", "bob@localhost", "-s", "durable"],
            input="kept across restarts",
            env=client_env,
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        proc.stdout.close()  # type: ignore[union-attr]
    proc, url = _start_serve(["--port", "0", "--data-dir", str(data)], env)
    try:
        with Client(url, "bob@localhost", PASSWORD) as bob:
            header = bob.list_headers().headers[0]
            assert bob.retrieve(header.id).body == "kept across restarts"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        proc.stdout.close()  # type: ignore[union-attr]


def test_serve_reports_a_busy_port_in_one_line(tmp_path: Path) -> None:
    running = start_server(tmp_path / "s")
    try:
        port = running.url.split(":")[2].split("/")[0]
        result = subprocess.run(
            [wsemail_binary(), "serve", "--data-dir", str(tmp_path / "t"), "--port", port],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert result.stderr.strip().startswith("wsemail: cannot listen on 127.0.0.1:")
    finally:
        running.stop()


@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", "99999"), ("999.1.1.1", "8999")])
def test_serve_reports_a_bad_address_in_one_line(tmp_path: Path, host: str, port: str) -> None:
    result = subprocess.run(
        [wsemail_binary(), "serve", "--data-dir", str(tmp_path), "--host", host, "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"wsemail: cannot listen on {host}:{port}")
