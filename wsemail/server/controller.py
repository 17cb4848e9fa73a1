"""Runs a domain server on uvicorn: bound first, ready when `start()` returns. Used by
`wsemail serve` (foreground) and by the tests (a thread per server)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import logging
import math
import os
import resource
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import uvicorn
import uvloop

from wsemail.protocol.errors import UsageError, WsemailError
from wsemail.server.app import Server
from wsemail.server.config import ServerConfig, node_id, record_domain
from wsemail.server.connguard import Peers, guarded
from wsemail.server.delivery import deliver
from wsemail.server.federation import Federation, ensure_dev_pki
from wsemail.server.mailbox import maintenance as mailbox_maintenance
from wsemail.server.pipeline import Pipeline
from wsemail.server.relay import Relay, run_relay
from wsemail.server.security import Authenticator
from wsemail.server.sql import POSTGRESQL
from wsemail.server.storage import SpaceReserve
from wsemail.server.store import SqliteStore
from wsemail.server.stores import open_store
from wsemail.server.uvicorn_lazy import websocket_protocol

log = logging.getLogger("wsemail.server")


def build_server(config: ServerConfig, *, clock: Callable[[], float] = time.time) -> Server:
    """Open the data dir, the store and the pipeline for `config`, and wire the parts that
    sit above the server object: the Deliver operation and the outbound relay."""
    secret = config.prepare()
    record_domain(config)
    space = SpaceReserve(config.data_dir, config.storage_reserve)
    space.start()  # before the store opens: on a full disk it frees the reserve
    store = open_store(config, clock=clock)
    store.node = node_id(config)
    shared = getattr(store, "shared_secret", None)
    if shared is not None:  # several nodes: one secret for all of them
        secret = shared(secret)
    if isinstance(store, SqliteStore):
        store.space = space
    space.announce()
    pipeline = Pipeline(config.domain, config.plugins)
    auth = Authenticator(
        secret,
        clock=clock,
        past_seconds=config.past_seconds,
        future_seconds=config.future_seconds,
        failures_per_user=config.failures_per_user,
        failures_per_peer=config.failures_per_peer,
        failure_window=config.failure_window,
    )
    server = Server(config, store, pipeline, auth, clock, deliver=deliver)
    server.peers = Peers(config)
    server.federation = Federation(config)
    server.relay = Relay(server, server.federation)
    pipeline.attach_all(server)
    return server


def bind(host: str, port: int, *, shared: bool = False, listen: bool = True) -> socket.socket:
    """A listening TCP socket on host:port (UsageError when that is taken). `shared`: with
    SO_REUSEPORT, so that several workers each listen on the port with a socket of their
    own and the kernel spreads new connections over them; `listen=False` only holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # accepted connections inherit this: without it a response written as headers + body
    # waits ~40 ms for the peer's delayed ACK (Nagle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:  # OverflowError: a port outside 0-65535
        sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot listen on {host}:{port}: {reason}") from exc
    if listen:
        sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(server: Server, **extra: Any) -> uvicorn.Config:
    config = server.config
    if server.peers is None:
        server.peers = Peers(config)
    tls: dict[str, Any] = {}
    if config.tls_cert is not None:
        if config.tls_key is None:
            raise UsageError("--tls-cert needs --tls-key")
        tls = {"ssl_certfile": str(config.tls_cert), "ssl_keyfile": str(config.tls_key)}
    return uvicorn.Config(
        server.asgi(),
        loop="uvloop",
        http=guarded(server.peers),  # httptools with header deadline and per-peer caps
        ws=cast("type[asyncio.Protocol]", websocket_protocol),  # imported when first used
        lifespan="off",
        access_log=False,
        log_config=None,
        timeout_keep_alive=math.ceil(config.keepalive_timeout),
        backlog=2048,
        **tls,
        **extra,
    )


class Runner(uvicorn.Server):
    """uvicorn with a bounded shutdown that loses no accepted request.

    uvicorn's own shutdown waits until every connection is gone. A push stream never ends
    by itself, and an idle TLS keep-alive connection of a peer (another server's relay, a
    client's pool) is gone only once the peer answers the TLS close_notify, which an idle
    pool never reads: the close then waits for the SSL shutdown timeout (~30 s). Here the
    listener closes, plug-ins end their streams (`Plugin.stopping`), idle connections are
    dropped at once, requests in flight get `shutdown_grace` seconds to finish and write
    their answers, and whatever connection is left after that is aborted.
    """

    def __init__(self, config: uvicorn.Config, server: Server) -> None:
        super().__init__(config)
        self.app_server = server

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for listener in self.servers:
            listener.close()
        for sock in sockets or []:
            sock.close()
        self.app_server.pipeline.stopping()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()  # idle: closed now; busy: closed after its answer
        await asyncio.sleep(0)
        deadline = time.monotonic() + self.app_server.config.shutdown_grace
        while state.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if state.tasks:
            log.error("%d request(s) still running after the shutdown grace", len(state.tasks))
            for task in list(state.tasks):
                task.cancel()
            await asyncio.wait(list(state.tasks), timeout=1)
        # answers written last are still flushing: give them until the deadline
        while any(_unsent(c) for c in state.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()  # no wait for the peer's close_notify
        for listener in self.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.wait_closed(), 1)
        if not self.force_exit:
            await self.lifespan.shutdown()


