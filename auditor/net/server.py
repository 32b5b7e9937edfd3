"""A network node over HTTP (spec §7.1), serving an archive or an evidence store.

``vtaudit node serve`` runs one; the tests run several in threads, some misbehaving
on purpose (:class:`~auditor.net.faults.Faults`). Endpoints:

- ``GET /v1/log?after=<seq>&limit=<n>``: ``application/x-ndjson``, one
  ``{"seq", "cid", "type"}`` a line. ``seq`` is the record's position in the node's log,
  from 1; ``after`` defaults to 0, ``limit`` to 1000 and is capped at
  :data:`MAX_LIMIT`. An empty body (200) means nothing newer.
- ``GET /ipfs/<cid>``: the envelope's bytes (``application/vnd.ipld.raw``), 404 if the
  node does not have it, 400 if ``<cid>`` is not a CID.
- ``GET /v1/car?after=<seq>&limit=<n>``: ``application/vnd.ipld.car``, a CARv1 holding
  the envelopes of that log range, in log order, whose root is the first record's CID.
  An empty range is ``204 No Content`` with no body: a CARv1 needs a root.

The log order is the order of the archive (a CAR's sections, an NDJSON's lines, a
directory's sorted paths) or of the store's ``envelopes`` table. A record appears once
(the first bytes seen under a CID win). Records an archive holds under a CID they do
not hash to are served as they are, under that CID: the node replays the archive, it
does not judge it.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from auditor.errors import InputError
from auditor.model.encoding import cid_of, cid_to_binary, is_cid_text
from auditor.net.faults import Faults
from auditor.store.car import CarWriter

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "NodeContent", "NodeServer", "load_content"]

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
"""The most log entries one ``/v1/log`` or ``/v1/car`` answer holds."""

NDJSON = "application/x-ndjson"
RAW = "application/vnd.ipld.raw"
CAR = "application/vnd.ipld.car"


@dataclass(frozen=True, slots=True)
class _Record:
    cid: str
    cid_binary: bytes
    type: str
    raw: bytes


class NodeContent:
    """What a node has: its log (an order of records) and each record's bytes."""

    def __init__(
        self, records: Iterable[tuple[str, str, bytes]], unlisted: Iterable[tuple[str, bytes]] = ()
    ) -> None:
        """``records``: ``(cid, type, raw)`` in log order; a repeated CID keeps its first bytes.

        ``unlisted``: ``(cid, raw)`` the node has (``/ipfs`` serves them) but does not log.
        """
        self.records: list[_Record] = []
        self.by_cid: dict[str, bytes] = {}
        for cid, record_type, raw in records:
            if cid in self.by_cid:
                continue
            self.by_cid[cid] = raw
            self.records.append(_Record(cid, cid_to_binary(cid), record_type, raw))
        for cid, raw in unlisted:
            self.by_cid.setdefault(cid, raw)
        self.lines = [
            json.dumps({"seq": i + 1, "cid": r.cid, "type": r.type}, separators=(",", ":")).encode() + b"\n"
            for i, r in enumerate(self.records)
        ]

    def __len__(self) -> int:
        return len(self.records)

    def cids(self) -> list[str]:
        """The CIDs in log order."""
        return [r.cid for r in self.records]

    def with_faults(self, faults: Faults) -> NodeContent:
        """This content as a faulty node has it: records omitted or hidden, extra records appended."""
        kept = [r for r in self.records if not faults.hits_record("omit", r.cid)]
        listed = [(r.cid, r.type, r.raw) for r in kept if r.cid not in faults.hide_cids]
        hidden = [(r.cid, r.raw) for r in kept if r.cid in faults.hide_cids]
        extra = [(cid_of(raw), _type_of(raw), raw) for raw in faults.extra]
        return NodeContent([*listed, *extra], hidden)


def _type_of(raw: bytes) -> str:
    """The envelope's ``type`` as the node announces it ("" when the bytes say none)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return ""
    record_type = value.get("type") if isinstance(value, dict) else None
    return record_type if isinstance(record_type, str) else ""


def load_content(path: Path) -> NodeContent:
    """Read what a node serves from an evidence store directory or an archive (spec §7.2).

    An evidence store (a directory with ``store.json``) serves its ``envelopes`` table
    in table order. A CAR, NDJSON or directory archive serves its records in archive
    order, each under the CID the archive names (a CAR block's CID, a ``<cid>.json``
    file name) or else the CID of its bytes; pieces the archive reader flags as
    defects are not served.
    """
    from auditor.sources import iter_source
    from auditor.store.evidence import EvidenceStore

    if (path / "store.json").is_file():
        table = EvidenceStore(path, read_only=True).table("envelopes")
        return NodeContent(
            zip(
                table.column("cid").to_pylist(),
                table.column("type").to_pylist(),
                table.column("raw").to_pylist(),
                strict=True,
            )
        )
    # a file of a directory that is not even JSON with a type (a simulator's manifest or
    # secrets, a README) is no record to announce: a harvest of the archive itself
    # quarantines it, a node does not serve it
    typed = ((r, _type_of(r.raw)) for r in iter_source(path) if r.defect is None)
    return NodeContent((r.claimed_cid or cid_of(r.raw), kind, r.raw) for r, kind in typed if kind)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    node: NodeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is not worth a traceback on stderr."""


