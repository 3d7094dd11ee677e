"""Tables and files: the Arrow schema of a sweep's table, results as Arrow tables, reading a
results file (checking its schema), and writing one atomically (temporary file in the same
folder, fsync, os.replace, fsync of the folder)."""
from __future__ import annotations

import contextlib
import csv
import os
from typing import TYPE_CHECKING, Union

import numpy as np

from .spec import (BOOL, CONFIG_TYPES, FLOAT, INT, ROW_COLUMNS, SCHEMA_VERSION, STAT_COLUMNS,
                   STR, error, require)

if TYPE_CHECKING:
    import pandas
    import pyarrow


def arrow_schema() -> pyarrow.Schema:
    """The Arrow schema of a sweep's results table (config_id, the configuration, step, layer and
    the statistics), stamped with SCHEMA_VERSION."""
    import pyarrow as pa

    types = {STR: pa.string(), INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_()}
    fields = [pa.field("config_id", pa.string())]
    fields += [pa.field(k, types[t]) for k, t in CONFIG_TYPES.items()]
    fields += [pa.field(k, pa.int64()) for k in ROW_COLUMNS]
    fields += [pa.field(k, pa.float64()) for k in STAT_COLUMNS]
    return pa.schema(fields, metadata={"vgkern_sweep_schema": str(SCHEMA_VERSION)})


def arrow_table(results):
    """[(config, array from run_config)] -> pyarrow Table with the sweep schema."""
    import pyarrow as pa

    schema = arrow_schema()
    counts = np.array([a.shape[0] for _, a in results], dtype=np.int64)
    stats = (np.concatenate([a for _, a in results]) if results
             else np.empty((0, len(STAT_COLUMNS))))
    cols = {}
    cfgs = [c for c, _ in results]
    rep = lambda vals, dt: np.repeat(np.array(vals, dtype=dt), counts)
    cols["config_id"] = pa.array(rep([c["config_id"] for c in cfgs], object), pa.string())
    for key, kind in CONFIG_TYPES.items():
        vals = [c[key] for c in cfgs]
        if kind == STR:
            cols[key] = pa.array(rep(vals, object), pa.string())
        else:
            cols[key] = rep(vals, {INT: np.int64, FLOAT: np.float64, BOOL: np.bool_}[kind])
    steps, layers = [], []
    for c, a in results:
        L = a.shape[0] // c["steps"]
        steps.append(np.repeat(np.arange(c["steps"], dtype=np.int64), L))
        layers.append(np.tile(np.arange(L, dtype=np.int64), c["steps"]))
    cols["step"] = np.concatenate(steps) if steps else np.empty(0, np.int64)
    cols["layer"] = np.concatenate(layers) if layers else np.empty(0, np.int64)
    stats = np.asfortranarray(stats)
    for j, name in enumerate(STAT_COLUMNS):
        cols[name] = stats[:, j]
    return pa.table(cols, schema=schema)


def filter_ids(table, ids, keep=True):
    """The rows of `table` whose config_id is (keep=False: is not) in `ids`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.is_in(table.column("config_id"), value_set=pa.array(sorted(ids), pa.string()))
    return table.filter(mask if keep else pc.invert(mask))


def to_pandas(table):
    return table.to_pandas()


def format_of(path: Union[str, os.PathLike[str]]) -> str:
    """"parquet" or "csv", from the file name; ValueError for any other name."""
    name = os.fspath(path).lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    raise error(f"output {os.fspath(path)!r}: unknown format; the name must end in .parquet "
                "(or .pq) or .csv")


def read_file(path, fmt, schema, what="output"):
    """Read a results file written by a sweep, checking its schema against ours."""
    path = os.fspath(path)
    try:
        # One open file for the schema and the data: a sweep running at the same time replaces
        # the output with os.replace, and reading it by name twice could mix two versions.
        with open(path, "rb") as f:
            return _read_open_file(f, path, fmt, schema, what)
    except OSError as err:
        raise error(f"{what} file {path!r} could not be read ({err}); pass another path or "
                    "overwrite it (resume=False / --overwrite)") from err


def _read_open_file(f, path, fmt, schema, what):
    import pyarrow as pa

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            found = pq.read_schema(f)
        else:
            names = next(csv.reader([f.readline().decode("utf-8")]), [])
            found = pa.schema([pa.field(n, schema.field(n).type if n in schema.names
                                        else pa.string()) for n in names])
    except (OSError, UnicodeDecodeError, pa.ArrowException, ValueError) as err:
        raise error(f"{what} file {path!r} exists but is not a readable {fmt.upper()} file "
                    f"({err}); pass another path or overwrite it (resume=False / --overwrite)") from err
    missing = [n for n in schema.names if n not in found.names]
    extra = [n for n in found.names if n not in schema.names]
    wrong = [n for n in schema.names if n in found.names and found.field(n).type != schema.field(n).type]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing columns {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if extra:
            parts.append(f"extra columns {extra[:8]}{' ...' if len(extra) > 8 else ''}")
        if wrong:
            parts.append("different types for " + ", ".join(
                f"{n} ({found.field(n).type} instead of {schema.field(n).type})" for n in wrong[:8]))
        raise error(f"{what} file {path!r} has a different schema than this version of "
                    f"vgkern.sweep writes ({'; '.join(parts)}); pass another path or overwrite it "
                    "(resume=False / --overwrite)")
    f.seek(0)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(f).select(schema.names)
        else:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(f, convert_options=pcsv.ConvertOptions(
                column_types=schema, strings_can_be_null=True)).select(schema.names)
        return table.cast(schema)
    except (OSError, pa.ArrowException, ValueError) as err:
        raise error(f"{what} file {path!r} could not be read ({err}); pass another path or "
                    "overwrite it (resume=False / --overwrite)") from err


def read_results(path: Union[str, os.PathLike[str]]) -> pandas.DataFrame:
    """Read a sweep's results file (.parquet or .csv) into a DataFrame with the sweep's dtypes."""
    require("pandas", "pyarrow", why="vgkern.read_results")
    fmt = format_of(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vgkern.read_results: no such file: {os.fspath(path)!r}")
    return to_pandas(read_file(path, fmt, arrow_schema(), what="results"))


def _fsync_dir(folder):
    if os.name != "posix":  # pragma: no cover
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(table: pyarrow.Table, path: Union[str, os.PathLike[str]], fmt: str
                 ) -> None:
    """Write an Arrow table to path ("parquet" or "csv") atomically: a temporary file in the same
    folder, fsync'ed, then os.replace over path, then an fsync of the folder. A reader sees the
    old file or the new one, whole; after a power cut the file is one of them too."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                pq.write_table(table, f, compression="zstd")
            else:
                import pyarrow.csv as pcsv

                pcsv.write_csv(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
