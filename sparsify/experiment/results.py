"""``results.csv``: one row per finished cell, appended as cells finish, checked when read back.

The file is the run's memory: a resumed run trusts the rows it finds and does
not redo those cells, and the summary averages them. So reading is strict.
The one defect tolerated is a half-written last line (no newline at the end:
an interrupted append), which is dropped. Anything else -- a byte that is not
UTF-8, a header or a row lacking columns, a value that does not parse, an
accuracy outside [0, 1], a cell recorded twice -- is refused with the file,
the line and the problem, and nothing is changed.
"""
from __future__ import annotations

import csv
import io as _io
import math
import os
from pathlib import Path

import numpy as np

from ..io import atomic_write
from .config import METHODS, MODES
from .refit import REFIT_METHODS

__all__ = [
    "CSV_COLUMNS",
    "LEGACY_COLUMNS",
    "append_row",
    "cell_key",
    "read_results_csv",
    "write_results_csv",
]

CSV_COLUMNS = (
    "method", "mode", "keep", "seed", "test_accuracy", "accuracy_after_prune", "drop_after_prune",
    "kept_weights", "total_weights", "keep_achieved", "prune_seconds", "retrain_seconds",
    "kept_per_layer", "total_per_layer", "sampled_sides", "det_sides", "dead_sides", "allocation",
    "s_size", "per_class_recall", "train_accuracy", "accuracy_before_prune", "instability",
)
#: the columns of files written before ``train_accuracy``, ``accuracy_before_prune`` and ``instability``;
#: such a file is read with NaN in the new columns (and rewritten with all columns when a run resumes).
LEGACY_COLUMNS = CSV_COLUMNS[:-3]
_NEW_COLUMNS = CSV_COLUMNS[len(LEGACY_COLUMNS):]
_INT_COLUMNS = ("seed", "kept_weights", "total_weights", "sampled_sides", "det_sides", "dead_sides", "s_size")
_FLOAT_COLUMNS = ("keep", "test_accuracy", "accuracy_after_prune", "drop_after_prune", "keep_achieved",
                  "prune_seconds", "retrain_seconds", "train_accuracy", "accuracy_before_prune", "instability")
_LIST_COLUMNS = {"kept_per_layer": int, "total_per_layer": int, "per_class_recall": float}
#: row modes: the run modes and the lottery-ticket panel.
_ROW_MODES = MODES + ("lottery",)
_ROW_METHODS = METHODS + ("dense",) + REFIT_METHODS


def cell_key(mode: str, method: str, keep: float, seed: int) -> tuple:
    """The identity of a cell (keep rounded to 6 significant digits)."""
    return (mode, method, f"{float(keep):.6g}", int(seed))


