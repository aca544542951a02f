"""Send COUNT DNS-shaped UDP datagrams to ADDR:9998 at RATE per second.

Paced like xtask/src/bench/load.rs `flood` (sleep 200 us whenever ahead of
the rate), so each drop finds the kernel's lines as cold as the bench's do.
Used by kernel-cost.sh (DROP_RATE) and drop-pair.sh.
Usage: paced_drops.py COUNT RATE ADDR
"""
import socket
import sys
import time

count, rate, addr = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def q(i):
    m = bytearray(((i & 0xFFFF).to_bytes(2, "big")) + bytes([1, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
    for label in (b"host%d" % (i % 200), b"bench", b"test"):
        m += bytes([len(label)]) + label
    return bytes(m + bytes([0, 0, 1, 0, 1]))


msgs = [q(i) for i in range(256)]
t0 = time.monotonic()
sent = 0
while sent < count:
    if sent >= (time.monotonic() - t0) * rate:
        time.sleep(0.0002)
        continue
    try:
        s.sendto(msgs[sent % 256], (addr, 9998))
    except OSError:
        pass
    sent += 1
