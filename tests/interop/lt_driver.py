#!/usr/bin/python3
"""Drive libtorrent-rasterbar (Debian's python3-libtorrent) for piecemeal's
interop tests: seed, download or create one torrent, with DHT, LSD, UPnP,
NAT-PMP and uTP off, so the only peers are the ones the test names (--peer)
or the torrent's tracker hands out.

    lt_driver.py seed     TORRENT DIR --listen IP:PORT [--peer IP:PORT]... [--upload-limit BYTES] [--encryption forced]
    lt_driver.py download TORRENT DIR --listen IP:PORT [--peer IP:PORT]... [--seed] [--encryption forced]
    lt_driver.py download MAGNET_URI DIR --magnet --listen IP:PORT [--peer IP:PORT]... [--seed]
    lt_driver.py seed|download ... --dht-node IP:PORT...   (the DHT on, bootstrapped from these)
    lt_driver.py create   PATH OUT.torrent [--tracker URL] [--piece-length BYTES] [--v1-only]
    lt_driver.py infohash TORRENT [--v2]

Status lines on stdout every 500 ms, like piecemeal's --machine:
    @status STATE PROGRESS_PPM DOWNLOADED UPLOADED PEERS
and `@done` once every piece is verified (download exits 0 then, unless
--seed). Alerts go to stderr.

--magnet: TORRENT is a magnet link; the torrent is added by its info-hash
alone and libtorrent fetches the metadata from its peers (BEP 9). Writes
`@metadata SIZE_OF_INFO_DICT` to stderr (the log) once it has it.

Fast extension (BEP 6) controls:
    --choke-all         unchoke nobody (unchoke_slots_limit 0, and the
                        optimistic unchoke only once an hour): peers get
                        their allowed-fast pieces alone
    --allowed-fast N    allowed_fast_set_size (libtorrent's default: 5)
    --choke-after SECS  seed normally, then choke everybody from SECS on
    --unchoke-after SECS  and unchoke again from SECS on
Whenever the set of pieces it has changes, the driver logs
`@pieces I,J,...` to stderr.
Every peer seen for the first time is written to stderr (the log) as
    @peer IP:PORT SOURCE
where SOURCE is libtorrent's peer_info.source bits (tracker 1, dht 2,
pex 4, lsd 8, resume data 16, incoming 32): a peer learnt through peer
exchange (BEP 11) has bit 4.

--encryption forced: MSE with RC4 only, both ways (in_enc_policy and
out_enc_policy pe_forced, allowed_enc_level pe_rc4): plaintext peers are
refused. Default: libtorrent's own (pe_enabled, both levels).

--dht-node IP:PORT (repeatable): turn libtorrent's DHT on, bootstrapped
from these nodes only, with its address restrictions relaxed for a lab
where every node shares one private /24 (one node per IP, search and
routing-table IP restrictions, verified node ids, dark-internet filter);
the torrent is re-announced every 10 s.
"""
import argparse
import os
import signal
import sys
import time

import libtorrent as lt


def settings(
    listen, upload_limit, download_limit, encryption="enabled", allowed_fast=None, dht_nodes=()
):
    s = {
        "listen_interfaces": listen,
        "outgoing_interfaces": listen.rsplit(":", 1)[0],
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_tcp": True,
        "enable_outgoing_tcp": True,
        "announce_to_all_trackers": True,
        "allow_multiple_connections_per_ip": True,
        # Test hosts share one private /24: treat it as the internet.
        "ssrf_mitigation": False,
        "upload_rate_limit": upload_limit,
        "download_rate_limit": download_limit,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.peer_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.tracker_notification,
        "user_agent": "lt_driver/" + lt.__version__,
    }
    if dht_nodes:
        s.update({
            "enable_dht": True,
            "dht_bootstrap_nodes": ",".join(dht_nodes),
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            "dht_prefer_verified_node_ids": False,
            "dht_ignore_dark_internet": False,
            "dht_announce_interval": 10,
        })
        s["alert_mask"] |= lt.alert.category_t.dht_notification
    if allowed_fast is not None:
        s["allowed_fast_set_size"] = allowed_fast
    if encryption == "forced":
        s["out_enc_policy"] = int(lt.enc_policy.pe_forced)
        s["in_enc_policy"] = int(lt.enc_policy.pe_forced)
        s["allowed_enc_level"] = int(lt.enc_level.pe_rc4)
        s["prefer_rc4"] = True
    return s


def v1_hash(info):
    """The v1 info-hash (SHA-1 of the info dict). `info_hash()` would give
    the v2 hash cut to 20 bytes for a hybrid torrent."""
    return str(info.info_hashes().v1)


