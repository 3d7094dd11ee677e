"""The crash-safe output: every finished configuration goes at once, as one checksummed record
written with a single write(), to the journal <out>.journal; the output file is rebuilt from
everything finished (store.atomic_write) every flush_interval seconds and at the end. See the
package docstring for what survives a kill, Ctrl-C or a power cut."""
import contextlib
import hashlib
import json
import math
import os
import struct
import time
from typing import Dict

import numpy as np

from . import store
from .spec import COLUMNS, CONFIG_TYPES, FLOAT, STAT_COLUMNS, error

JOURNAL_MAGIC = b"VGKERN-SWEEP-JOURNAL 1\n"
_REC = struct.Struct("<4sIQ32s")  # magic, header length, data length, sha256(header + data)
_REC_MAGIC = b"REC1"
_COLUMNS_TAG = hashlib.sha256(json.dumps(list(COLUMNS)).encode()).hexdigest()[:16]


def journal_record(config, array):
    """One record: header (JSON: config with None for NaN, rows, columns tag) + float64 data."""
    header = json.dumps({"config": config, "rows": int(array.shape[0]), "columns": _COLUMNS_TAG},
                        separators=(",", ":")).encode()
    data = np.ascontiguousarray(array, dtype="<f8").tobytes()
    digest = hashlib.sha256(header + data).digest()
    return _REC.pack(_REC_MAGIC, len(header), len(data), digest) + header + data


def _nan_config(cfg):
    return {k: (math.nan if CONFIG_TYPES.get(k) == FLOAT and v is None else v)
            for k, v in cfg.items()}


def read_journal(f, path):
    """-> ([(config, array)], offset of the end of the last complete record)."""
    f.seek(0)
    blob = f.read()
    if not blob:
        return [], 0
    if not blob.startswith(JOURNAL_MAGIC[:len(blob)]) or (
            len(blob) > len(JOURNAL_MAGIC) and not blob.startswith(JOURNAL_MAGIC)):
        raise error(f"{path!r} is not a vgkern sweep journal; move it away or overwrite "
                    "(resume=False / --overwrite)")
    pos, records = len(JOURNAL_MAGIC), []
    while pos + _REC.size <= len(blob):
        magic, hlen, dlen, digest = _REC.unpack_from(blob, pos)
        end = pos + _REC.size + hlen + dlen
        if magic != _REC_MAGIC or end > len(blob):
            break
        body = blob[pos + _REC.size:end]
        if hashlib.sha256(body).digest() != digest:
            break  # cut short or damaged by a kill: this and anything after it is dropped
        header = json.loads(body[:hlen])
        if header.get("columns") != _COLUMNS_TAG:
            raise error(f"journal {path!r} was written by another version of vgkern.sweep "
                        "(different columns); delete it or overwrite (resume=False / --overwrite)")
        array = np.frombuffer(body[hlen:], dtype="<f8").reshape(header["rows"], len(STAT_COLUMNS))
        records.append((_nan_config(header["config"]), array.astype(np.float64)))
        pos = end
    return records, pos


class JournaledOutput:
    """The output file plus its journal; see the module docstring."""

    def __init__(self, path, resume, flush_interval):
        import pyarrow as pa

        self.path = os.fspath(path)
        self.fmt = store.format_of(self.path)
        self.journal_path = self.path + ".journal"
        self.flush_interval = float(flush_interval)
        self.schema = store.arrow_schema()
        self._pa = pa
        folder = os.path.dirname(os.path.abspath(self.path))
        if os.path.isdir(self.path):
            raise error(f"output {self.path!r} is a directory; give a file name ending in "
                        ".parquet or .csv")
        if not os.path.isdir(folder):
            raise error(f"output {self.path!r}: the folder {folder!r} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK) or (
                os.path.exists(self.path) and not os.access(self.path, os.W_OK)):
            raise error(f"output {self.path!r} is not writable (permission denied on "
                        f"{folder!r} or the file)")
        # The journal: create (or open) and lock it first, so that two sweeps never share an
        # output; then read what is there.
        created = not os.path.exists(self.journal_path)
        try:
            self._journal = open(self.journal_path, "a+b")
        except OSError as err:
            raise error(f"output {self.path!r}: cannot create the journal "
                        f"{self.journal_path!r}: {err}") from err
        try:
            self._lock()
            existing = None
            if resume and os.path.exists(self.path):
                existing = store.read_file(self.path, self.fmt, self.schema)
            records = []
            if resume:
                records, _ = read_journal(self._journal, self.journal_path)
            self._chunks = [existing] if existing is not None and existing.num_rows else []
            # config_id -> None for configs in the output or the journal
            self.done: Dict[str, None] = {}
            if self._chunks:
                for cid in self._chunks[0].column("config_id").unique().to_pylist():
                    self.done[cid] = None
            self._pending = []  # (config, array) not yet in an Arrow chunk
            for cfg, arr in records:
                if cfg["config_id"] not in self.done:
                    self.done[cfg["config_id"]] = None
                    self._pending.append((cfg, arr))
            # Consolidate: the output holds everything finished so far (this also proves that
            # it can be written), then the journal is emptied.
            if self._pending or existing is None:
                self.flush()
            else:
                self._reset_journal()
        except BaseException:
            self._journal.close()
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(self.journal_path)
            raise
        self._last_flush_time = time.monotonic()

    def _lock(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            return
        try:
            fcntl.flock(self._journal.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise error(f"another vgkern sweep is writing {self.path!r} (its journal "
                        f"{self.journal_path!r} is locked)") from err

    def add(self, config, array):
        """Record a finished configuration: one write() to the journal, then maybe a rebuild."""
        record = journal_record({k: (None if isinstance(v, float) and math.isnan(v) else v)
                                 for k, v in config.items()}, array)
        fd = self._journal.fileno()
        view = memoryview(record)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        self.done[config["config_id"]] = None
        self._pending.append((config, array))
        if time.monotonic() - self._last_flush_time >= self._flush_every:
            self.flush()

    @property
    def _flush_every(self):
        # at least flush_interval, and at least 4x the last rebuild's duration (so that
        # rebuilding a large file never takes more than ~20% of the time)
        return max(self.flush_interval, 4 * getattr(self, "_last_flush_cost", 0.0))

    def table(self):
        if self._pending:
            self._chunks.append(store.arrow_table(self._pending))
            self._pending = []
        if not self._chunks:
            return self.schema.empty_table()
        return self._pa.concat_tables(self._chunks) if len(self._chunks) > 1 else self._chunks[0]

    def flush(self, table=None):
        t0 = time.monotonic()
        store.atomic_write(self.table() if table is None else table, self.path, self.fmt)
        self._reset_journal()  # everything is in the output now
        self._last_flush_time = time.monotonic()
        self._last_flush_cost = self._last_flush_time - t0

    def _reset_journal(self):
        """Empty the journal, keeping its header and the lock (the file is in append mode)."""
        self._journal.truncate(0)
        self._journal.write(JOURNAL_MAGIC)
        self._journal.flush()
        self._last_flush_time = time.monotonic()

    def close(self, final_table=None):
        try:
            if final_table is not None:
                self._chunks, self._pending = [final_table], []
            self.flush()
            # the output holds everything: the journal is no longer needed
            with contextlib.suppress(OSError):
                os.unlink(self.journal_path)
        finally:
            self._journal.close()

    def abandon(self):
        """Close without a rebuild (an error while rebuilding): the journal keeps the rest."""
        with contextlib.suppress(Exception):
            self._journal.close()
