"""Harvesting from network nodes over HTTP (spec §7.1): :class:`HttpNodesSource`.

The source reads the union of the nodes' logs, page by page, and fetches each CID
once: in bulk (``/v1/car`` for a log page) when a node has most of the page, else
record by record (``/ipfs/<cid>``) from a node that announced it, then from the
others. Nodes can be slow, wrong or malicious, so:

1. every byte string is checked against its CID here, before it is accepted (the
   store checks again); bytes that do not hash to their CID are yielded once per node
   as a :class:`RawRecord` naming that node, so the store quarantines them as REC-CID
   evidence against it, and the record is fetched from another node;
2. every request has connect and read timeouts and an overall deadline; failed
   attempts are retried with exponential backoff and jitter, a bounded number of times;
3. each node has a concurrency limit; a node whose requests fail
   ``max_consecutive_failures`` times in a row is skipped for the rest of the run and
   reported;
4. every loop is bounded: pages per run (``max_rounds``), attempts per request, bytes
   per answer.

Cursors are per node (a node's ``seq`` means nothing to another node): the source's
cursor is the JSON object ``{url: last seq}``, and each record's ``resume`` holds the
whole object as it stands after the log pages that are completely delivered. A node's
cursor stops advancing at the first record it announced that no node served with the
right bytes, so the next run asks for it again. :attr:`HttpNodesSource.report` says
what happened to each node.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx

from auditor import __version__
from auditor.errors import EncodingError, InputError
from auditor.limits import (
    HTTP_CONNECT_TIMEOUT,
    HTTP_DEADLINE,
    HTTP_READ_TIMEOUT,
    MAX_CAR_ANSWER_BYTES,
    MAX_ENVELOPE_BYTES,
    MAX_LOG_LINE_BYTES,
    MAX_LOG_PAGES,
)
from auditor.model.encoding import cid_from_binary, cid_of, is_cid_text, parse_json
from auditor.sources import RawRecord
from auditor.store.car import CarBlock, CarError, iter_sections, read_header

__all__ = ["HttpNodesSource", "NetOptions", "NetReport", "NodeReport", "normalize_url", "parse_log_page"]

_MAX_LOG_LINE = MAX_LOG_LINE_BYTES  # bytes one log line may take (a CID and a type are ~100)


@dataclass(frozen=True)
class NetOptions:
    """How hard to try. Times in seconds. The defaults suit a real network."""

    connect_timeout: float = HTTP_CONNECT_TIMEOUT
    read_timeout: float = HTTP_READ_TIMEOUT  # between two reads of one answer (a stalled node)
    deadline: float = HTTP_DEADLINE  # for one whole answer, body included (a slow-dripping node)
    attempts: int = 4  # per request, the first included
    backoff: float = 0.25  # before the first retry; doubled each retry, with jitter
    backoff_max: float = 4.0
    node_concurrency: int = 4  # requests in flight to one node
    max_consecutive_failures: int = 6  # then the node is skipped for the rest of the run
    page: int = 2000  # log entries per page (a node caps it, spec §7.1 leaves it open)
    bulk: bool = True  # fetch a page's records as one /v1/car when the node has most of them
    max_rounds: int = MAX_LOG_PAGES  # log pages per node per run
    max_car_bytes: int = MAX_CAR_ANSWER_BYTES
    trust_env: bool = False  # use HTTP(S)_PROXY etc. from the environment
    seed: int | None = None  # for the jitter; None: unpredictable

    def __post_init__(self) -> None:
        for name in ("attempts", "node_concurrency", "max_consecutive_failures", "page", "max_rounds"):
            if getattr(self, name) < 1:
                raise InputError(f"network option {name}: got {getattr(self, name)}, expected at least 1")
        for name in ("connect_timeout", "read_timeout", "deadline"):
            if getattr(self, name) <= 0:
                raise InputError(f"network option {name}: got {getattr(self, name)}, expected seconds > 0")


@dataclass
class NodeReport:
    """What one node did during a run."""

    url: str
    requests: int = 0
    failed: int = 0  # failed attempts (timeouts, resets, 5xx, bad answers)
    retries: int = 0
    bytes: int = 0
    log_entries: int = 0
    served: int = 0  # records accepted from this node (the right bytes)
    not_found: int = 0  # 404 for a record asked for
    wrong: list[str] = field(default_factory=list)  # CIDs it served wrong bytes for
    log_error: str | None = None  # why its log was not read to the end
    skipped: str | None = None  # why it was given up
    last_error: str | None = None


@dataclass
class NetReport:
    """What happened during a run of :meth:`HttpNodesSource.records`."""

    nodes: dict[str, NodeReport]
    records: int = 0  # the right bytes, yielded
    unavailable: dict[str, str] = field(default_factory=dict)  # CID -> why no node served it
    rounds: int = 0
    stopped: str | None = None  # set when a bound stopped the run early

    @property
    def problems(self) -> bool:
        """Whether any node misbehaved or any record could not be fetched."""
        return bool(
            self.unavailable
            or self.stopped
            or any(n.wrong or n.skipped or n.log_error for n in self.nodes.values())
        )

    def lines(self) -> list[str]:
        """A human summary, one line per node, then the problems."""
        out = []
        for n in self.nodes.values():
            line = (
                f"{n.url}: {n.log_entries:,} log entries, {n.served:,} records served, "
                f"{n.requests:,} requests, {n.failed:,} failed, {n.retries:,} retries, "
                f"{n.bytes / 1e6:,.1f} MB"
            )
            if n.wrong:
                line += f"; WRONG BYTES for {len(n.wrong)} records (quarantined as REC-CID)"
            if n.not_found:
                line += f"; {n.not_found} not found"
            out.append(line)
            if n.log_error:
                out.append(f"  log not read to the end: {n.log_error}")
            if n.skipped:
                out.append(f"  SKIPPED: {n.skipped}")
        if self.unavailable:
            out.append(
                f"{len(self.unavailable)} announced records were served by no node with the right bytes "
                "(run harvest again later, or add nodes):"
            )
            for cid, why in list(self.unavailable.items())[:10]:
                out.append(f"  {cid}: {why}")
            if len(self.unavailable) > 10:
                out.append(f"  … and {len(self.unavailable) - 10} more")
        if self.stopped:
            out.append(f"stopped early: {self.stopped}")
        return out


def normalize_url(url: str) -> str:
    """A node's base URL without a trailing slash; InputError unless http(s)://host[:port][/path]."""
    text = url.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise InputError(f"node URL {url!r}: {e}; give e.g. http://127.0.0.1:8123") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"node URL {url!r}: expected http://host[:port] or https://host[:port]")
    if parts.query or parts.fragment:
        raise InputError(f"node URL {url!r}: no query or fragment, the node's base URL only")
    del port
    return text