def _unsent(connection: Any) -> int:
    """Bytes of an answer still waiting in the connection's write buffer."""
    transport = getattr(connection, "transport", None)
    return 0 if transport is None else int(transport.get_write_buffer_size())


async def serve_with_relay(runner: uvicorn.Server, sock: socket.socket, server: Server) -> None:
    """uvicorn, the outbound relay and the Trash sweep on one loop; they stop with serving."""
    relay = asyncio.create_task(run_relay(server))
    trash = asyncio.create_task(mailbox_maintenance.run(server))
    shared = None
    if server.store.dialect == POSTGRESQL:  # several nodes may share the failure counts
        from wsemail.server.postgres.failures import SharedFailures

        shared = asyncio.create_task(SharedFailures(server).run())
    try:
        await runner.serve(sockets=[sock])
    finally:
        if shared is not None:
            shared.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shared
        trash.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trash
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay


class ServerController:
    """`ServerController(config).start()` → serving on `url`; `.stop()` shuts it down."""

    def __init__(self, config: ServerConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.server = build_server(config, clock=clock)
        self._sock: socket.socket | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        assert self._sock is not None, "not started"
        host, port = self._sock.getsockname()[:2]
        scheme = "https" if self.config.tls_cert else "http"
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{port}/wsemail"

    def start(self, timeout: float = 15) -> ServerController:
        self._sock = bind(self.config.host, self.config.port)
        self._uvicorn = Runner(uvicorn_config(self.server), self.server)
        self._thread = threading.Thread(target=self._run, name="wsemail-uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if self._error is not None or not self._thread.is_alive():
                raise UsageError(f"server failed to start: {self._error}") from self._error
            if time.monotonic() > deadline:
                raise UsageError("server did not start in time")
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        assert self._uvicorn is not None and self._sock is not None
        try:
            uvloop.run(serve_with_relay(self._uvicorn, self._sock, self.server))
        except BaseException as exc:  # reported by start()
            self._error = exc

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            # bounded by `Runner.shutdown`; the margin is for a loop stuck in user code
            self._thread.join(timeout=self.config.shutdown_grace + 30)
            if self._thread.is_alive():
                log.error("the server thread did not stop")
        if self._sock is not None:
            self._sock.close()
        self.server.pipeline.close_all()
        self.server.store.close()

    def __enter__(self) -> ServerController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def raise_open_file_limit() -> int:
    """A serving process may hold as many descriptors as the hard limit allows (each live
    push stream holds one); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
            return soft
    return hard


def tune_gc() -> None:
    """After start-up: what start-up made is kept out of every later collection (gc.freeze),
    and the young generation is collected every 20,000 allocations instead of 700 (a request
    makes a few hundred objects that mostly die with it). WSEMAIL_GC=default keeps Python's
    settings (for comparing)."""
    if os.environ.get("WSEMAIL_GC") == "default":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def serve_forever(
    config: ServerConfig,
    on_ready: Callable[[str], None] | None = None,
    *,
    sock: socket.socket | None = None,
) -> None:
    """Foreground serving for `wsemail serve`: Ctrl-C or SIGTERM stops it cleanly. `sock`:
    a listening socket to serve on (a worker's, shared with its siblings)."""
    raise_open_file_limit()
    server = build_server(config)
    if sock is None:
        sock = bind(config.host, config.port)
    tune_gc()
    runner = Runner(uvicorn_config(server), server)
    host, port = sock.getsockname()[:2]
    scheme = "https" if config.tls_cert else "http"

    early: list[int] = []  # SIGINT/SIGTERM before uvicorn took the signals over

    async def main() -> None:
        task = asyncio.create_task(serve_with_relay(runner, sock, server))
        while not runner.started and not task.done():
            runner.should_exit = runner.should_exit or bool(early)
            await asyncio.sleep(0.01)
        if early:  # asked to stop while starting: stop once started, not serve on
            runner.should_exit = True
        elif runner.started and on_ready is not None:
            await asyncio.to_thread(on_ready, f"{scheme}://{host}:{port}/wsemail")
        await task

    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the
    # handler that was there before it: that one only notes it, so the store closes
    # cleanly; a signal that comes before uvicorn's handlers are in place is noted too
    # (a worker told to stop while it starts must not go on serving: it was lost before)
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: early.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        uvloop.run(main())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        server.pipeline.close_all()
        server.store.close()


NOT_STARTED = 70  # a worker's exit status when it failed before serving


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with(parent: int) -> None:
    """A worker is sent SIGTERM when its parent ends, however it ends (Linux): a
    supervisor killed with SIGKILL must not leave its workers serving unsupervised."""
    import ctypes  # a worker's only

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it ended before the request above
        os.kill(os.getpid(), signal.SIGTERM)


def serve_workers(
    config: ServerConfig, workers: int, on_ready: Callable[[str], None] | None = None
) -> None:
    """`wsemail serve --workers N`: N processes serve one port over one PostgreSQL store,
    so every core serves. The parent holds the port, forks the workers, restarts one that
    dies, and stops them all on Ctrl-C or SIGTERM. Each worker listens with a socket of
    its own (SO_REUSEPORT): the kernel spreads connections over them, where one shared
    socket let whichever worker woke first accept a whole burst of keep-alive
    connections (measured: 16 bench connections split 16:0 at times). Plug-ins with
    listeners of their own (SMTP, IMAP) run in worker 0 only."""
    if not config.store_url:
        raise UsageError(
            "--workers needs the PostgreSQL store (--store postgresql://…): a SQLite store "
            "has one writer, so one process serves it"
        )
    raise_open_file_limit()
    config.prepare()
    record_domain(config)
    open_store(config).close()  # reachable and migrated before any worker starts
    if config.identity_dir is None:  # made once here, not by every worker at once
        ensure_dev_pki(config)
    # taken by nobody (a plain bind fails if anyone listens there, SO_REUSEPORT or not),
    # then held, not listened on, for the workers to listen on and to come back to
    with bind(config.host, config.port, listen=False) as probe:
        port = probe.getsockname()[1]
    sock = bind(config.host, port, shared=True, listen=False)
    children: dict[int, int] = {}
    stopping = False
    failed = ""
    ready_r, ready_w = os.pipe()  # each worker writes one byte once it serves

    parent = os.getpid()

    held = {signal.SIGINT, signal.SIGTERM}

    def spawn(worker: int) -> None:
        # a stop that comes while a worker is forked waits until it is in `children`:
        # handled between the fork and that, it would miss the new worker (found serving on)
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
            raise
        if pid == 0:  # the worker: serve, then leave without the parent's clean-up
            started = False

            def serving(_url: str) -> None:
                nonlocal started
                started = True
                os.write(ready_w, b"!")

            code = 0
            try:
                for sig in held:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
                _end_with(parent)
                mine = copy.copy(config)
                mine.worker = worker
                if worker:
                    mine.plugins = [p for p in config.plugins if "port" not in p.options]
                serve_forever(mine, serving, sock=bind(config.host, port, shared=True))
            except WsemailError as exc:
                print(f"wsemail: worker {worker}: {exc}", file=sys.stderr, flush=True)
                code = 1
            except BaseException:
                log.exception("worker %d failed", worker)
                code = 1
            finally:
                os._exit(code if started else NOT_STARTED)
        children[pid] = worker
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
        if stopping:  # handled meanwhile all the same (by another thread's delivery)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for worker in range(workers):
            spawn(worker)
        ready = 0
        while ready < workers and not failed and not stopping:  # all serving, or one failed
            if select.select([ready_r], [], [], 0.1)[0]:
                ready += len(os.read(ready_r, workers))
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:
                children.pop(pid, None)
                stop(signal.SIGTERM, None)
                failed = (
                    f"a worker could not start (exit status {os.waitstatus_to_exitcode(status)})"
                )
        if ready == workers and on_ready is not None:  # beside the wait: a demo needs them
            host, port = sock.getsockname()[:2]
            scheme = "https" if config.tls_cert else "http"
            url = f"{scheme}://{host}:{port}/wsemail"
            threading.Thread(target=on_ready, args=(url,), daemon=True).start()
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            worker = children.pop(pid, -1)
            if worker < 0 or stopping:
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == NOT_STARTED:
                stop(signal.SIGTERM, None)  # it will not start the next time either
                failed = f"worker {worker} could not start"
                continue
            log.warning("worker %d ended (status %d): starting it again", worker, status)
            time.sleep(0.5)
            if not stopping:  # told to stop meanwhile: start nothing new
                spawn(worker)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        os.close(ready_r)
        os.close(ready_w)
    if failed:
        raise UsageError(failed)
