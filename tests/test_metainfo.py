"""Metainfo: torrents created, parsed and checked against mktorrent and libtorrent; magnets."""

import contextlib
import hashlib
import itertools
import os
import shutil
import subprocess
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

import libtorrent as lt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shoal.bencode import encode
from shoal.metainfo import (
    FileEntry,
    Magnet,
    MetainfoError,
    create_torrent,
    is_magnet,
    load_torrent,
    make_magnet,
    parse_info,
    parse_magnet,
    parse_peer,
    parse_torrent,
    resolve_inside,
    safe_components,
)
from shoal.metainfo.torrent import _default_piece_length

KiB = 1024
MiB = 1024 * KiB
PIECE = 16 * KiB


def torrent_bytes(info: dict, **outer: object) -> bytes:
    """A .torrent file for info, given the right number of (dummy) piece hashes."""
    info = {b"name": b"demo", b"piece length": PIECE, **info}
    if b"pieces" not in info:
        files = info.get(b"files", [{b"length": info.get(b"length", 0)}])
        total = sum(f.get(b"length", 0) for f in files if isinstance(f.get(b"length"), int))
        info[b"pieces"] = b"\x01" * 20 * (-(-total // info[b"piece length"]))
    return encode({**{k.replace("_", "-"): v for k, v in outer.items()}, b"info": info})


def sha1_pieces(data: bytes, piece_length: int) -> bytes:
    """The concatenated SHA-1 of each piece of data."""
    return b"".join(
        hashlib.sha1(data[start : start + piece_length]).digest()
        for start in range(0, len(data), piece_length)
    )


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, bytes]:
    """A folder whose files' sizes make pieces span file boundaries; returns it and its data."""
    root = tmp_path / "album"
    layout = {
        "b/deep/z.bin": 40_000,
        "a-b": 7,
        "a/b": 20_000,
        "a/empty": 0,
        ".hidden": 1234,
        "Z": PIECE,
    }
    for name, size in layout.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(os.urandom(size))
    (root / "empty-dir").mkdir()
    (tmp_path / "outside").write_bytes(b"must not be shared")
    (root / "link-to-file").symlink_to(tmp_path / "outside")
    (root / "link-to-dir").symlink_to(tmp_path)
    # Sorted by path bytes like mktorrent: "-" < "/" puts "a-b" before "a/b".
    order = [".hidden", "Z", "a-b", "a/b", "a/empty", "b/deep/z.bin"]
    return root, b"".join((root / name).read_bytes() for name in order)


def test_single_file_round_trip(tmp_path):
    data = os.urandom(3 * PIECE + 123)
    (tmp_path / "movie.mkv").write_bytes(data)
    torrent = create_torrent(
        tmp_path / "movie.mkv",
        trackers=["http://tracker.example/announce"],
        piece_length=PIECE,
        comment="hello",
    )
    assert torrent.name == "movie.mkv"
    assert not torrent.is_multi_file
    assert torrent.files == (FileEntry(("movie.mkv",), 0, len(data)),)
    assert torrent.total_length == len(data)
    assert torrent.piece_hashes == sha1_pieces(data, PIECE)
    assert torrent.num_pieces == 4
    assert [torrent.piece_size(i) for i in range(4)] == [PIECE, PIECE, PIECE, 123]
    assert torrent.piece_hash(3) == hashlib.sha1(data[3 * PIECE :]).digest()
    assert torrent.info_hash == hashlib.sha1(torrent.info_bytes).digest()
    assert torrent.info_hash_hex == torrent.info_hash.hex()
    assert torrent.trackers == (("http://tracker.example/announce",),)
    assert torrent.comment == "hello"
    assert torrent.created_by == "shoal 0.1.0"
    assert parse_torrent(torrent.to_bytes()) == torrent
    with pytest.raises(IndexError):
        torrent.piece_size(4)
    with pytest.raises(IndexError):
        torrent.piece_hash(-1)


def test_multi_file_round_trip(folder):
    root, data = folder
    torrent = create_torrent(root, piece_length=PIECE, private=True, workers=3)
    assert torrent.is_multi_file
    assert [file.path for file in torrent.files] == [
        ("album", ".hidden"),
        ("album", "Z"),
        ("album", "a-b"),
        ("album", "a", "b"),
        ("album", "a", "empty"),
        ("album", "b", "deep", "z.bin"),
    ]
    sizes = [1234, PIECE, 7, 20_000, 0, 40_000]
    assert [file.length for file in torrent.files] == sizes
    assert [file.offset for file in torrent.files] == [0, *itertools.accumulate(sizes)][:-1]
    assert torrent.total_length == len(data)
    assert torrent.piece_hashes == sha1_pieces(data, PIECE)
    assert torrent.private
    assert torrent.info_hash == hashlib.sha1(torrent.info_bytes).digest()
    assert parse_torrent(torrent.to_bytes()) == torrent


@pytest.mark.parametrize("workers", [1, 2, 7, 64])
def test_worker_count_does_not_change_hashes(folder, workers):
    root, data = folder
    torrent = create_torrent(root, piece_length=PIECE, workers=workers)
    assert torrent.piece_hashes == sha1_pieces(data, PIECE)


def test_trackers_become_announce_and_one_tier_each(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    torrent = create_torrent(
        tmp_path / "f", trackers=["http://a/", "udp://b:1"], web_seeds=["http://seed/f"]
    )
    assert torrent.trackers == (("http://a/",), ("udp://b:1",))
    assert torrent.web_seeds == ("http://seed/f",)
    saved = lt.bdecode(torrent.to_bytes())
    assert saved[b"announce"] == b"http://a/"
    assert saved[b"announce-list"] == [[b"http://a/"], [b"udp://b:1"]]
    assert saved[b"url-list"] == [b"http://seed/f"]
    assert saved[b"created by"] == b"shoal 0.1.0"
    assert isinstance(saved[b"creation date"], int)


def test_libtorrent_agrees_on_info_hash_and_files(folder):
    root, _ = folder
    torrent = create_torrent(root, piece_length=PIECE)
    info = lt.torrent_info(lt.bdecode(torrent.to_bytes()))
    assert str(info.info_hashes().v1) == torrent.info_hash_hex
    assert info.num_pieces() == torrent.num_pieces
    layout = info.layout()
    assert [layout.file_path(i) for i in range(info.num_files())] == [
        os.path.join(*file.path) for file in torrent.files
    ]


def test_libtorrent_hybrid_torrent_with_padding_files_parses(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / "src" / "d").mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / "d" / name).write_bytes(os.urandom(30_000))
    # libtorrent 2 makes v1+v2 hybrids by default, with BEP 47 padding files between files.
    creator = lt.create_torrent(lt.list_files(str(tmp_path / "src" / "d")), PIECE)
    lt.set_piece_hashes(creator, str(tmp_path / "src"))
    torrent = parse_torrent(lt.bencode(creator.generate()))
    padding = [file for file in torrent.files if file.padding]
    assert len(padding) >= 2
    assert len({file.path for file in padding}) < len(padding)  # the same .pad path twice
    assert [file.path for file in torrent.files if not file.padding] == [
        ("d", "a"),
        ("d", "b"),
        ("d", "c"),
    ]
    real = lt.torrent_info(lt.bencode(creator.generate()))
    assert str(real.info_hashes().v1) == torrent.info_hash_hex


@pytest.mark.skipif(shutil.which("mktorrent") is None, reason="mktorrent is not installed")
@pytest.mark.parametrize("multi_file", [True, False])
def test_mktorrent_torrent_matches_shoal(folder, tmp_path, multi_file):
    root, _ = folder
    # mktorrent follows symlinks (and loops on one to a parent); shoal skips them.
    (root / "link-to-file").unlink()
    (root / "link-to-dir").unlink()
    target = root if multi_file else root / "b" / "deep" / "z.bin"
    output = tmp_path / "out.torrent"
    subprocess.run(
        [
            "mktorrent", "-l", "15", "-p", "-t", "2",
            "-a", "http://one/announce", "-a", "udp://two:80",
            "-w", "http://seed/", "-c", "made by mktorrent",
            "-o", str(output), str(target),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    theirs = load_torrent(output)
    ours = create_torrent(target, piece_length=32 * KiB)
    assert theirs.piece_hashes == ours.piece_hashes
    assert theirs.files == ours.files
    assert theirs.is_multi_file == multi_file
    assert theirs.private
    assert theirs.trackers == (("http://one/announce",), ("udp://two:80",))
    assert theirs.web_seeds == ("http://seed/",)
    assert theirs.comment == "made by mktorrent"
    assert theirs.info_hash == hashlib.sha1(theirs.info_bytes).digest()
    assert theirs.info_bytes in output.read_bytes()


def test_announce_list_private_and_url_list_are_kept():
    data = torrent_bytes(
        {b"length": 5, b"private": 1},
        announce=b"http://ignored/",
        announce_list=[[b"http://a/", b"http://b/"], [], [b"udp://c:1"]],
        url_list=b"http://seed/file",
    )
    torrent = parse_torrent(data)
    assert torrent.trackers == (("http://a/", "http://b/"), ("udp://c:1",))
    assert torrent.web_seeds == ("http://seed/file",)
    assert torrent.private
    again = lt.bdecode(torrent.to_bytes())
    assert again[b"announce-list"] == [[b"http://a/", b"http://b/"], [b"udp://c:1"]]
    assert parse_torrent(torrent.to_bytes()) == torrent


def test_announce_alone_is_one_tier_and_broken_extras_are_ignored():
    data = torrent_bytes(
        {b"length": 5},
        announce=b"http://only/",
        announce_list=b"not a list",
        url_list=[b"http://s1/", 7, b"\xff"],
        comment=3,
    )
    torrent = parse_torrent(data)
    assert torrent.trackers == (("http://only/",),)
    assert torrent.web_seeds == ("http://s1/",)
    assert torrent.comment is None
    assert not torrent.private


def test_utf8_name_and_path_keys_are_preferred():
    data = torrent_bytes(
        {
            b"name": b"\xe9t\xe9",
            b"name.utf-8": "été".encode(),
            b"files": [{b"length": 3, b"path": [b"\xff"], b"path.utf-8": [b"ok"]}],
        }
    )
    assert parse_torrent(data).files == (FileEntry(("été", "ok"), 0, 3),)
    fallback = torrent_bytes({b"name.utf-8": 5, b"length": 1})
    assert parse_torrent(fallback).name == "demo"


def test_info_bytes_are_kept_even_with_unknown_keys():
    info = {b"length": 1, b"name": b"x", b"piece length": PIECE, b"pieces": b"\0" * 20}
    info_bytes = encode({**info, b"x-custom": [1, {b"k": b"v"}]})
    torrent = parse_torrent(b"d4:info" + info_bytes + b"e")
    assert torrent.info_bytes == info_bytes
    assert torrent.info_hash == hashlib.sha1(info_bytes).digest()
    assert torrent.to_bytes() == b"d4:info" + info_bytes + b"e"


def test_parse_info_takes_metadata_from_a_magnet(tmp_path):
    (tmp_path / "f").write_bytes(os.urandom(100))
    made = create_torrent(tmp_path / "f", trackers=["http://a/"])
    magnet = parse_magnet(made.magnet())
    torrent = parse_info(made.info_bytes, trackers=magnet.trackers)
    assert torrent.info_hash == magnet.info_hash
    assert torrent.trackers == (("http://a/",),)
    assert torrent.name == magnet.display_name == "f"
    assert parse_info(made.info_bytes, trackers=[["x", "y"]]).trackers == (("x", "y"),)
    with pytest.raises(MetainfoError, match="not a bencoded dictionary"):
        parse_info(b"le")
    with pytest.raises(MetainfoError, match="not valid bencode"):
        parse_info(made.info_bytes + b"x")


UNSAFE_PATHS = [
    ([b".."], ".."),
    ([b"..", b"etc", b"passwd"], "../etc/passwd"),
    ([b"a", b"..", b"..", b"b"], "a/../../b"),
    ([b"."], "."),
    ([b"/etc/passwd"], "/etc/passwd"),
    ([b"a", b""], "a/"),
    ([b"a/b"], "a/b"),
    ([b"a\\..\\b"], "a\\..\\b"),
    ([b"a\x00b"], "a\\x00b"),
    ([b"C:"], "C:"),
    ([b"c:\\windows"], "c:\\windows"),
    ([b"\xffname"], "\\xffname"),
]


@pytest.mark.parametrize(("components", "shown"), UNSAFE_PATHS)
def test_unsafe_file_paths_are_rejected_by_name(components, shown):
    data = torrent_bytes({b"files": [{b"length": 1, b"path": components}]})
    with pytest.raises(MetainfoError) as caught:
        parse_torrent(data)
    message = str(caught.value)
    assert "file path" in message
    assert message.endswith(f": {shown}")


@pytest.mark.parametrize("name", [b"..", b"", b"a/b", b"/abs", b"\xff"])
def test_unsafe_names_are_rejected(name):
    with pytest.raises(MetainfoError, match="file path"):
        parse_torrent(torrent_bytes({b"name": name, b"length": 1}))


def test_empty_path_is_rejected():
    data = torrent_bytes({b"files": [{b"length": 1, b"path": []}]})
    with pytest.raises(MetainfoError, match="empty path"):
        parse_torrent(data)


def test_safe_components_accepts_ordinary_names():
    assert safe_components([b"Music", "été", b"..hidden", b"a..b", b"xy:z"]) == (
        "Music",
        "été",
        "..hidden",
        "a..b",
        "xy:z",
    )
    with pytest.raises(MetainfoError, match="not UTF-8"):
        safe_components([os.fsdecode(b"\xff")])


def test_resolve_inside_catches_symlink_escapes(tmp_path):
    root = tmp_path / "downloads"
    (root / "sub").mkdir(parents=True)
    (root / "escape").symlink_to(tmp_path)
    assert resolve_inside(root, ("sub", "file")) == root / "sub" / "file"
    assert resolve_inside(root, ("new", "file")) == root / "new" / "file"
    with pytest.raises(MetainfoError, match="escape/file"):
        resolve_inside(root, ("escape", "file"))
    with pytest.raises(MetainfoError, match="outside the download folder"):
        resolve_inside(root, ("..", "x"))


def good_info(**changes: object) -> dict:
    """A valid two-file info dictionary with some fields replaced or (if None) removed."""
    info = {
        b"name": b"demo",
        b"piece length": PIECE,
        b"files": [{b"length": PIECE, b"path": [b"a"]}, {b"length": 1, b"path": [b"b"]}],
        b"pieces": b"\x01" * 40,
    }
    for key, value in changes.items():
        info[key.replace("_", " ").encode()] = value
    return {k: v for k, v in info.items() if v is not None}


@pytest.mark.parametrize(
    ("info", "problem"),
    [
        (good_info(piece_length=0), "invalid piece length: 0"),
        (good_info(piece_length=-PIECE), "invalid piece length"),
        (good_info(piece_length=b"16384"), "invalid piece length"),
        (good_info(piece_length=128 * MiB), "invalid piece length"),
        (good_info(piece_length=None), "invalid piece length: None"),
        (good_info(pieces=b"\x01" * 39), "whole number"),
        (good_info(pieces=b"\x01" * 60), "3 piece hashes but its 16385 bytes make 2 pieces"),
        (good_info(pieces=None), "whole number"),
        (good_info(name=None), "no name"),
        (good_info(name=[b"x"]), "no name"),
        (good_info(files=[]), "no files"),
        (good_info(files=b"a"), "no files"),
        (good_info(files=[b"a"]), "not a dictionary"),
        (good_info(files=[{b"length": -1, b"path": [b"a"]}]), "invalid length: -1"),
        (good_info(files=[{b"path": [b"a"]}]), "invalid length: None"),
        (good_info(files=[{b"length": 1, b"path": b"a"}]), "without a valid path"),
        (good_info(files=[{b"length": 1, b"path": [1]}]), "without a valid path"),
        (
            good_info(files=[{b"length": 1, b"path": [b"x"]}, {b"length": 1, b"path": [b"x"]}]),
            "lists the file demo/x twice",
        ),
        (
            good_info(
                files=[{b"length": 1, b"path": [b"x"]}, {b"length": 1, b"path": [b"x", b"y"]}]
            ),
            "both a file and a folder: demo/x/y",
        ),
        (
            good_info(
                files=[{b"length": 1, b"path": [b"x", b"y"]}, {b"length": 1, b"path": [b"x"]}]
            ),
            "both a file and a folder: demo/x",
        ),
        (good_info(files=[{b"length": 0, b"path": [b"a"]}] * 100_001), "more than the 100000"),
        ({b"name": b"v2", b"piece length": PIECE, b"meta version": 2}, "v2 only"),
    ],
)
def test_invalid_info_is_rejected(info, problem):
    with pytest.raises(MetainfoError, match=problem):
        parse_torrent(encode({b"info": info}))


def empty_files_torrent(paths: Iterable[Iterable[bytes]]) -> bytes:
    """A torrent of empty files at these paths, bencoded by hand so huge lists are cheap to make."""
    entries = b"".join(
        b"d6:lengthi0e4:pathl" + b"".join(b"%d:%s" % (len(part), part) for part in path) + b"ee"
        for path in paths
    )
    return b"d4:infod5:filesl" + entries + b"e4:name4:demo12:piece lengthi16384e6:pieces0:ee"


def test_a_path_of_1000_folders_is_refused_in_one_sentence():
    with pytest.raises(MetainfoError) as caught:
        parse_torrent(empty_files_torrent([[b"d"] * 999 + [b"f"]]))
    message = str(caught.value)
    assert message.startswith("the torrent has a file path of 1000 parts, more than the 64 shoal")
    assert message.endswith(": " + "d/" * 64 + "...")
    assert "\n" not in message


def test_a_60_kb_torrent_with_a_20000_part_path_costs_little_to_refuse():
    data = empty_files_torrent([[b"d"] * 20_000])
    assert len(data) < 61_000
    tracemalloc.start()
    try:
        with pytest.raises(MetainfoError, match="20000 parts"):
            parse_torrent(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB


def test_paths_of_64_parts_and_4096_bytes_are_the_limits():
    longest = [b"a" * 2047, b"b" * 2048]  # 4096 bytes with the separator
    deepest = [b"d"] * 64
    torrent = parse_torrent(empty_files_torrent([longest, deepest]))
    assert [len(file.path) for file in torrent.files] == [3, 65]  # the torrent's name first
    with pytest.raises(MetainfoError, match="of 4097 bytes, more than the 4096"):
        parse_torrent(empty_files_torrent([[b"a" * 2048, b"b" * 2048]]))
    with pytest.raises(MetainfoError, match="of 65 parts, more than the 64"):
        parse_torrent(empty_files_torrent([[b"d"] * 65]))
    with pytest.raises(MetainfoError, match="a file path of 65 parts"):
        safe_components(["d"] * 65)


def test_all_paths_of_a_torrent_together_are_bounded():
    # 16,000 files 64 parts deep: each path is fine, together they pass a million parts.
    deep = ([b"d"] * 63 + [b"f%05d" % number] for number in range(16_000))
    with pytest.raises(MetainfoError, match="more than the 1000000 parts in all"):
        parse_torrent(empty_files_torrent(deep))
    # 4,500 files of 64 parts of 60 bytes: each path is 3,904 bytes, together over 16 MiB.
    long = ([bytes([65 + number % 26]) * 60] * 63 + [b"f%057d" % number] for number in range(4_500))
    with pytest.raises(MetainfoError, match="more than the 16 MiB in all"):
        parse_torrent(empty_files_torrent(long))


def test_checking_deep_paths_for_clashes_takes_memory_in_proportion_to_them():
    # 1,000 files, each 64 parts deep in a folder of its own: a set of every folder of every
    # file (the old check) holds 1,000 x 62 tuples of 33 parts on average, about 20 MB.
    paths = [[b"%d" % number] + [b"d"] * 62 + [b"f"] for number in range(1_000)]
    data = empty_files_torrent(paths)
    tracemalloc.start()
    try:
        torrent = parse_torrent(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(torrent.files) == 1_000
    assert peak < 8 * MiB


small_paths = st.lists(
    st.lists(st.sampled_from([b"a", b"b"]), min_size=1, max_size=3), min_size=1, max_size=6
)


@given(small_paths)
def test_clashing_paths_are_found_whatever_their_order(paths):
    files = [tuple(path) for path in paths]
    folders = {path[:end] for path in files for end in range(1, len(path))}
    clash = len(set(files)) < len(files) or any(path in folders for path in files)
    try:
        parse_torrent(empty_files_torrent(paths))
    except MetainfoError as error:
        assert clash, error
        assert "twice" in str(error) or "both a file and a folder" in str(error)
    else:
        assert not clash


path_parts = st.text(alphabet="abé", min_size=1, max_size=100).map(str.encode)
deep_paths = st.integers(1, 90).flatmap(lambda n: st.lists(path_parts, min_size=n, max_size=n))


@given(st.lists(deep_paths, min_size=1, max_size=3))
def test_any_path_lists_parse_within_the_bounds_or_raise_metainfo_error(paths):
    try:
        torrent = parse_torrent(empty_files_torrent(paths))
    except MetainfoError:
        return
    for file in torrent.files:
        assert len(file.path) <= 65
        assert len("/".join(file.path[1:]).encode()) <= 4096


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"i1e", b"d4:infoi1ee", b"d4:infod", b"d4:infodee trailing", b"le"],
)
def test_malformed_bencode_is_rejected(data):
    with pytest.raises(MetainfoError, match="not valid bencode"):
        parse_torrent(data)


def test_zero_length_torrent_has_no_pieces():
    torrent = parse_torrent(torrent_bytes({b"length": 0}))
    assert torrent.num_pieces == 0
    assert torrent.total_length == 0


def test_load_torrent_errors(tmp_path):
    with pytest.raises(MetainfoError, match=r"cannot read torrent file .*missing\.torrent"):
        load_torrent(tmp_path / "missing.torrent")
    with pytest.raises(MetainfoError, match="cannot read torrent file"):
        load_torrent(tmp_path)
    huge = tmp_path / "huge.torrent"
    with open(huge, "wb") as file:
        file.truncate(50 * MiB + 1)
    with pytest.raises(MetainfoError, match="larger than 50 MiB"):
        load_torrent(huge)


@pytest.mark.parametrize("piece_length", [0, 8 * KiB, 3 * PIECE, PIECE + 1])
def test_create_rejects_bad_piece_length(tmp_path, piece_length):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(MetainfoError, match=f"power of two of at least 16 KiB, not {piece_length}"):
        create_torrent(tmp_path / "f", piece_length=piece_length)


def test_create_rejects_a_tracker_string_in_place_of_a_list(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(TypeError, match="not a single string"):
        create_torrent(tmp_path / "f", trackers="http://t/")


def test_create_rejects_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(MetainfoError, match="not a file or a folder"):
        create_torrent(tmp_path / "nothing")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(MetainfoError, match="has no files to share"):
        create_torrent(tmp_path / "empty")


@pytest.mark.parametrize(
    ("total", "expected"),
    [(0, 16 * KiB), (10 * MiB, 16 * KiB), (1 << 30, MiB), (4 << 30, 4 * MiB), (1 << 50, 16 * MiB)],
)
def test_default_piece_length(total, expected):
    assert _default_piece_length(total) == expected
    if expected not in (16 * KiB, 16 * MiB):
        assert 1000 <= -(-total // expected) <= 2000


valid_torrent = torrent_bytes(
    {b"files": [{b"length": 20_000, b"path": [b"d", b"x"]}, {b"length": 5, b"path": [b"y"]}]},
    announce=b"http://t/",
    url_list=[b"http://s/"],
)


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_metainfo_error(data):
    with contextlib.suppress(MetainfoError):
        parse_torrent(data)


@given(
    st.lists(
        st.tuples(st.integers(0, len(valid_torrent) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, len(valid_torrent)),
)
def test_mutated_torrent_raises_only_metainfo_error(replacements, cut):
    data = bytearray(valid_torrent)
    for index, byte in replacements:
        data[index] = byte
    for candidate in (bytes(data), bytes(data[:cut]), bytes(data[:cut] + data[cut + 1 :])):
        with contextlib.suppress(MetainfoError):
            torrent = parse_torrent(candidate)
            assert torrent.info_hash == hashlib.sha1(torrent.info_bytes).digest()


field_values = st.recursive(
    st.integers(-2, 2**20) | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from([b"length", b"path", b"attr", b"x"]), children, max_size=4
        )
    ),
    max_leaves=10,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            [b"name", b"name.utf-8", b"piece length", b"pieces", b"files", b"length", b"private"]
        ),
        field_values,
    )
)
def test_structured_garbage_raises_only_metainfo_error(info):
    with contextlib.suppress(MetainfoError):
        parse_torrent(encode({b"info": info}))


hosts = st.ip_addresses().map(str) | st.from_regex(
    r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,5})?", fullmatch=True
)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


@given(
    st.binary(min_size=20, max_size=20),
    st.none() | texts,
    st.lists(texts.map(lambda t: "http://t/" + t), unique=True, max_size=4),
    st.lists(st.tuples(hosts, st.integers(1, 65535)), max_size=4),
)
def test_magnet_round_trip(info_hash, name, trackers, peers):
    uri = make_magnet(info_hash, name, trackers, peers)
    assert is_magnet(uri)
    assert parse_magnet(uri) == Magnet(info_hash, name, tuple(trackers), tuple(peers))


def test_magnet_accepts_base32_and_ipv6_peers():
    info_hash = bytes(range(20))
    b32 = "AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQT"
    uri = f"magnet:?xt=urn:btih:{b32}&dn=My+File&tr.1=udp%3A%2F%2Ft%3A1&x.pe=[2001:db8::1]:6881"
    assert parse_magnet(uri) == Magnet(
        info_hash, "My File", ("udp://t:1",), (("2001:db8::1", 6881),)
    )
    assert parse_magnet(uri.replace(b32, b32.lower())).info_hash == info_hash
    assert parse_magnet(f"MAGNET:?xt=urn:btih:{info_hash.hex().upper()}").info_hash == info_hash


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("magnet:?dn=x", "no BitTorrent info-hash"),
        ("magnet:?xt=urn:sha1:" + "a" * 40, "no BitTorrent info-hash"),
        ("magnet:?xt=urn:btih:" + "a" * 39, "neither 40 hex digits nor 32 base32"),
        ("magnet:?xt=urn:btih:" + "g" * 40, "neither 40 hex"),
        ("magnet:?xt=urn:btih:" + "a" * 24 + "========", "neither 40 hex"),
        ("magnet:?xt=urn:btih:" + "a b" * 13 + "c", "neither 40 hex"),
        ("magnet:?xt=urn:btih:" + "a" * 40 + "&x.pe=host", "peer address host is not host:port"),
        ("magnet:?xt=urn:btih:" + "a" * 40 + "&x.pe=host:0", "not host:port"),
        ("magnet:?xt=urn:btih:" + "a" * 40 + "&x.pe=host:65536", "not host:port"),
        ("magnet:?xt=urn:btih:" + "a" * 40 + "&x.pe=::1:80", "not host:port"),
        ("magnet:?xt=urn:btih:" + "a" * 40 + "&x.pe=h:%C2%B2", "not host:port"),
        ("http://example.com/?xt=urn:btih:" + "a" * 40, "not a magnet link"),
        ("magnet://[bad?xt=urn:btih:" + "a" * 40, "not a magnet link"),
    ],
)
def test_bad_magnets_are_rejected(uri, problem):
    with pytest.raises(MetainfoError, match=problem):
        parse_magnet(uri)


