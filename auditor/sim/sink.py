"""Where the simulator publishes: a directory of envelopes, a CARv1 file, NDJSON.

Records arrive in publication order and are written as they come (streaming); the CAR
header names the election record as its root, so the few records published before it
are held until it is known.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from auditor.model.encoding import cid_to_binary
from auditor.store.car import CarWriter

__all__ = ["FORMATS", "EvidenceSink"]

FORMATS = ("dir", "car", "ndjson")


class EvidenceSink:
    """Writes each published record to every enabled format under ``out``."""

    def __init__(self, out: Path, formats: tuple[str, ...] = ("dir", "car")) -> None:
        unknown = set(formats) - set(FORMATS)
        if unknown:
            raise ValueError(f"unknown output formats {sorted(unknown)}; choose from {FORMATS}")
        self.out = out
        self.formats = formats
        self.count = 0
        self.by_type: dict[str, int] = {}
        self._pending: list[tuple[str, str, bytes]] = []
        self._car_file: BinaryIO | None = None
        self._car: CarWriter | None = None
        self._ndjson: BinaryIO | None = None
        self._dirs: set[str] = set()
        out.mkdir(parents=True, exist_ok=True)
        if "ndjson" in formats:
            self._ndjson = open(out / "evidence.ndjson", "wb")  # noqa: SIM115 - closed in close()

    def add(self, record_type: str, cid: str, raw: bytes) -> None:
        self.count += 1
        self.by_type[record_type] = self.by_type.get(record_type, 0) + 1
        if "dir" in self.formats:
            folder = self.out / "records" / record_type
            if record_type not in self._dirs:
                folder.mkdir(parents=True, exist_ok=True)
                self._dirs.add(record_type)
            (folder / f"{cid}.json").write_bytes(raw)
        if self._ndjson is not None:
            self._ndjson.write(raw + b"\n")
        if "car" in self.formats:
            if self._car is None:
                self._pending.append((record_type, cid, raw))
                if record_type == "election":
                    self._open_car(cid)
            else:
                self._car.add(cid_to_binary(cid), raw)

    def add_raw_car_block(self, cid: str, raw: bytes) -> None:
        """Put bytes in the CAR under ``cid`` whatever they hash to (REC-CID tampering)."""
        if self._car is None:
            raise RuntimeError("the CAR is not open yet")
        self._car.add(cid_to_binary(cid), raw)

    def _open_car(self, root: str) -> None:
        self._car_file = open(self.out / "evidence.car", "wb")  # noqa: SIM115 - closed in close()
        self._car = CarWriter(self._car_file, [cid_to_binary(root)])
        for _, cid, raw in self._pending:
            self._car.add(cid_to_binary(cid), raw)
        self._pending.clear()

    def close(self) -> None:
        if "car" in self.formats and self._car is None:
            raise RuntimeError("no election record was published; the CAR has no root")
        for stream in (self._car_file, self._ndjson):
            if stream is not None:
                stream.flush()
                os.fsync(stream.fileno())
                stream.close()