# --- writing ------------------------------------------------------------------------------
def _format_value(value) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return ";".join(_format_value(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return "nan" if not math.isfinite(value) else repr(float(value))
    return str(value)


def _row_line(row: dict) -> str:
    buf = _io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        [_format_value(row.get(c, "nan" if c in _NEW_COLUMNS else "")) for c in CSV_COLUMNS])
    return buf.getvalue()


def write_results_csv(path, rows: list[dict]) -> None:
    """Write the header and ``rows`` to ``path`` atomically (replacing the file)."""
    text = ",".join(CSV_COLUMNS) + "\n" + "".join(_row_line(r) for r in rows)
    atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def append_row(path, row: dict) -> dict:
    """Append one row to ``path`` (flushed to disk) and return it as it reads back.

    The row is checked like a row read from the file before anything is
    written; missing columns are written empty (and then refused by the check).
    """
    line = _row_line(row)
    parsed = _parse_line(line, Path(path), 0)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    return parsed


# --- reading ------------------------------------------------------------------------------
def _problem(path: Path, lineno: int, text: str) -> ValueError:
    where = f"line {lineno}" if lineno else "a new row"
    return ValueError(
        f"out: {str(path)!r}, {where}: {text}. The file was edited or damaged; fix or delete that line, "
        "or start afresh with a new --out."
    )


def _parse_line(line: str, path: Path, lineno: int, columns=CSV_COLUMNS) -> dict:
    """One data line as a checked row (numbers and ``;``-joined lists converted).

    ``columns`` are the file's columns (:data:`LEGACY_COLUMNS` for an older
    file, whose rows get NaN in the newer columns).
    """
    fields = next(csv.reader([line]), [])
    if len(fields) != len(columns):
        raise _problem(path, lineno, f"has {len(fields)} field(s), expected {len(columns)} "
                                     f"({', '.join(columns)}); columns are missing or extra")
    row: dict = dict(zip(columns, fields))
    for c in CSV_COLUMNS:
        row.setdefault(c, "nan")
    for c in _INT_COLUMNS:
        try:
            row[c] = int(row[c])
        except ValueError:
            raise _problem(path, lineno, f"column {c}: {row[c]!r} is not an integer") from None
    for c in _FLOAT_COLUMNS:
        try:
            row[c] = float(row[c])
        except ValueError:
            raise _problem(path, lineno, f"column {c}: {row[c]!r} is not a number") from None
    for c, kind in _LIST_COLUMNS.items():
        try:
            row[c] = [kind(v) for v in row[c].split(";")] if row[c] else []
        except ValueError:
            raise _problem(path, lineno, f"column {c}: {row[c]!r} is not a ';'-joined list of "
                                         f"{kind.__name__}s") from None
    problem = _row_problem(row)
    if problem:
        raise _problem(path, lineno, problem)
    return row


def _row_problem(row: dict) -> str:
    """What is wrong with a parsed row, or an empty string."""
    def fraction(c, allow_nan=False, low=0.0):
        v = row[c]
        if math.isnan(v):
            return "" if allow_nan else f"column {c}: nan, expected a number in [{low:g}, 1]"
        return "" if low <= v <= 1.0 else f"column {c}: {v!r} is outside [{low:g}, 1]"

    if row["method"] not in _ROW_METHODS:
        return f"column method: unknown method {row['method']!r}; expected one of {list(_ROW_METHODS)}"
    if row["mode"] not in _ROW_MODES:
        return f"column mode: unknown mode {row['mode']!r}; expected one of {list(_ROW_MODES)}"
    if not 0.0 < row["keep"] <= 1.0:
        return f"column keep: {row['keep']!r} is outside (0, 1]"
    for c in ("test_accuracy", "accuracy_after_prune", "keep_achieved"):
        problem = fraction(c)
        if problem:
            return problem
    problem = fraction("drop_after_prune", allow_nan=True, low=-1.0)
    if problem:
        return problem
    for c in ("train_accuracy", "accuracy_before_prune"):
        problem = fraction(c, allow_nan=True)
        if problem:
            return problem
    if not (math.isnan(row["instability"]) or -math.inf < row["instability"] <= 1.0):
        return f"column instability: {row['instability']!r} is not NaN or a finite number <= 1"
    for c in ("prune_seconds", "retrain_seconds"):
        if not row[c] >= 0.0 or not math.isfinite(row[c]):
            return f"column {c}: {row[c]!r} is not a finite number >= 0"
    for c in _INT_COLUMNS:
        if row[c] < 0:
            return f"column {c}: {row[c]} is negative"
    kept, total = row["kept_per_layer"], row["total_per_layer"]
    if len(kept) != len(total) or any(not 0 <= k <= t for k, t in zip(kept, total)):
        return f"kept_per_layer {kept} does not fit total_per_layer {total}"
    if sum(kept) != row["kept_weights"] or sum(total) != row["total_weights"]:
        return (f"kept_weights/total_weights {row['kept_weights']}/{row['total_weights']} are not the sums "
                f"of kept_per_layer/total_per_layer {sum(kept)}/{sum(total)}")
    bad = [v for v in row["per_class_recall"] if not (math.isnan(v) or 0.0 <= v <= 1.0)]
    if bad:
        return f"column per_class_recall: {bad[0]!r} is outside [0, 1]"
    return ""


def read_results_csv(path) -> list[dict]:
    """The rows of a ``results.csv``, checked (see the module's docstring); ``[]`` if there is none.

    Raises ValueError naming the file, the line and the problem when the file
    is not a regular file, is not UTF-8, lacks columns, holds a value that does
    not parse or lies outside its range, or records a cell twice.
    """
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():
        raise ValueError(f"out: {str(path)!r} is not a regular file (a folder?); move it away or choose a "
                         "new --out.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"out: {str(path)!r} could not be read ({exc}).") from None
    data = data[:data.rfind(b"\n") + 1]  # drop an interrupted append (no newline yet)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data[:exc.start].count(b"\n") + 1
        raise _problem(path, lineno, f"byte {data[exc.start]:#04x} is not UTF-8 text") from None
    lines = text.split("\n")[:-1]
    if not lines:
        return []
    header = next(csv.reader([lines[0]]), [])
    columns = CSV_COLUMNS if tuple(header) != LEGACY_COLUMNS else LEGACY_COLUMNS
    if tuple(header) != columns:
        missing = [c for c in CSV_COLUMNS if c not in header]
        extra = [c for c in header if c not in CSV_COLUMNS]
        what = (f"the header lacks column(s) {missing}" if missing else
                f"the header has unknown column(s) {extra}" if extra else "the header has the columns in "
                "another order")
        raise _problem(path, 1, f"{what}; this version writes {','.join(CSV_COLUMNS)}")
    rows, first_line = [], {}
    for lineno, line in enumerate(lines[1:], start=2):
        row = _parse_line(line, path, lineno, columns)
        key = cell_key(row["mode"], row["method"], row["keep"], row["seed"])
        if key in first_line:
            raise _problem(path, lineno, f"cell (mode, method, keep, seed) = {key} is already recorded on "
                                         f"line {first_line[key]}; a cell is recorded once")
        first_line[key] = lineno
        rows.append(row)
    return rows
