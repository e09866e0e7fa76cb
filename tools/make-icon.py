#!/usr/bin/env python3
"""Draw the app icon (assets/icon.png, 512x512): a layer x neuron grid with a few neurons lit,
which is what the app shows. Pure Python (zlib) so it runs anywhere: python3 tools/make-icon.py"""
import random, struct, zlib, pathlib

N = 512
BG, CELL, LIT, EDGE = (17, 19, 24), (38, 44, 56), (255, 176, 46), (0, 0, 0, 0)
rows, cols, margin, gap = 8, 12, 72, 6
cw = (N - 2 * margin - (cols - 1) * gap) / cols
ch = (N - 2 * margin - (rows - 1) * gap) / rows
rng = random.Random(7)
lit = {(r, c) for r in range(rows) for c in rng.sample(range(cols), 2)}
px = bytearray()
for y in range(N):
    px.append(0)  # filter: none
    for x in range(N):
        # rounded square background
        dx, dy = max(0, abs(x - N / 2 + 0.5) - (N / 2 - 96)), max(0, abs(y - N / 2 + 0.5) - (N / 2 - 96))
        if dx * dx + dy * dy > 88 * 88:
            px += bytes(4)
            continue
        color = BG
        gx, gy = x - margin, y - margin
        c, r = int(gx // (cw + gap)), int(gy // (ch + gap))
        if 0 <= c < cols and 0 <= r < rows and gx - c * (cw + gap) < cw and gy - r * (ch + gap) < ch:
            color = LIT if (r, c) in lit else CELL
        px += bytes(color) + b"\xff"
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", N, N, 8, 6, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(bytes(px), 9)) + chunk(b"IEND", b"")
out = pathlib.Path(__file__).resolve().parent.parent / "assets" / "icon.png"
out.write_bytes(png)
print(f"wrote {out} ({len(png)} bytes)")