@pytest.mark.parametrize(
    ("text", "peer"),
    [
        ("1.2.3.4:6881", ("1.2.3.4", 6881)),
        ("[::1]:1", ("::1", 1)),
        ("seed.example:80", ("seed.example", 80)),
    ],
)
def test_parse_peer(text, peer):
    assert parse_peer(text) == peer


def test_is_magnet():
    assert is_magnet("Magnet:?xt=urn:btih:x")
    assert not is_magnet("/home/me/magnet.torrent")


@given(st.text(max_size=80))
def test_random_magnet_text_raises_only_metainfo_error(text):
    with contextlib.suppress(MetainfoError):
        parse_magnet("magnet:?" + text)


# Port numbers as strangers write them: too long for int(), padded, signed, spaced, other scripts.
BAD_PORTS = ["9" * 5000, "0" * 4400 + "80", "68816881", "000080", "-1", "+80", " 80", "80 ", "8_0"]
BAD_PORTS += ["\u0668\u0660", "\u00b2", "", "0x50", "\uff18\uff10"]


@pytest.mark.parametrize("port", BAD_PORTS)
def test_ports_from_outside_are_refused_in_a_short_sentence(port):
    magnet = f"magnet:?xt=urn:btih:{'a' * 40}&x.pe=seed.example:{quote(port)}"
    for parse in (lambda: parse_peer(f"seed.example:{port}"), lambda: parse_magnet(magnet)):
        with pytest.raises(MetainfoError, match="is not host:port") as caught:
            parse()
        assert len(str(caught.value)) < 200