class _Entry(NamedTuple):
    seq: int
    cid: str


def parse_log_page(body: bytes, after: int | None) -> tuple[list[_Entry], str | None]:
    """The entries of a ``/v1/log`` answer (spec §7.1), and what was wrong with it, if anything.

    Each non-empty line must be a JSON object (at most MAX_LOG_LINE_BYTES, strict JSON as
    spec §2) with an integer ``seq`` above the previous one (the first above ``after``)
    and a ``cid``. The entries before the first bad line are returned with the problem.
    Pure: never raises for what a node sends.
    """
    entries: list[_Entry] = []
    last = after
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        if len(line) > _MAX_LOG_LINE:
            return entries, f"line {number}: {len(line):,} bytes, at most {_MAX_LOG_LINE:,}"
        try:
            item = parse_json(line, what="log line")
        except EncodingError:
            item = None
        problem = None
        if not isinstance(item, dict):
            problem = "not a JSON object"
        elif type(item.get("seq")) is not int or (last is not None and item["seq"] <= last):
            above = "" if last is None else f" above {last}"
            problem = f"seq {str(item.get('seq'))[:40]!r}, expected an integer{above}"
        elif not is_cid_text(item.get("cid")):
            problem = f"cid {str(item.get('cid'))[:80]!r}, expected a CID (bagaaiera…)"
        if problem is not None:
            return entries, f"line {number}: {problem}"
        assert isinstance(item, dict)
        last = item["seq"]
        entries.append(_Entry(last, item["cid"]))
    return entries, None


