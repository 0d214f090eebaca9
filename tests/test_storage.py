"""Storage: pieces onto many files, a bounded pool of open files, recheck, the resume journal."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import SupportsIndex, overload

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.bencode import encode
from shoal.metainfo import Torrent, parse_info
from shoal.storage import files
from shoal.storage.files import PieceStorage, Span
from shoal.storage.resume import ResumeFile


def make_torrent(sizes: list[int], piece_length: int, seed: int = 0) -> tuple[Torrent, bytes]:
    """A torrent of files with these sizes (in ten folders) filled with seeded random data."""
    data = random.Random(seed).randbytes(sum(sizes))
    pieces = b"".join(
        hashlib.sha1(data[start : start + piece_length]).digest()
        for start in range(0, len(data), piece_length)
    )
    files = [
        {b"length": size, b"path": [f"d{number % 10}".encode(), f"f{number:06d}".encode()]}
        for number, size in enumerate(sizes)
    ]
    info = {b"files": files, b"name": b"many", b"piece length": piece_length, b"pieces": pieces}
    return parse_info(encode(info)), data


def piece_of(torrent: Torrent, data: bytes, index: int) -> bytes:
    """The bytes of piece index."""
    start = index * torrent.piece_length
    return data[start : start + torrent.piece_size(index)]


def write_all(storage: PieceStorage, data: bytes) -> None:
    """Write every piece of the torrent."""
    for index in range(storage.torrent.num_pieces):
        storage.write_piece(index, piece_of(storage.torrent, data, index))


def open_fds() -> int:
    """How many file descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


def naive_spans(storage: PieceStorage, offset: int, length: int) -> list[Span]:
    """Spans by walking every file: the obviously right, slow answer."""
    result = []
    for entry, path in zip(storage.torrent.files, storage.paths, strict=True):
        start = max(offset, entry.offset)
        stop = min(offset + length, entry.offset + entry.length)
        if stop > start:
            result.append(Span(path, start - entry.offset, stop - start))
    return result


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=30).filter(lambda sizes: sum(sizes) > 0),
    st.integers(1, 64),
    st.data(),
)
def test_spans_match_a_walk_over_every_file(tmp_path_factory, sizes, piece_length, data):
    torrent, _ = make_torrent(sizes, piece_length)
    storage = PieceStorage(torrent, tmp_path_factory.mktemp("spans"))
    offset = data.draw(st.integers(0, torrent.total_length))
    length = data.draw(st.integers(0, torrent.total_length - offset))
    assert storage.spans(offset, length) == naive_spans(storage, offset, length)


class CountingFiles(tuple):  # type: ignore[type-arg]
    """A torrent's file list that counts how many entries are looked at."""

    looked = 0

    def __iter__(self) -> Iterator[object]:
        for item in super().__iter__():
            CountingFiles.looked += 1
            yield item

    @overload
    def __getitem__(self, key: SupportsIndex) -> object: ...
    @overload
    def __getitem__(self, key: slice) -> tuple[object, ...]: ...
    def __getitem__(self, key: SupportsIndex | slice) -> object:
        CountingFiles.looked += 1
        return super().__getitem__(key)


def test_spans_and_recheck_look_at_each_file_a_few_times_not_once_per_piece(tmp_path):
    # 3,000 files of 5 bytes in 16-byte pieces: walking every file for every piece (the old
    # way) looks at about 3,000 x 940 entries.
    torrent, data = make_torrent([5] * 3000, 16)
    storage = PieceStorage(torrent, tmp_path)
    write_all(storage, data)
    counted = PieceStorage(
        dataclasses.replace(torrent, files=CountingFiles(torrent.files)), tmp_path
    )
    CountingFiles.looked = 0
    for index in range(torrent.num_pieces):
        counted.spans(index * torrent.piece_length, torrent.piece_size(index))
    assert CountingFiles.looked < 4 * (len(torrent.files) + torrent.num_pieces)
    CountingFiles.looked = 0
    assert all(counted.recheck())
    assert CountingFiles.looked < 10 * (len(torrent.files) + torrent.num_pieces)


