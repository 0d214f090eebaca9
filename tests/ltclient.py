"""A small wrapper over libtorrent's Python bindings: loopback-only seeders and leechers."""

from __future__ import annotations

import time
from pathlib import Path

import libtorrent as lt

LOOPBACK = "127.0.0.1"

TorrentSource = str | Path | bytes


def session_settings(port: int | None = None, *, rc4: bool = False) -> dict[str, object]:
    """Settings for a session that talks only to 127.0.0.1 and moves bytes as fast as it can.

    With rc4 it speaks only RC4-encrypted MSE, both ways.
    """
    settings: dict[str, object] = {
        # Loopback only: tests and benches must never reach another address.
        "listen_interfaces": f"{LOOPBACK}:{port or 0}",
        "outgoing_interfaces": LOOPBACK,
        # A requested port that is taken must fail loudly, not move elsewhere
        # (libtorrent would otherwise try the next ports, then any port).
        "listen_system_port_fallback": port is None,
        "max_retry_port_bind": 0,
        # No peer discovery beyond what the test hands over; the empty router list
        # keeps libtorrent from even resolving the public bootstrap host.
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # No netlink watching either; the interfaces are fixed.
        "enable_ip_notifier": False,
        # uTP over loopback is CPU-bound and far slower than TCP; use TCP both ways.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Every peer in a test is 127.0.0.1, so several per IP must be allowed.
        "allow_multiple_connections_per_ip": True,
        # Plain handshake outgoing: trying MSE first costs a failed connection to
        # clients without encryption. Incoming still accepts both.
        "out_enc_policy": int(lt.enc_policy.pe_disabled),
        "in_enc_policy": int(lt.enc_policy.pe_enabled),
        # No rate limits anywhere, loopback counts as any other peer class.
        "upload_rate_limit": 0,
        "download_rate_limit": 0,
        "local_upload_rate_limit": 0,
        "local_download_rate_limit": 0,
        # A deeper send buffer keeps the socket full between disk reads (default 500 kB).
        "send_buffer_watermark": 16 * 1024 * 1024,
        "send_buffer_low_watermark": 1024 * 1024,
        "send_buffer_watermark_factor": 150,
        # More outstanding 16 KiB requests per peer (default 500) so one peer saturates the pipe.
        "max_out_request_queue": 2000,
        "max_allowed_in_request_queue": 4000,
        # Let more written-but-unflushed bytes queue before the peer stops reading.
        "max_queued_disk_bytes": 256 * 1024 * 1024,
        # A single peer is the whole swarm here: unchoke it at once and never
        # reconnect slowly after a failure in a test.
        "unchoke_slots_limit": -1,
        "min_reconnect_time": 1,
        # Errors, plus storage for flush()'s cache_flushed_alert; nothing else reads alerts.
        "alert_mask": int(
            lt.alert.category_t.error_notification | lt.alert.category_t.storage_notification
        ),
    }
    if rc4:
        settings["out_enc_policy"] = int(lt.enc_policy.forced)
        settings["in_enc_policy"] = int(lt.enc_policy.forced)
        settings["allowed_enc_level"] = int(lt.enc_level.rc4)
    # Windows-only (skips zero-filling new files); a no-op elsewhere, set only where known.
    if "enable_set_file_valid_data" in lt.default_settings():
        settings["enable_set_file_valid_data"] = True
    return settings


def dht_session_settings(router_port: int, port: int | None = None) -> dict[str, object]:
    """session_settings with the DHT on, joining only through the node on 127.0.0.1:router_port."""
    settings = session_settings(port)
    settings.update(
        {
            "enable_dht": True,
            # Never the public routers: the local node named here is the only way in.
            "dht_bootstrap_nodes": f"{LOOPBACK}:{router_port}",
            # Every node of a test is 127.0.0.1, and by default libtorrent keeps one node
            # per IP in its routing table, and asks one per IP in a lookup.
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            # Its DoS blocker drops everything from an IP that sent 50 messages within 10 s,
            # for 5 minutes: eight shoal nodes on one IP pass that in a busy test.
            "dht_block_ratelimit": 1000,
        }
    )
    return settings


def _listening(session: lt.session, port: int | None) -> lt.session:
    actual = listen_port(session)
    if actual == 0 or (port is not None and actual != port):
        raise AssertionError(f"libtorrent failed to listen on 127.0.0.1:{port}: got {actual}")
    return session


def make_session(port: int | None = None, *, rc4: bool = False) -> lt.session:
    """A session listening on 127.0.0.1 (port, or any free one) with discovery off."""
    return _listening(lt.session(session_settings(port, rc4=rc4)), port)


def make_dht_session(router_port: int, port: int | None = None) -> lt.session:
    """A session on 127.0.0.1 whose DHT joins through 127.0.0.1:router_port; no other discovery.

    Torrents find peers through the DHT only if added with dht=True.
    """
    return _listening(lt.session(dht_session_settings(router_port, port)), port)


def dht_node_id(session: lt.session) -> bytes:
    """The session's DHT node id (on its IPv4 socket)."""
    # session_state().dht_state.nids has no Python conversion; its bencoded form does.
    state = lt.write_session_params(session.session_state())
    ids = state[b"dht state"][b"node-id"]  # 20-byte id then the socket's IP, per socket
    return ids[0][:20]


