"""A TCP proxy that adds latency, to see PostgreSQL claims over a slower network.

Workers on other machines talk to PostgreSQL over a network with a round trip of a
millisecond or more; on this machine it is tens of microseconds. `DelayProxy` listens on
127.0.0.1 and forwards each connection to the server, holding every chunk of bytes for
a fixed delay in each direction (so a query's round trip grows by twice the delay)
while keeping the order of chunks and letting later chunks travel while earlier ones
wait. It runs an asyncio loop in a thread of the benchmark process.

The loop uses the ``select`` selector: epoll and poll round timeouts up to whole
milliseconds, which would turn a 0.5 ms delay into about 1 ms. `measure_rtt` reports
the round trip a query actually sees, directly and through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import statistics
import threading
import time
from typing import Any


class DelayProxy:
    """``with DelayProxy(host, port, delay_s) as proxy:`` then connect to ``proxy.port``."""

    def __init__(self, host: str, port: int, delay_s: float) -> None:
        self.host = host
        self.target_port = port
        self.delay = delay_s
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> DelayProxy:
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"delay proxy did not start: {self._error}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to __enter__ if it happens at start
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)  # connections closing by themselves
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Returns normally when cancelled at shutdown: asyncio 3.11 logs a traceback for
        # a cancelled connection handler.
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
            await asyncio.gather(
                self._pump(reader, up_writer),
                self._pump(up_reader, writer),
                return_exceptions=True,
            )
        except (OSError, asyncio.CancelledError):
            writer.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy ``source`` to ``sink``, each chunk sent ``delay`` after it arrived."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                sink.write(data)
                await sink.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await source.read(65536):
                queue.put_nowait((loop.time() + self.delay, data))
        except OSError:
            pass
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await sender
            sink.close()


def measure_rtt(url: str, queries: int = 200) -> float:
    """Median seconds of ``SELECT 1`` on a fresh connection to ``url`` (no table param)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(20):
            conn.execute("SELECT 1").fetchone()
        times = []
        for _ in range(queries):
            start = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def via(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def target_of(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def calibrate(url: str, delay_s: float) -> dict[str, Any]:
    """The delay each way that adds ``2 * delay_s`` to a query's round trip, measured.

    Timer overshoot and the proxy's own work add to the nominal delay; two corrections
    bring the added round trip close to the nominal one. Returns the delay to use and
    the round trips measured directly and through the proxy with it.
    """
    host, port = target_of(url)
    direct = measure_rtt(url)
    want = 2 * delay_s
    delay = delay_s
    for _ in range(3):
        with DelayProxy(host, port, delay) as proxy:
            proxied = measure_rtt(via(url, proxy.port))
        error = (proxied - direct) - want
        if abs(error) < 0.05 * want:
            break
        delay = max(0.0, delay - error / 2)
    return {
        "nominal_delay_each_way_ms": delay_s * 1e3,
        "delay_each_way_ms": delay * 1e3,
        "direct_rtt_ms": direct * 1e3,
        "proxied_rtt_ms": proxied * 1e3,
        "added_rtt_ms": (proxied - direct) * 1e3,
    }
