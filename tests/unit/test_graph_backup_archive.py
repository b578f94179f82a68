"""The backup archive (`beatless.graphs.node.backup`): a file's bytes and holes survive
pack -> unpack exactly, and an archive that is not what was recorded is refused."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from beatless.graphs.node import backup

MIB = 2**20


def sparse_file(path: Path, pieces: list[tuple[int, bytes]], size: int) -> Path:
    with path.open("wb") as out:
        out.truncate(size)
        for offset, data in pieces:
            out.seek(offset)
            out.write(data)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


@pytest.fixture
def source(tmp_path: Path) -> Path:
    # Data regions larger than a chunk, holes between them, an extent that ends inside a
    # block and a size that is no multiple of a block: every write path of the restore.
    noise = os.urandom(9 * MIB + 123)
    text = b"company,revenue\n" * 700_000
    return sparse_file(
        tmp_path / "graph.lbdb",
        [(0, noise), (24 * MIB, text), (48 * MIB + 4096 * 3, b"tail" * 1000 + b"x")],
        48 * MIB + 4096 * 3 + 5_000,
    )


@pytest.mark.parametrize("via", ["stream", "file"])
def test_a_restored_file_has_the_same_bytes_and_keeps_its_holes(
    source: Path, tmp_path: Path, via: str
) -> None:
    archive = tmp_path / "graph.lbbk"
    packed = backup.pack(source, archive)
    assert packed.sha256 == digest(archive) and packed.stored_bytes == archive.stat().st_size
    assert packed.logical_bytes == source.stat().st_size
    restored = tmp_path / "restored.lbdb"
    if via == "stream":
        with archive.open("rb") as raw:
            size = backup.unpack_stream(raw, restored, expected_sha256=packed.sha256)
    else:
        size = backup.unpack(archive, restored, expected_sha256=packed.sha256)
    assert size == source.stat().st_size == restored.stat().st_size
    assert digest(restored) == digest(source)
    assert allocated(restored) < size // 2  # the holes are holes again, not written zeros


def test_an_empty_file_round_trips(tmp_path: Path) -> None:
    empty = sparse_file(tmp_path / "empty", [], 0)
    packed = backup.pack(empty, tmp_path / "a")
    with (tmp_path / "a").open("rb") as raw:
        assert backup.unpack_stream(raw, tmp_path / "b", expected_sha256=packed.sha256) == 0
    assert (tmp_path / "b").read_bytes() == b""


def damaged(archive: bytes) -> dict[str, bytes]:
    flipped = bytearray(archive)
    flipped[len(flipped) // 2] ^= 0xFF
    return {
        "bytes appended": archive + b"trailing",
        "a byte flipped": bytes(flipped),
        "cut short": archive[: len(archive) // 2],
        "not an archive": b"corrupt",
    }


@pytest.mark.parametrize("case", list(damaged(b"x" * 10)))
def test_an_archive_that_is_not_the_recorded_one_is_refused(source: Path, tmp_path: Path, case: str) -> None:
    archive = tmp_path / "graph.lbbk"
    packed = backup.pack(source, archive)
    body = damaged(archive.read_bytes())[case]
    with pytest.raises(backup.BackupIntegrityError):
        backup.unpack_stream(io.BytesIO(body), tmp_path / "restored", expected_sha256=packed.sha256)
    bad = tmp_path / "bad.lbbk"
    bad.write_bytes(body)
    with pytest.raises(backup.BackupIntegrityError, match="checksum"):
        backup.unpack(bad, tmp_path / "never", expected_sha256=packed.sha256)
    assert not (tmp_path / "never").exists()  # a file archive is verified before anything is written


def test_the_right_archive_under_a_wrong_recorded_digest_is_refused(source: Path, tmp_path: Path) -> None:
    archive = tmp_path / "graph.lbbk"
    backup.pack(source, archive)
    with archive.open("rb") as raw, pytest.raises(backup.BackupIntegrityError, match="checksum"):
        backup.unpack_stream(raw, tmp_path / "restored", expected_sha256="0" * 64)


class FailingSource(io.RawIOBase):
    """An S3 body whose connection drops after `good` bytes."""

    def __init__(self, data: bytes, good: int) -> None:
        self.data, self.good, self.position = data, good, 0

    def read(self, n: int = -1) -> bytes:
        if self.position >= self.good:
            raise ConnectionResetError("connection reset by peer")
        chunk = self.data[self.position : min(self.good, self.position + n)]
        self.position += len(chunk)
        return chunk


def test_a_source_that_fails_mid_stream_raises_its_error(source: Path, tmp_path: Path) -> None:
    archive = tmp_path / "graph.lbbk"
    packed = backup.pack(source, archive)
    body = archive.read_bytes()
    with pytest.raises(ConnectionResetError):
        backup.unpack_stream(
            FailingSource(body, len(body) // 3), tmp_path / "restored", expected_sha256=packed.sha256
        )
