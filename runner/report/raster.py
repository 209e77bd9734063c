"""A small RGBA image as a PNG data URI: the 2D histogram of a large residual plot.

One embedded raster instead of a shape per cell keeps a 73,421-row plot to a few kB.
PNG is written directly (zlib + CRC, no imaging library), deterministic byte for byte.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

# viridis at nine evenly spaced stops (matplotlib's colormap); interpolated linearly between them
_VIRIDIS = np.array([[0x44, 0x01, 0x54], [0x47, 0x2D, 0x7B], [0x3B, 0x52, 0x8B], [0x2C, 0x72, 0x8E],
                     [0x21, 0x91, 0x8C], [0x28, 0xAE, 0x80], [0x5E, 0xC9, 0x62], [0xAD, 0xDC, 0x30],
                     [0xFD, 0xE7, 0x25]], dtype=float)


def viridis(t: np.ndarray) -> np.ndarray:
    """Colours (..., 3) uint8 for values in [0, 1]."""
    t = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    pos = t * (len(_VIRIDIS) - 1)
    i = np.minimum(pos.astype(int), len(_VIRIDIS) - 2)
    w = (pos - i)[..., None]
    return np.rint(_VIRIDIS[i] * (1 - w) + _VIRIDIS[i + 1] * w).astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_data_uri(rgba: np.ndarray) -> str:
    """`data:image/png;base64,...` of an (height, width, 4) uint8 array, first row on top."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    height, width, _ = rgba.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgba.reshape(height, width * 4)], axis=1)
    png = (b"\x89PNG\r\n\x1a\n"
           + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
           + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
           + _chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def log_counts_image(counts: np.ndarray, vmax: float) -> np.ndarray:
    """Counts (rows = y from bottom, cols = x) as RGBA on a log scale from 1 to vmax; empty cells transparent."""
    scale = np.log(max(vmax, 1.0)) or 1.0
    with np.errstate(divide="ignore"):
        t = np.where(counts > 0, np.log(np.maximum(counts, 1.0)) / scale, 0.0)
    rgb = viridis(t)
    alpha = np.where(counts > 0, 255, 0).astype(np.uint8)[..., None]
    return np.concatenate([rgb, alpha], axis=-1)[::-1]  # PNG rows run top to bottom
