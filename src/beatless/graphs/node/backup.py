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

import contextlib
import errno
import hashlib
import json
import mmap
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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


def copy_sparse(source: Path, target: Path) -> None:
    """`source`'s bytes to `target`, holes kept as holes (the kernel copies the extents), synced."""
    size = source.stat().st_size
    with source.open("rb") as src, target.open("wb") as out:
        out.truncate(size)
        for offset, length in extents(source):
            done = 0
            while done < length:
                copied = os.copy_file_range(
                    src.fileno(), out.fileno(), length - done, offset + done, offset + done
                )
                if copied == 0:
                    raise BackupIntegrityError(f"{source} shrank while it was copied")
                done += copied
        os.fsync(out.fileno())


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


def unpack_stream(source: BinaryIO, target: Path, *, expected_sha256: str) -> int:
    """Write the database file of the archive read from `source` (an S3 body) to `target`
    in one pass and check the digest at the end. A mismatch raises `BackupIntegrityError`
    and the caller discards `target`, so nothing it replaces changes before the archive
    is verified.

    Three stages overlap, each on a thread of its own, joined by small bounded queues:
    reading + hashing the archive, decompressing, writing. Writes of whole blocks go
    through `O_DIRECT` where the filesystem allows it, so a restore neither fills the
    page cache (other graphs' cached pages stay) nor leaves a gigabyte of dirty pages
    for the final fsync; the rest is written through the page cache."""
    with _ReadAhead(source) as archive:
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(archive, read_size=CHUNK)  # type: ignore[arg-type]
            if _read_exactly(reader, len(MAGIC)) != MAGIC:
                raise BackupIntegrityError("not a graph backup")
            header = json.loads(_read_line(reader))
            size, regions = int(header["size"]), [(int(o), int(n)) for o, n in header["extents"]]
            with _BlockWriter(target, size) as out:
                for offset, length in regions:
                    done = 0
                    while done < length:
                        buffer = out.buffer()
                        n = _fill(reader, buffer, min(CHUNK, length - done))
                        out.submit(offset + done, buffer, n)
                        done += n
                if reader.read(1):
                    raise BackupIntegrityError("the archive has data after its last extent")
                actual = archive.drain()  # whatever follows the zstd frame is part of what is stored
                if actual != expected_sha256:
                    raise BackupIntegrityError(
                        f"archive checksum {actual} is not the recorded {expected_sha256}"
                    )
        except (zstandard.ZstdError, ValueError, KeyError, TypeError) as error:
            # A corrupted stream usually fails to decompress before its digest can be compared.
            raise BackupIntegrityError(f"the archive is damaged: {error}") from None
    return size


# Buffers in flight between the stages (each CHUNK bytes): enough to keep all three busy.
IN_FLIGHT = 4
ALIGN = 4096  # O_DIRECT offsets, lengths and buffer addresses are multiples of this
_END = object()


class _ReadAhead:
    """Reads and hashes `source` on a thread of its own; `read` hands its chunks on in order."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._chunks: queue.Queue[Any] = queue.Queue(maxsize=IN_FLIGHT)
        self._stop = threading.Event()
        self._digest = hashlib.sha256()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="restore-read", daemon=True)

    def __enter__(self) -> _ReadAhead:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # unblock a reader waiting to put
                self._chunks.get_nowait()
        # Ended already when the archive was read to its end; after an error the caller
        # closes the stream, which ends a read still blocked on the network.
        self._thread.join(timeout=1)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._source.read(CHUNK)
                self._digest.update(data)  # releases the GIL for large buffers
                self._put(data if data else _END)
                if not data:
                    return
        except BaseException as error:  # handed to the reading stage, which raises it
            self._put(error)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._chunks.put(item, timeout=0.1)
                return

    def read(self, n: int = -1) -> bytes:
        if self._ended:
            return b""
        item = self._chunks.get()
        if item is _END:
            self._ended = True
            return b""
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        return bytes(item)

    def drain(self) -> str:
        """Reads what is left to the end; the hex SHA-256 of everything read."""
        while self.read():
            pass
        return self._digest.hexdigest()


class _BlockWriter:
    """Writes (offset, bytes) into a new file of `size` bytes on a thread of its own,
    whole blocks through `O_DIRECT` where the filesystem supports it, the rest through
    the page cache; fsyncs on a clean exit. Buffers come from `buffer()` (page-aligned,
    a fixed pool: memory stays bounded and the decompressor never waits on allocation)."""

    def __init__(self, target: Path, size: int) -> None:
        self._fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(self._fd, size)
        self._direct: int | None = None
        with contextlib.suppress(OSError, AttributeError):  # tmpfs and others refuse O_DIRECT
            self._direct = os.open(target, os.O_WRONLY | os.O_DIRECT)
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        for _ in range(IN_FLIGHT):
            self._free.put(mmap.mmap(-1, CHUNK))
        self._jobs: queue.Queue[tuple[int, mmap.mmap, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="restore-write", daemon=True)

    def __enter__(self) -> _BlockWriter:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self._jobs.put(None)
        self._thread.join()
        try:
            if kind is None:
                self._raise()
                os.fsync(self._fd)  # the file's data and size, whichever descriptor wrote them
        finally:
            for fd in (self._fd, self._direct):
                if fd is not None:
                    os.close(fd)

    def buffer(self) -> mmap.mmap:
        self._raise()
        return self._free.get()

    def submit(self, offset: int, buffer: mmap.mmap, n: int) -> None:
        self._jobs.put((offset, buffer, n))

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            offset, buffer, n = job
            try:
                if self._error is None:
                    self._write(offset, memoryview(buffer)[:n])
            except BaseException as error:  # raised in the decompressing stage
                self._error = error
            finally:
                self._free.put(buffer)

    def _write(self, offset: int, data: memoryview) -> None:
        whole = len(data) - len(data) % ALIGN if offset % ALIGN == 0 else 0
        if whole and self._direct is not None:
            try:
                _write_all(self._direct, data[:whole], offset)
            except OSError as error:
                if error.errno != errno.EINVAL:  # alignment this device will not take
                    raise
                os.close(self._direct)
                self._direct = None
                _write_all(self._fd, data[:whole], offset)
        elif whole:
            _write_all(self._fd, data[:whole], offset)
        if whole < len(data):
            _write_all(self._fd, data[whole:], offset + whole)


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _fill(reader: Any, buffer: mmap.mmap, n: int) -> int:
    """Decompresses exactly `n` bytes into the start of `buffer`."""
    view = memoryview(buffer)
    filled = 0
    while filled < n:
        got = reader.readinto(view[filled:n])
        if not got:
            raise BackupIntegrityError("the archive ends inside an extent")
        filled += got
    return filled


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