def _after(after: int | None) -> str:
    """The ``after=<seq>&`` of a §7.1 query; nothing for a log read from its start."""
    return "" if after is None else f"after={after}&"


class _Reply(NamedTuple):
    status: int
    body: bytes


class _Failure(Exception):
    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class _Node:
    """A node's mutable state during one run (shared by the worker threads)."""

    def __init__(self, url: str, options: NetOptions) -> None:
        self.url = url
        self.report = NodeReport(url)
        self.gate = threading.BoundedSemaphore(options.node_concurrency)
        self.lock = threading.Lock()
        self.in_a_row = 0
        self.limit = options.max_consecutive_failures

    @property
    def skipped(self) -> bool:
        return self.report.skipped is not None

    def succeeded(self, size: int) -> None:
        with self.lock:
            self.in_a_row = 0
            self.report.bytes += size

    def failed(self, why: str) -> None:
        with self.lock:
            self.report.failed += 1
            self.report.last_error = why
            self.in_a_row += 1
            if self.in_a_row >= self.limit and self.report.skipped is None:
                self.report.skipped = f"{self.in_a_row} failed requests in a row, the last: {why}"


class _RunState:
    """Where a run stands; touched by one round at a time."""

    def __init__(self, nodes: list[_Node], cursor: dict[str, int]) -> None:
        self.nodes = nodes
        self.committed = dict(cursor)  # cursors of nodes not in this run are kept as they are
        # where each log is read to; None: from its start (§7.1 does not say where seq starts,
        # so the first page is asked for without `after`)
        self.position: dict[str, int | None] = {n.url: cursor.get(n.url) for n in nodes}
        self.frozen: set[str] = set()  # nodes with a record no node served: their cursor stays
        self.ended: set[str] = set()  # nodes whose log is read to the end (or given up) this run
        self.settled: set[str] = set()  # CIDs fetched or given up this run
        self.resume = json.dumps(self.committed, sort_keys=True)  # the cursor delivered so far
        self.stop = False