def test_recheck_finds_good_bad_and_missing_pieces(tmp_path):
    torrent, data = make_torrent([100, 0, 37, 250, 1], 32)
    storage = PieceStorage(torrent, tmp_path)
    write_all(storage, data)
    storage.close()
    # Corrupt a byte of the third file, and remove the last one.
    third = storage.paths[2]
    assert third is not None
    third.write_bytes(b"\xff" + third.read_bytes()[1:])
    last = storage.paths[4]
    assert last is not None
    last.unlink()
    have = PieceStorage(torrent, tmp_path).recheck()
    spoiled = {100 // 32, (torrent.total_length - 1) // 32}
    assert [i for i in range(torrent.num_pieces) if not have[i]] == sorted(spoiled)
    assert PieceStorage(torrent, tmp_path).recheck(candidates=[0, 1], workers=1) == bytearray(
        [1, 1] + [0] * (torrent.num_pieces - 2)
    )


def test_recheck_stops_promptly_and_reports_what_it_verified(tmp_path):
    torrent, data = make_torrent([7] * 400, 16)
    storage = PieceStorage(torrent, tmp_path)
    write_all(storage, data)
    stop = threading.Event()
    hashed = []
    check_piece = storage.check_piece

    def check_and_stop(index: int, piece: bytes | bytearray) -> bool:
        hashed.append(index)
        if len(hashed) == 5:
            stop.set()  # as SIGTERM's handler would, from another thread
        return check_piece(index, piece)

    storage.check_piece = check_and_stop  # type: ignore[method-assign]
    with pytest.raises(files.RecheckStopped) as caught:
        storage.recheck(workers=2, stop=stop)
    # Each worker finishes at most the piece it is on; nothing unchecked is reported verified.
    assert 5 <= len(hashed) <= 6
    assert sorted(i for i, good in enumerate(caught.value.have) if good) == sorted(hashed)
    assert f"after {len(hashed)} of {torrent.num_pieces} pieces" in str(caught.value)
    # Stopped before it began: nothing is hashed at all.
    hashed.clear()
    with pytest.raises(files.RecheckStopped):
        storage.recheck(stop=stop)
    assert hashed == []


def test_a_pool_of_8_serves_100_files_with_8_handles(tmp_path):
    torrent, data = make_torrent([300] * 100, 256)
    storage = PieceStorage(torrent, tmp_path, open_files=8)
    before = open_fds()
    storage.allocate()
    assert open_fds() <= before + 8
    write_all(storage, data)
    assert open_fds() <= before + 8
    assert all(storage.recheck(workers=2))
    for index in reversed(range(torrent.num_pieces)):
        assert storage.read_piece(index) == piece_of(torrent, data, index)
    assert open_fds() <= before + 8
    storage.close()
    assert open_fds() == before


SEED_UNDER_A_LOW_LIMIT = """
import resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_storage import make_torrent, piece_of, write_all
from shoal.storage.files import PieceStorage

resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
torrent, data = make_torrent([10] * 1500, 64)
storage = PieceStorage(torrent, Path(sys.argv[1]))
storage.allocate()
write_all(storage, data)
for index in range(torrent.num_pieces):
    assert storage.read_block(index, 0, 64) == piece_of(torrent, data, index)
print("served", len(torrent.files), "files")
"""


def test_1500_files_are_written_and_served_under_a_limit_of_256_handles(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SEED_UNDER_A_LOW_LIMIT, str(tmp_path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "served 1500 files"


def test_a_file_in_use_is_never_closed_under_its_user(tmp_path):
    names = [tmp_path / f"f{number}" for number in range(6)]
    for number, name in enumerate(names):
        name.write_bytes(bytes([number]) * 10)
    pool = files.FilePool(2)
    with pool.use(names[0], write=False) as first:
        for name in names[1:]:
            with pool.use(name, write=False) as fd:
                assert os.pread(fd, 1, 0) == os.pread(fd, 1, 5)
        # Four other files went through a pool of two, yet the one in use stayed open.
        assert os.pread(first, 10, 0) == bytes(10)
        assert len(pool) == 2
        # Upgraded to read-write while a reader holds the read-only handle.
        with pool.use(names[0], write=True) as writable:
            os.pwrite(writable, b"\x07", 0)
            assert os.pread(first, 1, 0) == b"\x07"
        assert os.pread(first, 1, 0) == b"\x07"
    assert len(pool) <= 2
    pool.close()
    assert len(pool) == 0


def test_threads_share_a_small_pool_and_cache_without_errors(tmp_path):
    torrent, data = make_torrent([50] * 200, 64)
    storage = PieceStorage(torrent, tmp_path, open_files=4)
    storage.allocate()
    errors: list[BaseException] = []
    pieces = list(range(torrent.num_pieces))

    def writer(share: list[int]) -> None:
        try:
            for index in share:
                storage.write_piece(index, piece_of(torrent, data, index))
        except BaseException as exc:
            errors.append(exc)

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(400):
                index = rng.randrange(torrent.num_pieces)
                begin = rng.randrange(torrent.piece_size(index))
                block = storage.read_block(index, begin, 7)
                assert len(block) == min(7, torrent.piece_size(index) - begin)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(pieces[n::4],)) for n in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    readers = [threading.Thread(target=reader, args=(n,)) for n in range(6)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join()
    assert errors == []
    for index in pieces:
        assert bytes(storage.read_block(index, 0, torrent.piece_length)) == piece_of(
            torrent, data, index
        )
    storage.read_block(0, 0, 4)
    cached = storage.cached_block(0, 2, 3)
    assert cached is not None and bytes(cached) == data[2:5]


def test_the_page_cache_serves_blocks_of_open_files_only(tmp_path):
    torrent, data = make_torrent([50] * 40, 64)
    storage = PieceStorage(torrent, tmp_path, open_files=4)
    storage.allocate()
    for index in range(torrent.num_pieces):
        storage.write_piece(index, piece_of(torrent, data, index))
    # The last pieces' files are open and in the page cache: read without waiting.
    last = torrent.num_pieces - 1
    cached = storage.cached_block(last, 0, 4)
    assert cached is not None and bytes(cached) == data[last * 64 : last * 64 + 4]
    # The first file was closed long ago: opening it is left to a thread.
    assert storage.cached_block(0, 0, 4) is None


def test_blocks_not_in_memory_are_left_to_a_thread(tmp_path):
    torrent, data = make_torrent([50] * 40, 64)
    storage = PieceStorage(torrent, tmp_path)
    storage.allocate()
    for index in range(torrent.num_pieces):
        storage.write_piece(index, piece_of(torrent, data, index))
    storage._nowait = False  # as on a file system that cannot tell what is in memory
    assert storage.cached_block(0, 0, 4) is None
    storage.read_block(0, 0, 4)  # what the thread does
    cached = storage.cached_block(0, 2, 3)
    assert cached is not None and bytes(cached) == data[2:5]


def test_a_64_folder_deep_path_is_stored(tmp_path):
    components = [b"d"] * 63 + [b"file"]
    info = {
        b"files": [{b"length": 3, b"path": components}],
        b"name": b"deep",
        b"piece length": 16,
        b"pieces": hashlib.sha1(b"abc").digest(),
    }
    storage = PieceStorage(parse_info(encode(info)), tmp_path)
    storage.allocate()
    storage.write_piece(0, b"abc")
    assert tmp_path.joinpath("deep", *["d"] * 63, "file").read_bytes() == b"abc"


@pytest.fixture
def resume(tmp_path: Path) -> tuple[PieceStorage, ResumeFile, bytes]:
    """Storage with every piece written, and its resume record in tmp_path/state."""
    torrent, data = make_torrent([40] * 10, 16)
    storage = PieceStorage(torrent, tmp_path / "data")
    storage.allocate()
    write_all(storage, data)
    return storage, ResumeFile(torrent.info_hash, storage.root, tmp_path / "state"), data


def verified_after_restart(storage: PieceStorage, record: ResumeFile) -> list[int]:
    """The pieces a new process would load as verified from record's files."""
    fresh = ResumeFile(storage.torrent.info_hash, storage.root, record.path.parent)
    have = fresh.load(storage)
    assert have is not None and len(have) == storage.torrent.num_pieces
    return [index for index, good in enumerate(have) if good]


def test_pieces_recorded_after_the_last_save_survive_a_restart(resume):
    storage, record, _ = resume
    num = storage.torrent.num_pieces
    record.save(bytearray(num))
    for index in (3, 0, 24):
        record.record_piece(index)
    # A new process: the record says nothing verified, the journal says three pieces were.
    assert verified_after_restart(storage, record) == [0, 3, 24]


def test_save_folds_the_journal_even_when_have_lags_behind(resume):
    storage, record, _ = resume
    num = storage.torrent.num_pieces
    record.save(bytearray(num))
    record.record_piece(5)  # written and recorded by a worker; the swarm does not know yet
    record.save(bytearray(num))
    assert record.journal_path.stat().st_size == 0
    assert verified_after_restart(storage, record) == [5]


def test_a_torn_entry_and_indexes_past_the_torrent_are_ignored(resume):
    storage, record, _ = resume
    num = storage.torrent.num_pieces
    record.save(bytearray(num))
    with record.journal_path.open("ab") as journal:
        journal.write(
            (2).to_bytes(4, "big") + num.to_bytes(4, "big") + (2**32 - 1).to_bytes(4, "big")
        )
        journal.write(b"\x00\x00")  # a torn last entry
    assert verified_after_restart(storage, record) == [2]
    # Appending after a torn entry starts at an entry boundary again.
    record.record_piece(7)
    assert record.journal_path.stat().st_size == 4 * 4
    assert verified_after_restart(storage, record) == [2, 7]


def test_a_journal_without_a_valid_record_is_dropped(resume):
    storage, record, _ = resume
    record.record_piece(1)
    assert record.load(storage) is None
    assert not record.journal_path.exists() or record.journal_path.stat().st_size == 0
    record.save(bytearray(storage.torrent.num_pieces))
    assert record.load(storage) == bytearray(storage.torrent.num_pieces)


def test_pieces_of_a_shrunk_file_are_forgotten_on_disk_too(resume):
    storage, record, _ = resume
    num = storage.torrent.num_pieces
    record.save(bytearray([1]) * num)
    first = storage.paths[0]
    assert first is not None
    os.truncate(first, 10)
    assert verified_after_restart(storage, record) == list(range(3, num))
    # Allocating gives the file its size back; the record must not trust its zeros.
    storage.allocate()
    assert verified_after_restart(storage, record) == list(range(3, num))


def test_threads_record_pieces_at_once(resume):
    storage, record, _ = resume
    record.save(bytearray(storage.torrent.num_pieces))
    threads = [
        threading.Thread(target=lambda n=n: [record.record_piece(i) for i in range(n, 25, 5)])
        for n in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert verified_after_restart(storage, record) == list(range(25))


RECORD_THEN_WAIT = """
import sys, threading
from pathlib import Path
from shoal.storage.resume import ResumeFile
record = ResumeFile(bytes.fromhex(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
record.save(bytearray(int(sys.argv[4])))
for index in (4, 9, 13):
    record.record_piece(index)
print("recorded", flush=True)
threading.Event().wait()
"""


def test_kill_9_right_after_record_piece_loses_nothing(resume):
    storage, record, _ = resume
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            RECORD_THEN_WAIT,
            storage.torrent.info_hash.hex(),
            str(storage.root),
            str(record.path.parent),
            str(storage.torrent.num_pieces),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "recorded\n"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert verified_after_restart(storage, record) == [4, 9, 13]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120), st.binary(max_size=64))
def test_any_record_and_journal_bytes_load_as_none_or_a_bitfield(tmp_path_factory, raw, journal):
    torrent, _ = make_torrent([40] * 10, 16)
    root = tmp_path_factory.mktemp("data")
    storage = PieceStorage(torrent, root)
    storage.allocate()
    record = ResumeFile(torrent.info_hash, root, root / "state")
    record.path.parent.mkdir()
    if raw[:1] == b"\x00":
        # Half the time a record that is valid up to its pieces, so the journal is read too.
        raw = encode({b"info-hash": torrent.info_hash, b"pieces": raw[1:26].ljust(25, b"\x00")})
    record.path.write_bytes(raw)
    record.journal_path.write_bytes(journal)
    have = record.load(storage)
    assert have is None or (len(have) == torrent.num_pieces and set(have) <= {0, 1})