def dht_routing_nodes(session: lt.session, timeout: float = 5.0) -> int:
    """How many nodes the session's DHT routing table holds (replacements not counted).

    It pops the session's alerts: not to be called while flush() waits.
    """
    session.post_dht_stats()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.wait_for_alert(100)
        for alert in session.pop_alerts():
            if isinstance(alert, lt.dht_stats_alert):
                return sum(bucket["num_nodes"] for bucket in alert.routing_table)
    raise AssertionError(f"libtorrent posted no DHT stats within {timeout}s")


def listen_port(session: lt.session) -> int:
    """The TCP port the session accepts peers on."""
    return session.listen_port()


def make_torrent(content: Path, piece_size: int = 0) -> bytes:
    """A bencoded v1 torrent (no announce) for a file or directory; piece_size 0 picks one."""
    content = Path(content).resolve()
    files = lt.list_files(str(content))
    # v1 only: a hybrid torrent would make libtorrent announce and handshake with
    # the v2 info-hash, which v1-only clients do not know.
    creator = lt.create_torrent(files, piece_size, lt.create_torrent.v1_only)
    lt.set_piece_hashes(creator, str(content.parent))
    # create_torrent.generate_buf() fails to convert its bytes in 2.1; bencode the dict.
    return lt.bencode(creator.generate())


def torrent_info(torrent: TorrentSource) -> lt.torrent_info:
    """Parse a torrent from a path or from its bencoded bytes."""
    if isinstance(torrent, bytes):
        return lt.torrent_info(torrent)
    return lt.torrent_info(str(torrent))


def _add(
    session: lt.session, params: lt.add_torrent_params, save_dir: Path, dht: bool
) -> lt.torrent_handle:
    params.save_path = str(save_dir)
    # Peers come only from connect() (and the DHT if asked); never from a tracker the
    # torrent might name.
    params.trackers = []
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    params.flags |= lt.torrent_flags.disable_lsd
    if dht:
        params.flags &= ~lt.torrent_flags.disable_dht
    else:
        params.flags |= lt.torrent_flags.disable_dht
    return session.add_torrent(params)


def seed(
    session: lt.session,
    torrent: TorrentSource,
    data_dir: Path,
    *,
    check: bool = False,
    dht: bool = False,
) -> lt.torrent_handle:
    """Seed torrent from data_dir (libtorrent's save_path layout).

    Without check the data is trusted (seed_mode) and is seeding at once; with it, call
    wait_seeding(). With dht it announces itself in the session's DHT.
    """
    params = lt.add_torrent_params()
    params.ti = torrent_info(torrent)
    if not check:
        params.flags |= lt.torrent_flags.seed_mode
    return _add(session, params, Path(data_dir), dht)


def leech(
    session: lt.session, torrent: TorrentSource, save_dir: Path, *, dht: bool = False
) -> lt.torrent_handle:
    """Download a torrent (path or bytes) or a magnet URI (str starting "magnet:") into save_dir;
    with dht, the session's DHT is a source of peers too."""
    if isinstance(torrent, str) and torrent.startswith("magnet:"):
        params = lt.parse_magnet_uri(torrent)
    else:
        params = lt.add_torrent_params()
        params.ti = torrent_info(torrent)
    return _add(session, params, Path(save_dir), dht)


def connect(handle: lt.torrent_handle, port: int) -> None:
    """Tell the torrent about a peer on 127.0.0.1:port."""
    handle.connect_peer((LOOPBACK, port))


def describe(handle: lt.torrent_handle) -> str:
    """One line of torrent status for assertion messages."""
    status = handle.status()
    error = f" error={status.errc.message()}" if status.errc.value() else ""
    return (
        f"state={status.state} progress={status.progress:.3f} peers={status.num_peers}"
        f" down={status.total_payload_download} up={status.total_payload_upload}{error}"
    )


def _wait(handle: lt.torrent_handle, done: str, timeout: float, interval: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = handle.status()
        if status.errc.value():
            raise AssertionError(f"torrent failed while waiting for {done}: {describe(handle)}")
        if getattr(status, done):
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"torrent not {done} after {timeout}s: {describe(handle)}")
        time.sleep(interval)


def wait_seeding(handle: lt.torrent_handle, timeout: float = 30.0, interval: float = 0.02) -> None:
    """Block until the torrent has every piece and seeds, or raise AssertionError."""
    _wait(handle, "is_seeding", timeout, interval)


def wait_finished(handle: lt.torrent_handle, timeout: float = 30.0, interval: float = 0.02) -> None:
    """Block until the download has every piece verified, or raise AssertionError.

    Verified is not yet written: call flush() before reading the files.
    """
    wait_seeding(handle, timeout, interval)


def flush(session: lt.session, handle: lt.torrent_handle, timeout: float = 30.0) -> None:
    """Block until every piece libtorrent has verified is written to the files."""
    # A piece passes its hash check from the store buffer while its write job may still be
    # queued, so is_seeding alone does not mean the bytes are on disk.
    handle.flush_cache()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.wait_for_alert(100)
        for alert in session.pop_alerts():
            if isinstance(alert, lt.cache_flushed_alert) and alert.handle == handle:
                return
    raise AssertionError(f"libtorrent did not flush within {timeout}s: {describe(handle)}")


def total_upload(handle: lt.torrent_handle) -> int:
    """Payload bytes this torrent has sent to peers during this session."""
    return handle.status().total_payload_upload


def total_download(handle: lt.torrent_handle) -> int:
    """Payload bytes this torrent has received from peers during this session."""
    return handle.status().total_payload_download