class HttpNodesSource:
    """A harvest source (:class:`auditor.harvest.Source`) over one or more nodes' logs."""

    def __init__(self, urls: Sequence[str], options: NetOptions | None = None) -> None:
        if not urls:
            raise InputError("no node URL given; give at least one, e.g. http://127.0.0.1:8123")
        self.urls = list(dict.fromkeys(normalize_url(u) for u in urls))
        self.options = options or NetOptions()
        self.name = "http:" + ",".join(sorted(self.urls))
        self.report = NetReport({u: NodeReport(u) for u in self.urls})
        self._rng = random.Random(self.options.seed)
        self._rng_lock = threading.Lock()
        self._client: httpx.Client | None = None

    # ------------------------------------------------------------------ cursors

    def parse_cursor(self, after: str | None) -> dict[str, int]:
        """The per-node cursor ``{url: last seq}`` from its JSON text (empty when None)."""
        if not after:
            return {}
        try:
            value = json.loads(after)
        except ValueError as e:
            value = e
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in value.items()
        ):
            raise InputError(
                f"the stored cursor of source {self.name} is {after[:200]!r}, expected a JSON object "
                "{node URL: last seq}; remove it from the store's store.json 'cursors' "
                "to harvest from the start"
            )
        return dict(value)

    # ------------------------------------------------------------------ the run

    def records(self, after: str | None) -> Iterator[RawRecord]:
        """Every record announced after the per-node cursor ``after`` (JSON), each with a resume cursor."""
        cursor = self.parse_cursor(after)
        return self._run(cursor)

    def _run(self, cursor: dict[str, int]) -> Iterator[RawRecord]:
        opts = self.options
        nodes = [_Node(u, opts) for u in self.urls]
        self.report = NetReport({n.url: n.report for n in nodes})
        state = _RunState(nodes, cursor)
        workers = min(64, max(4, len(nodes) * opts.node_concurrency))
        timeout = httpx.Timeout(
            connect=opts.connect_timeout, read=opts.read_timeout, write=opts.read_timeout, pool=opts.deadline
        )
        limits = httpx.Limits(
            max_connections=workers + len(nodes), max_keepalive_connections=workers + len(nodes)
        )
        with (
            httpx.Client(
                timeout=timeout,
                limits=limits,
                trust_env=opts.trust_env,
                follow_redirects=False,
                headers={"User-Agent": f"vtaudit/{__version__}"},
            ) as client,
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vtaudit-net") as pool,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="vtaudit-round") as ahead,
        ):
            self._client = client
            # Rounds run one after the other in `ahead`: round k+1 is fetched while the
            # caller (the store) digests round k's records.
            pending = ahead.submit(self._round, state, pool)
            try:
                while (out := pending.result()) is not None:
                    pending = ahead.submit(self._round, state, pool)
                    yield from out
            finally:
                state.stop = True  # the caller stopped early: let the round in flight end it
                pending.cancel()
            self._client = None
        if not any(n.report.log_entries or (n.report.log_error is None and not n.skipped) for n in nodes):
            reasons = "; ".join(f"{n.url}: {n.report.skipped or n.report.log_error}" for n in nodes)
            raise InputError(
                f"no node answered /v1/log ({reasons}); check the URLs and that the nodes run "
                "(`vtaudit node serve`)"
            )

    def _round(self, state: _RunState, pool: ThreadPoolExecutor) -> list[RawRecord] | None:
        """One log page from every node still being read, and its records; None when done."""
        active = [n for n in state.nodes if n.url not in state.ended and not n.skipped]
        if not active or state.stop:
            return None
        if self.report.rounds >= self.options.max_rounds:
            self.report.stopped = (
                f"read {self.options.max_rounds} log pages per node (max_rounds); run again to go on"
            )
            return None
        self.report.rounds += 1
        position = state.position
        # 1. A log page from every node still being read, in parallel.
        pages: dict[str, tuple[_Node, int | None, list[_Entry]]] = {}
        for node, (page, complete) in zip(
            active, pool.map(lambda n: self._log_page(n, position[n.url]), active), strict=True
        ):
            if page:
                pages[node.url] = (node, position[node.url], page)
            if not page or not complete:
                state.ended.add(node.url)
        # 2. The union: each CID not settled yet, with the nodes that announced it.
        announced: dict[str, list[_Node]] = {}
        for node, _after, page in pages.values():
            for entry in page:
                if entry.cid not in state.settled:
                    announcers = announced.setdefault(entry.cid, [])
                    if node not in announcers:  # a log may list a CID twice
                        announcers.append(node)
        # 3. Fetch them: in bulk, then one by one from any node.
        good, wrong, why = self._fetch(pool, state.nodes, pages, announced)
        for cid in announced:
            state.settled.add(cid)
            if cid not in good:
                self.report.unavailable[cid] = why.get(cid, "no node served it")
        # 4. Advance each node's cursor up to its first record no node served.
        committed = state.committed
        for url, (_node, after, page) in pages.items():
            position[url] = page[-1].seq
            if url in state.frozen:
                continue
            hole = next((i for i, e in enumerate(page) if e.cid in self.report.unavailable), None)
            if hole is None:
                committed[url] = page[-1].seq
            else:
                if hole > 0:
                    committed[url] = page[hole - 1].seq
                elif after is not None:
                    committed[url] = after
                state.frozen.add(url)
        # 5. In log order; the round's last record carries the new cursor, as by then
        #    every record of the round has been delivered.
        out: list[RawRecord] = []
        for cid in announced:
            out.extend(wrong.get(cid, ()))
            if cid in good:
                out.append(good[cid])
        self.report.records += len(good)
        resume = json.dumps(committed, sort_keys=True)
        last = len(out) - 1
        out = [
            dataclasses.replace(r, resume=resume if i == last else state.resume) for i, r in enumerate(out)
        ]
        if out:
            state.resume = resume
        return out

    # ------------------------------------------------------------------ requests

    def _get(self, node: _Node, path: str, max_bytes: int) -> _Reply | None:
        """GET with retries: the answer (200, 204 or 404), or None once retrying is pointless."""
        opts = self.options
        for attempt in range(opts.attempts):
            if node.skipped:
                return None
            if attempt:
                delay = min(opts.backoff_max, opts.backoff * 2 ** (attempt - 1))
                with self._rng_lock:
                    delay *= 0.5 + self._rng.random() / 2  # "equal jitter"
                time.sleep(delay)
                with node.lock:
                    node.report.retries += 1
            with node.gate:
                if node.skipped:
                    return None
                with node.lock:
                    node.report.requests += 1
                try:
                    reply = self._once(node.url + path, max_bytes)
                except _Failure as e:
                    node.failed(f"GET {path}: {e}")
                    if not e.retry:
                        return None
                    continue
            node.succeeded(len(reply.body))
            return reply
        return None

    def _once(self, url: str, max_bytes: int) -> _Reply:
        client = self._client
        assert client is not None, "requests are made only during a run"
        started = time.monotonic()
        try:
            with client.stream("GET", url) as response:
                status = response.status_code
                if status == 404:
                    return _Reply(404, b"")
                if status not in (200, 204):
                    retry = status >= 500 or status in (408, 425, 429)
                    raise _Failure(f"HTTP {status} {response.reason_phrase}", retry=retry)
                chunks = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise _Failure(f"answer longer than {max_bytes:,} bytes", retry=False)
                    if time.monotonic() - started > self.options.deadline:
                        raise _Failure(f"answer not complete after {self.options.deadline} s", retry=True)
                    chunks.append(chunk)
                return _Reply(status, b"".join(chunks))
        except httpx.TimeoutException as e:
            raise _Failure(f"timed out ({type(e).__name__})", retry=True) from e
        except httpx.HTTPError as e:
            raise _Failure(f"{type(e).__name__}: {e}", retry=True) from e

    # ------------------------------------------------------------------ the log

    def _log_page(self, node: _Node, after: int | None) -> tuple[list[_Entry], bool]:
        """A page of the node's log after ``after`` (None: from its start), and whether the
        node's log may go on."""
        limit = self.options.page
        query = f"/v1/log?{_after(after)}limit={limit}"
        reply = self._get(node, query, limit * _MAX_LOG_LINE + 65536)
        if reply is None:
            node.report.log_error = node.report.last_error or "no answer"
            return [], False
        if reply.status == 404:
            node.report.log_error = "GET /v1/log: 404: not a spec §7.1 node?"
            return [], False
        entries, problem = parse_log_page(reply.body, after)
        node.report.log_entries += len(entries)
        if problem is not None:
            node.report.log_error = (
                f"GET {query}: {problem}; the rest of this node's log is ignored"
            )
            node.failed(node.report.log_error)
            return entries, False
        return entries, True

    # ------------------------------------------------------------------ the records

    def _fetch(
        self,
        pool: ThreadPoolExecutor,
        nodes: list[_Node],
        pages: dict[str, tuple[_Node, int | None, list[_Entry]]],
        announced: dict[str, list[_Node]],
    ) -> tuple[dict[str, RawRecord], dict[str, list[RawRecord]], dict[str, str]]:
        """Fetch ``announced``: the right bytes by CID, the wrong bytes seen, why some failed."""
        good: dict[str, RawRecord] = {}
        wrong: dict[str, list[RawRecord]] = defaultdict(list)
        tried: dict[str, set[str]] = defaultdict(set)  # CID -> nodes that served it wrong
        if self.options.bulk:
            # The node with most of what is wanted first; a CAR only for most of a page.
            ranked = sorted(pages.values(), key=lambda p: -sum(e.cid in announced for e in p[2]))
            for node, after, page in ranked:
                wanted = {e.cid for e in page if e.cid in announced and e.cid not in good}
                if node.skipped or len(wanted) * 2 < len(page) or len(wanted) < 2:
                    continue
                self._bulk(node, after, len(page), wanted, good, wrong, tried)
        rest = [cid for cid in announced if cid not in good]
        why: dict[str, str] = {}

        def one(cid: str) -> tuple[str, RawRecord | None, list[RawRecord], str]:
            return (cid, *self._fetch_one(cid, nodes, announced[cid], set(tried.get(cid, ()))))

        for cid, record, bad, reason in pool.map(one, rest):
            wrong[cid].extend(bad)
            if record is not None:
                good[cid] = record
            else:
                why[cid] = reason
        return good, wrong, why

    def _bulk(
        self,
        node: _Node,
        after: int | None,
        limit: int,
        wanted: set[str],
        good: dict[str, RawRecord],
        wrong: dict[str, list[RawRecord]],
        tried: dict[str, set[str]],
    ) -> None:
        """One ``/v1/car`` for a log page: keep each wanted block whose bytes hash to its CID."""
        path = f"/v1/car?{_after(after)}limit={limit}"
        reply = self._get(node, path, self.options.max_car_bytes)
        if reply is None or reply.status != 200:
            return  # 204, 404 or no answer: the records come one by one
        stream = io.BytesIO(reply.body)
        try:
            header = read_header(stream)
        except CarError as e:
            node.failed(f"GET {path}: not a CARv1 ({e})")
            return
        where = f"{node.url}{path}@"
        for item in iter_sections(stream, offset=header.header_end_offset):
            if not isinstance(item, CarBlock):
                node.failed(f"GET {path}: bad CAR section at byte {item.offset}: {item.reason}")
                continue
            try:
                cid = cid_from_binary(bytes(item.cid))
            except EncodingError:
                continue
            if cid not in wanted or cid in good or node.url in tried[cid]:
                continue
            data = bytes(item.data)
            if cid_of(data) == cid:
                good[cid] = RawRecord(data, cid, f"{where}{item.offset}")
                with node.lock:
                    node.report.served += 1
            else:
                wrong[cid].append(self._wrong(node, cid, data, f"{where}{item.offset}", tried[cid]))

    def _fetch_one(
        self, cid: str, nodes: list[_Node], announcers: list[_Node], exclude: set[str]
    ) -> tuple[RawRecord | None, list[RawRecord], str]:
        """``/ipfs/<cid>`` from the announcers (fewest failures first), then from the other nodes."""
        spread = zlib.crc32(cid.encode()) % len(announcers)  # spread the load over equally good nodes
        first = sorted(announcers[spread:] + announcers[:spread], key=lambda n: n.in_a_row)
        others = sorted((n for n in nodes if n not in announcers), key=lambda n: n.in_a_row)
        bad: list[RawRecord] = []
        reasons = [f"{url}: wrong bytes" for url in sorted(exclude)]
        for node in first + others:
            if node.skipped or node.url in exclude:
                if node.skipped:
                    reasons.append(f"{node.url}: skipped")
                continue
            reply = self._get(node, f"/ipfs/{cid}", MAX_ENVELOPE_BYTES)
            if reply is None:
                reasons.append(f"{node.url}: {node.report.last_error or 'no answer'}")
                continue
            if reply.status != 200:
                with node.lock:
                    node.report.not_found += 1
                reasons.append(f"{node.url}: HTTP {reply.status}")
                continue
            location = f"{node.url}/ipfs/{cid}"
            if cid_of(reply.body) == cid:
                with node.lock:
                    node.report.served += 1
                return RawRecord(reply.body, cid, location), bad, ""
            bad.append(self._wrong(node, cid, reply.body, location, exclude))
            reasons.append(f"{node.url}: wrong bytes (hash to {cid_of(reply.body)})")
        return None, bad, "; ".join(reasons) or "no node to ask"

    @staticmethod
    def _wrong(node: _Node, cid: str, data: bytes, location: str, tried: set[str]) -> RawRecord:
        """Note that ``node`` served ``data`` for ``cid`` (adding it to ``tried``); the evidence record."""
        tried.add(node.url)
        with node.lock:
            node.report.wrong.append(cid)
        return RawRecord(data, cid, location)
