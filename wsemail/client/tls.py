"""In charge of the TLS context of a client's connections: the same checks as httpx's default
(`ssl.create_default_context`: the certificate must chain to the CA bundle and name the host;
the bundle is certifi's, or SSL_CERT_FILE / SSL_CERT_DIR, or the user's own WSEMAIL_CACERT),
with the bundle loaded when the first TLS connection is made rather than when the client is.
Reading certifi's bundle costs about 15 ms, which a session with an http:// server (loopback,
the tests, the benchmarks) never needs to pay; an https:// one pays it once, before its first
handshake. A bundle that cannot be read fails that handshake: nothing connects unchecked.
"""

from __future__ import annotations

import os
import ssl
import sys
import threading
from typing import Any


class DeferredContext(ssl.SSLContext):
    """An `ssl.create_default_context()` (client side: CERT_REQUIRED, host names checked)
    whose CA certificates are loaded before the first socket or BIO is wrapped."""

    _cafile: str | None
    _capath: str | None
    _loaded: bool
    _lock: threading.Lock

    def __new__(cls, cafile: str | None = None, capath: str | None = None) -> DeferredContext:
        context = super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = True
        keylog = os.environ.get("SSLKEYLOGFILE")  # as create_default_context does
        if keylog and not sys.flags.ignore_environment:
            context.keylog_filename = keylog
        context._cafile, context._capath = cafile, capath
        context._loaded = False
        context._lock = threading.Lock()
        return context

    def _load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            cafile, capath = self._cafile, self._capath
            if not (cafile or capath):
                import certifi

                cafile = certifi.where()
            try:
                self.load_verify_locations(cafile, capath)
            except OSError as exc:  # ssl.SSLError too: the handshake fails, naming the bundle
                raise OSError(f"cannot read the CA bundle {cafile or capath}: {exc}") from exc
            self._loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load()
        return super().wrap_bio(*args, **kwargs)


def client_context(cafile: str | None = None) -> DeferredContext:
    """The context for `verify=True` (httpx's choice of bundle: SSL_CERT_FILE, SSL_CERT_DIR,
    else certifi's) or for `cafile`, the user's own bundle."""
    if cafile:
        return DeferredContext(cafile=cafile)
    if os.environ.get("SSL_CERT_FILE"):
        return DeferredContext(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return DeferredContext(capath=os.environ["SSL_CERT_DIR"])
    return DeferredContext()
