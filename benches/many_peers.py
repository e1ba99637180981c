#!/usr/bin/env python3
"""Many peers against one seeder: N connections, most of them idle, ACTIVE
of them requesting blocks without pause. Loopback only: every connection
comes from its own 127.0.x.y source address (the seeder takes at most 8 per
address) and goes to 127.0.0.1:PORT.

    many_peers.py PORT INFO_HASH_HEX NUM_PIECES PIECE_LEN N ACTIVE SECONDS

Prints one line: connections that completed the handshake, blocks
received by the active peers, and the seconds measured. The caller measures
the seeder (RSS, CPU) around it.
"""
import os
import selectors
import socket
import struct
import sys
import time

BLOCK = 16384
PIPELINE = 32


def main():
    port = int(sys.argv[1])
    info_hash = bytes.fromhex(sys.argv[2])
    num_pieces = int(sys.argv[3])
    piece_len = int(sys.argv[4])
    n = int(sys.argv[5])
    active = int(sys.argv[6])
    seconds = float(sys.argv[7])
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(n):
        # 127.0.(1 + i // 200).(2 + i % 200): one address per connection.
        src = "127.0.%d.%d" % (1 + i // 200, 2 + i % 200)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        peer_id = b"-PB0001-" + os.urandom(12)
        c = {
            "sock": s,
            # Active peers say they are interested; idle ones only shake hands.
            "out": b"\x13BitTorrent protocol" + bytes(8) + info_hash + peer_id
            + (struct.pack(">IB", 1, 2) if i < active else b""),
            "in": bytearray(),
            "shook": False,
            "active": i < active,
            "unchoked": False,
            "inflight": 0,
            "next": (i * 7919) % (num_pieces * (piece_len // BLOCK)),
        }
        conns.append(c)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    blocks = 0
    start = time.time()
    measure_from = None
    blocks_at_start = 0
    per_piece = piece_len // BLOCK
    total_blocks = num_pieces * per_piece
    while True:
        now = time.time()
        if measure_from is None and now - start > 5:
            measure_from = now
            blocks_at_start = blocks
            print("measuring", flush=True)
        if measure_from is not None and now - measure_from >= seconds:
            break
        for key, ev in sel.select(timeout=0.5):
            c = key.data
            s = c["sock"]
            if ev & selectors.EVENT_READ:
                try:
                    data = s.recv(262144)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    sel.unregister(s)
                    s.close()
                    continue
                if data == b"":
                    sel.unregister(s)
                    s.close()
                    continue
                if data:
                    c["in"] += data
                    buf = c["in"]
                    if not c["shook"] and len(buf) >= 68:
                        del buf[:68]
                        c["shook"] = True
                    while c["shook"] and len(buf) >= 4:
                        (ln,) = struct.unpack(">I", buf[:4])
                        if len(buf) < 4 + ln:
                            break
                        msg = bytes(buf[4:5]) if ln else b""
                        del buf[: 4 + ln]
                        if msg == b"\x01":
                            c["unchoked"] = True
                        elif msg == b"\x00":
                            c["unchoked"] = False
                            c["inflight"] = 0
                        elif msg == b"\x07":
                            c["inflight"] -= 1
                            blocks += 1
            if c["active"] and c["shook"] and c["unchoked"]:
                reqs = []
                while c["inflight"] < PIPELINE:
                    b = c["next"] % total_blocks
                    c["next"] += 1
                    piece, idx = divmod(b, per_piece)
                    reqs.append(struct.pack(">IBIII", 13, 6, piece, idx * BLOCK, BLOCK))
                    c["inflight"] += 1
                if reqs:
                    c["out"] += b"".join(reqs)
            if c["out"]:
                try:
                    sent = s.send(c["out"])
                    c["out"] = c["out"][sent:]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    pass
            want = selectors.EVENT_READ
            if c["out"]:
                want |= selectors.EVENT_WRITE
            try:
                sel.modify(s, want, c)
            except (KeyError, ValueError):
                pass
    shook = sum(1 for c in conns if c["shook"] and c["sock"].fileno() != -1)
    print(
        "connected=%d blocks=%d seconds=%.2f"
        % (shook, blocks - blocks_at_start, time.time() - measure_from),
        flush=True,
    )


if __name__ == "__main__":
    main()