class _IPv6HTTPServer(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many requests
    server_version = "vtaudit-node/1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stalls

    def do_GET(self) -> None:
        node = cast(_HTTPServer, self.server).node
        try:
            node.handle(self)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log = cast(_HTTPServer, self.server).node.log
        if log is not None:
            log(f"{self.address_string()} {format % args}")


class NodeServer:
    """A threaded HTTP node serving ``content``; a context manager that runs it in a thread.

    ``port=0`` picks a free port; :attr:`url` says which. Bind to loopback unless the
    evidence is meant to be served to other machines.
    """

    def __init__(
        self,
        content: NodeContent,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.faults = faults or Faults()
        self.content = content.with_faults(self.faults) if self.faults.active else content
        self.log = log
        self.requests = 0
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        server_class = _IPv6HTTPServer if ":" in host else _HTTPServer
        try:
            self._httpd = server_class((host, port), _Handler)
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port} ({e}); choose another --port or --host") from e
        self._httpd.node = self

    @property
    def url(self) -> str:
        """The base URL of the node, e.g. ``http://127.0.0.1:8123``."""
        host, port = self._httpd.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    # ------------------------------------------------------------------ running

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` (from another thread) or KeyboardInterrupt."""
        self._httpd.serve_forever(poll_interval=0.05)

    def start(self) -> NodeServer:
        """Serve in a daemon thread; return self."""
        self._thread = threading.Thread(target=self.serve_forever, name=f"node {self.url}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake stalled answers, close the socket."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> NodeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ answering

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one GET, with this node's faults."""
        split = urlsplit(handler.path)
        path = split.path
        endpoint = (
            "log"
            if path == "/v1/log"
            else "car"
            if path == "/v1/car"
            else "ipfs"
            if path.startswith("/ipfs/")
            else ""
        )
        with self._lock:
            self.requests += 1
            n = self._counts.get(handler.path, 0)
            self._counts[handler.path] = n + 1
        f = self.faults
        if f.hits_request("stall", endpoint, handler.path, n) and self._stopping.wait(f.stall):
            self._reset(handler)  # stopping: do not answer
            return
        if f.hits_request("reset", endpoint, handler.path, n):
            self._reset(handler)
            return
        if f.hits_request("error", endpoint, handler.path, n):
            self._send(handler, 500, "text/plain", b"injected fault: internal error\n", cut=False, slow=0)
            return
        status, content_type, body = self._answer(endpoint, path, parse_qs(split.query))
        cut = f.hits_request("cut", endpoint, handler.path, n)
        slow = f.slow if endpoint in f.endpoints else 0.0
        self._send(handler, status, content_type, body, cut=cut, slow=slow)

    def _answer(self, endpoint: str, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        if endpoint == "ipfs":
            cid = path[len("/ipfs/") :]
            if not is_cid_text(cid):
                return 400, "text/plain", f"{cid[:80]!r} is not a CID (bagaaiera…)\n".encode()
            data = self.content.by_cid.get(cid)
            if data is None:
                return 404, "text/plain", f"{cid}: not on this node\n".encode()
            return 200, RAW, self.faults.serve(cid, data)
        if endpoint in ("log", "car"):
            try:
                after = int(query.get("after", ["0"])[-1])
                limit = min(int(query.get("limit", [str(DEFAULT_LIMIT)])[-1]), MAX_LIMIT)
            except ValueError:
                after = limit = -1
            if after < 0 or limit < 0:
                return 400, "text/plain", b"after and limit must be integers >= 0\n"
            if endpoint == "log":
                return 200, NDJSON, b"".join(self.content.lines[after : after + limit])
            records = self.content.records[after : after + limit]
            if not records:
                return 204, CAR, b""
            buffer = io.BytesIO()
            writer = CarWriter(buffer, [records[0].cid_binary])
            for r in records:
                writer.add(r.cid_binary, self.faults.serve(r.cid, r.raw))
            return 200, CAR, buffer.getvalue()
        return 404, "text/plain", b"unknown path; this node serves /v1/log, /v1/car and /ipfs/<cid>\n"

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        content_type: str,
        body: bytes,
        *,
        cut: bool,
        slow: float,
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        if status != 204:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if cut:  # promise the whole body, send half, then drop the connection
            handler.wfile.write(body[: len(body) // 2])
            self._reset(handler)
        elif slow > 0:
            step = self.faults.slow_chunk
            for start in range(0, len(body), step):
                if self._stopping.wait(slow):
                    self._reset(handler)
                    return
                handler.wfile.write(body[start : start + step])
        elif body:
            handler.wfile.write(body)

    @staticmethod
    def _reset(handler: BaseHTTPRequestHandler) -> None:
        """Close the connection abruptly: linger 0 makes the close send a TCP RST."""
        handler.close_connection = True
        try:
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
        except OSError:
            pass
