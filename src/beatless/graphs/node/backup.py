"""A database file as a compressed, checksummed, sparse-aware archive, and back.

The archive is one zstd stream (level 3) of::

    b"BEATLESS-GRAPH-BACKUP 1\\n"
    {"size": <file size>, "extents": [[offset, length], ...]}\\n     (one JSON line)
    <the bytes of every extent, in order>

The extents are the file's data regions (`SEEK_DATA`/`SEEK_HOLE`): a database
file can be mostly holes, which are neither read nor stored, and `unpack`
writes the extents back at their offsets into a file of the same size, so
the restored file is sparse again. The SHA-256 is of the archive as stored
(what S3 holds), computed while it is written. `unpack` refuses an archive
whose digest differs from the one expected before anything is written;
`unpack_stream` (restores straight from S3) writes to a file of its own while
it hashes and refuses at the end — the caller discards that file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

MAGIC = b"BEATLESS-GRAPH-BACKUP 1\n"
LEVEL = 3
CHUNK = 4 * 2**20


class BackupIntegrityError(Exception):
    """The archive is not what it should be (wrong checksum, not an archive, truncated)."""


@dataclass(frozen=True)
class Packed:
    sha256: str
    stored_bytes: int  # the archive's size
    logical_bytes: int  # the database file's size (holes included)
    data_bytes: int  # the bytes of its extents


def extents(path: Path) -> list[tuple[int, int]]:
    """The data regions of `path` as (offset, length); the whole file where holes are not reported."""
    size = path.stat().st_size
    found: list[tuple[int, int]] = []
    with path.open("rb") as handle:
        fd = handle.fileno()
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            found.append((start, end - start))
            offset = end
    return found


class _HashingWriter:
    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.target.write(data)
        self.digest.update(data)
        self.written += len(data)
        return len(data)


def pack(source: Path, archive: Path) -> Packed:
    """Write the archive of `source` to `archive`."""
    regions = extents(source)
    size = source.stat().st_size
    with archive.open("wb") as out, source.open("rb") as handle:
        hashing = _HashingWriter(out)
        compressor = zstandard.ZstdCompressor(level=LEVEL, threads=0)
        with compressor.stream_writer(hashing, closefd=False) as stream:  # type: ignore[arg-type]
            stream.write(MAGIC)
            stream.write(json.dumps({"size": size, "extents": regions}).encode() + b"\n")
            for offset, length in regions:
                handle.seek(offset)
                left = length
                while left:
                    chunk = handle.read(min(CHUNK, left))
                    if not chunk:
                        raise BackupIntegrityError(f"{source} shrank while it was read")
                    stream.write(chunk)
                    left -= len(chunk)
    return Packed(hashing.digest.hexdigest(), hashing.written, size, sum(length for _, length in regions))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unpack(archive: Path, target: Path, *, expected_sha256: str) -> int:
    """Verify `archive` against `expected_sha256`, then write the database file to
    `target` (sparse). Returns the file's size. Raises `BackupIntegrityError`."""
    actual = sha256_of(archive)
    if actual != expected_sha256:
        raise BackupIntegrityError(f"archive checksum {actual} is not the recorded {expected_sha256}")
    with archive.open("rb") as raw:
        return unpack_stream(raw, target, expected_sha256=expected_sha256)


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.digest.update(data)
        return data


def unpack_stream(source: BinaryIO, target: Path, *, expected_sha256: str) -> int:
    """Write the database file of the archive read from `source` (an S3 body) to `target`
    in one pass — hashing, decompressing, writing — and check the digest at the end. A
    mismatch raises `BackupIntegrityError` and the caller discards `target`, so nothing
    it replaces changes before the archive is verified."""
    hashing = _Hashing(source)
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(hashing, read_size=CHUNK)  # type: ignore[arg-type]
        if _read_exactly(reader, len(MAGIC)) != MAGIC:
            raise BackupIntegrityError("not a graph backup")
        header = json.loads(_read_line(reader))
        size, regions = int(header["size"]), [(int(o), int(n)) for o, n in header["extents"]]
        with target.open("wb") as out:
            out.truncate(size)
            for offset, length in regions:
                out.seek(offset)
                for chunk in _chunks(reader, length):
                    out.write(chunk)
            if reader.read(1):
                raise BackupIntegrityError("the archive has data after its last extent")
            while hashing.read(CHUNK):  # whatever follows the zstd frame is part of what is stored
                pass
            actual = hashing.digest.hexdigest()
            if actual != expected_sha256:
                raise BackupIntegrityError(f"archive checksum {actual} is not the recorded {expected_sha256}")
            out.flush()
            os.fsync(out.fileno())
    except (zstandard.ZstdError, ValueError, KeyError, TypeError) as error:
        # A corrupted stream usually fails to decompress before its digest can be compared.
        raise BackupIntegrityError(f"the archive is damaged: {error}") from None
    return size


def _chunks(reader: BinaryIO, length: int) -> Iterator[bytes]:
    left = length
    while left:
        chunk = reader.read(min(CHUNK, left))
        if not chunk:
            raise BackupIntegrityError("the archive ends inside an extent")
        yield chunk
        left -= len(chunk)


def _read_exactly(reader: BinaryIO, n: int) -> bytes:
    return b"".join(_chunks(reader, n))


def _read_line(reader: BinaryIO) -> bytes:
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = reader.read(1)
        if not byte:
            raise BackupIntegrityError("the archive ends inside its header")
        line += byte
        if len(line) > 64 * 2**20:
            raise BackupIntegrityError("the archive's header is too long")
    return bytes(line)