def run(args):
    ses = lt.session(
        settings(
            args.listen,
            args.upload_limit,
            args.download_limit,
            args.encryption,
            args.allowed_fast,
            args.dht_node,
        )
    )
    started = time.monotonic()
    if args.choke_all:
        choke_all(ses, True)
    choked = args.choke_all
    if args.magnet:
        params = lt.parse_magnet_uri(args.torrent)
        info = None
    else:
        info = lt.torrent_info(args.torrent)
        params = lt.add_torrent_params()
        params.ti = info
    params.save_path = args.dir
    h = ses.add_torrent(params)
    chokes = args.choke_all or args.choke_after is not None
    if args.upload_limit or args.download_limit or chokes:
        # Peers on private networks are in the unlimited "local" class by
        # default (which also ignores unchoke slots): put every address in
        # the global class, so the limits and the choker hold.
        f = lt.ip_filter()
        f.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        ses.set_peer_class_filter(f)
        h.set_upload_limit(args.upload_limit or -1)
        h.set_download_limit(args.download_limit or -1)
    for p in args.peer:
        host, port = p.rsplit(":", 1)
        h.connect_peer((host, int(port)))

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    if info is not None:
        print(f"@info {v1_hash(info)} {lt.__version__}", flush=True)
    else:
        print(f"@info {params.info_hashes.v1} {lt.__version__}", flush=True)
    metadata_printed = info is not None
    done_printed = False
    peers_seen = set()
    last_connect = time.monotonic()
    last_pieces = None
    while not stop:
        elapsed = time.monotonic() - started
        if args.choke_after is not None and not choked and elapsed >= args.choke_after:
            if args.unchoke_after is None or elapsed < args.unchoke_after:
                choke_all(ses, True)
                choked = True
                print("@choking everybody", file=sys.stderr, flush=True)
        if args.unchoke_after is not None and choked and elapsed >= args.unchoke_after:
            choke_all(ses, False)
            choked = False
            print("@unchoking again", file=sys.stderr, flush=True)
        for a in ses.pop_alerts():
            print(f"lt: {a.what()}: {a.message()}", file=sys.stderr, flush=True)
        s = h.status()
        pieces = [i for i, b in enumerate(s.pieces) if b]
        if pieces != last_pieces:
            last_pieces = pieces
            print("@pieces " + ",".join(map(str, pieces)), file=sys.stderr, flush=True)
        for p in h.get_peer_info():
            ip, port = p.ip[0], p.ip[1]
            if (ip, port) not in peers_seen and len(peers_seen) < 1000:
                peers_seen.add((ip, port))
                print(f"@peer {ip}:{port} {int(p.source)}", file=sys.stderr, flush=True)
        if not metadata_printed and s.has_metadata:
            ti = h.torrent_file()
            print(f"@metadata {len(ti.info_section())}", file=sys.stderr, flush=True)
            metadata_printed = True
        print(
            f"@status {s.state} {int(s.progress_ppm)} {s.all_time_download} "
            f"{s.all_time_upload} {s.num_peers}",
            flush=True,
        )
        finished = s.is_seeding or s.state == lt.torrent_status.seeding
        if finished and not done_printed and args.command == "download":
            print(
                f"@done {s.all_time_download} {s.all_time_upload}", flush=True
            )
            done_printed = True
            if not args.seed:
                break
        # Re-dial named peers now and then (a refused dial is not retried).
        if args.peer and s.num_peers == 0 and time.monotonic() - last_connect > 3:
            last_connect = time.monotonic()
            for p in args.peer:
                host, port = p.rsplit(":", 1)
                h.connect_peer((host, int(port)))
        time.sleep(0.5)
    del ses


def choke_all(ses, on):
    """Unchoke nobody (or the default again): no regular slots, and the
    optimistic unchoke (at least one slot in libtorrent, rotated every 30 s
    by default) only once an hour."""
    if on:
        ses.apply_settings({"unchoke_slots_limit": 0, "optimistic_unchoke_interval": 3600})
    else:
        ses.apply_settings({"unchoke_slots_limit": 8, "optimistic_unchoke_interval": 30})


def create(args):
    path = os.path.abspath(args.path)
    fs = lt.file_storage()
    lt.add_files(fs, path)
    flags = lt.create_torrent.v1_only if args.v1_only else 0
    t = lt.create_torrent(fs, args.piece_length, flags=flags)
    for url in args.tracker:
        t.add_tracker(url)
    lt.set_piece_hashes(t, os.path.dirname(path))
    with open(args.out, "wb") as f:
        f.write(lt.bencode(t.generate()))
    print(v1_hash(lt.torrent_info(args.out)))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("seed", "download"):
        p = sub.add_parser(name)
        p.add_argument("torrent")
        p.add_argument("dir")
        p.add_argument("--listen", required=True)
        p.add_argument("--peer", action="append", default=[])
        p.add_argument("--upload-limit", type=int, default=0)
        p.add_argument("--download-limit", type=int, default=0)
        p.add_argument("--seed", action="store_true")
        p.add_argument("--encryption", choices=["enabled", "forced"], default="enabled")
        p.add_argument("--magnet", action="store_true", help="TORRENT is a magnet link")
        p.add_argument("--dht-node", action="append", default=[])
        p.add_argument("--choke-all", action="store_true")
        p.add_argument("--allowed-fast", type=int, default=None)
        p.add_argument("--choke-after", type=float, default=None)
        p.add_argument("--unchoke-after", type=float, default=None)
    p = sub.add_parser("create")
    p.add_argument("path")
    p.add_argument("out")
    p.add_argument("--tracker", action="append", default=[])
    p.add_argument("--piece-length", type=int, default=262144)
    p.add_argument("--v1-only", action="store_true", help="no v2 keys (default: hybrid)")
    p = sub.add_parser("infohash")
    p.add_argument("torrent")
    p.add_argument("--v2", action="store_true", help="the v2 info-hash (SHA-256), if any")
    args = ap.parse_args()
    if args.command == "create":
        create(args)
    elif args.command == "infohash":
        info = lt.torrent_info(args.torrent)
        print(str(info.info_hashes().v2) if args.v2 else v1_hash(info))
    else:
        run(args)


if __name__ == "__main__":
    main()