def test_a_host_longer_than_any_dns_name_is_refused():
    assert parse_peer("h" * 253 + ":80") == ("h" * 253, 80)
    with pytest.raises(MetainfoError, match="is not host:port"):
        parse_peer("h" * 254 + ":80")


digit_runs = st.builds(
    lambda digit, length: digit * length,
    st.sampled_from(["0", "9", "1", "\u0663", "\u00b2"]),
    st.integers(0, 6000),
)
peer_texts = st.builds(
    lambda host, separator, port: host + separator + port,
    texts,
    st.sampled_from([":", "]:", "", "::"]),
    digit_runs | texts,
)


@given(peer_texts | texts)
@example("h:" + "9" * 5000)
def test_parse_peer_raises_only_metainfo_error(text):
    try:
        host, port = parse_peer(text)
    except MetainfoError:
        return
    assert host and 0 < port < 65536


magnet_keys = st.sampled_from(["xt", "dn", "tr", "tr.1", "x.pe", "xl", "ws"]) | texts


@given(st.lists(st.tuples(magnet_keys, peer_texts), max_size=6))
@example([("x.pe", "h:" + "9" * 5000)])
@example([("xl", "9" * 5000)])
def test_magnet_fields_from_outside_raise_only_metainfo_error(fields):
    query = "&".join(f"{quote(key)}={quote(value)}" for key, value in fields)
    with contextlib.suppress(MetainfoError):
        parse_magnet(f"magnet:?xt=urn:btih:{'a' * 40}&{query}")
