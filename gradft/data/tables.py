"""Reading one labelled table file into records: ``.jsonl``, ``.json`` (a list of records), ``.csv``, ``.tsv``.

Owns `read_table` (kind from the file suffix, any `encoding`, CRLF or LF line ends, every error a `DataError` naming
the file and, where there is one, the 1-based line), `sha256_file` (provenance in results.json) and `TABLE_KINDS`.
Each record comes back with its line number, so later checks (unknown field, unknown label) can name the line too.
A csv/tsv file may have another ``delimiter`` (one character, e.g. ``@``) and no header row (``columns`` names its
columns); fields are not limited to the csv module's default 128 KiB.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from .formats import DataError

TABLE_KINDS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
Record = tuple[int, dict[str, Any]]  # (1-based line number, or record number for .json; the record)
FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)  # the csv module's default is 128 KiB a field: long documents exceed it


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def table_kind(path: Path, kind: str | None = None) -> str:
    """``kind`` if given (jsonl | json | csv | tsv), else from the suffix; a DataError for anything else."""
    kind = kind or TABLE_KINDS.get(path.suffix.lower())
    if kind not in TABLE_KINDS.values():
        raise DataError(f"{path}: cannot tell the table format from the suffix {path.suffix!r}; "
                        f"use one of {sorted(TABLE_KINDS)} or set `kind: jsonl|json|csv|tsv` on the split")
    return kind


def _decode(path: Path, raw: bytes, encoding: str) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r} (task `encoding:`)") from None
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start:exc.start + 1].hex()
        raise DataError(f"{path}: line {line}: byte 0x{bad} is not valid {encoding} ({exc.reason}); "
                        "set the task's `encoding:` (e.g. encoding: iso-8859-1)") from None
    return text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not part of the first field name


def _jsonl(path: Path, text: str) -> list[Record]:
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {lineno}: malformed JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {lineno}: not a JSON object (got {type(row).__name__})")
        out.append((lineno, row))
    return out


def _json(path: Path, text: str) -> list[Record]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: malformed JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: a .json table must be a list of records (JSON objects); use .jsonl for one "
                        "object per line")
    return [(i + 1, r) for i, r in enumerate(rows)]


def _delimited(path: Path, text: str, delimiter: str, columns: list[str] | None = None) -> list[Record]:
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    if columns is not None:  # no header row: line 1 is a record
        header, start = [str(c) for c in columns], 1
    else:
        try:
            header, start = next(reader), 2
        except StopIteration:
            raise DataError(f"{path}: empty file (a header row is needed, or name the columns with `columns:`)") \
                from None
        except csv.Error as exc:
            raise DataError(f"{path}: line 1: {exc}") from None
    if len(set(header)) != len(header) or not all(h.strip() for h in header):
        where = "`columns`" if columns is not None else "line 1: the header row"
        raise DataError(f"{path}: {where} needs distinct, non-empty column names, got {header}")
    out = []
    try:
        for row in reader:
            if row and len(row) != len(header):
                raise DataError(f"{path}: line {start}: {len(row)} fields, the header has {len(header)} "
                                f"({header}); a stray delimiter {delimiter!r} or an unclosed quote?")
            if row:
                out.append((start, dict(zip(header, row, strict=True))))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: {exc}") from None
    return out


def read_table(path: str | Path, encoding: str = "utf-8", kind: str | None = None, delimiter: str | None = None,
               columns: list[str] | None = None) -> list[Record]:
    """Every record of one table file, with its line number; DataError if missing, undecodable or malformed.
    ``delimiter`` and ``columns`` (no header row) apply to csv/tsv files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    kind = table_kind(path, kind)
    if (delimiter is not None or columns is not None) and kind not in ("csv", "tsv"):
        raise DataError(f"{path}: `delimiter`/`columns` are for csv or tsv files, this one is read as {kind} "
                        "(set `kind: csv` for a delimited .txt file)")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\r\n"):
        raise DataError(f"{path}: delimiter={delimiter!r}: must be one character (not a quote or a line end)")
    if columns is not None and (not isinstance(columns, list) or len(columns) < 2):
        raise DataError(f"{path}: columns={columns!r}: must list the file's column names (it has no header row)")
    text = _decode(path, path.read_bytes(), encoding)
    if kind == "jsonl":
        rows = _jsonl(path, text)
    elif kind == "json":
        rows = _json(path, text)
    else:
        rows = _delimited(path, text, delimiter or ("\t" if kind == "tsv" else ","), columns)
    if not rows:
        raise DataError(f"{path}: no records")
    return rows
