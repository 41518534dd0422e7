"""Which HEALPix partitions a catalog has (numpy, no Dask).

Rows are counted per pixel of order ``HIGHEST_ORDER`` in each per-image file (a sparse
histogram). Fine pixels merge into partitions of at most ``threshold`` light-curve rows, the
largest pixels that hold so few (a dense field gets small pixels, an empty sky large ones):
the rule of hats' ``generate_alignment``, computed here on the pixels that hold rows only
(hats walks every pixel of the sky at every order: 10 s at order 10, for any catalog; equal
results, see the tests and ``benchmarks``). A catalog that grows keeps its partitions, except
those the new rows push over the threshold: those are split, and the new sky gets partitions
of its own that overlap none kept (as hats' ``generate_incremental_alignment``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from hats.pixel_math import HealpixPixel
from hats.pixel_math.spatial_index import compute_spatial_index

#: order of the fine pixels rows are counted in (~3.4' pixels, ~1,000 SPHEREx pixels each)
HIGHEST_ORDER = 10


def pixel_range(pixel: HealpixPixel, order: int) -> tuple[int, int]:
    """[first, end) of the pixels of ``order`` inside ``pixel``."""
    shift = 2 * (order - pixel.order)
    return pixel.pixel << shift, (pixel.pixel + 1) << shift


def fine_pixels(ra: np.ndarray, dec: np.ndarray, order: int = HIGHEST_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, counts) of the rows at (ra, dec) in HEALPix ``order`` (nested), pixels sorted."""
    if not len(ra):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pixels, counts = np.unique(compute_spatial_index(np.asarray(ra), np.asarray(dec), order), return_counts=True)
    return pixels.astype(np.int64), counts.astype(np.int64)


def align(pixels: np.ndarray, counts: np.ndarray, threshold: int, order: int,
          blocked: Sequence[HealpixPixel] = ()) -> np.ndarray:
    """The destination order of each fine pixel (``pixels`` of ``order``, sorted, with
    ``counts`` rows): a pixel moves up to its parent while the parent holds at most
    ``threshold`` rows, every child of the parent present moves too, and the parent contains
    none of the ``blocked`` pixels (partitions kept from an earlier catalog)."""
    dest = np.full(pixels.size, order, np.int64)
    nodes, sums, ok = pixels, counts.astype(np.int64), np.ones(pixels.size, bool)
    for level in range(order - 1, -1, -1):
        parents, inverse = np.unique(nodes >> 2, return_inverse=True)
        sums = np.bincount(inverse, weights=sums, minlength=parents.size).astype(np.int64)
        ok = (sums <= threshold) & (np.bincount(inverse, weights=~ok, minlength=parents.size) == 0)
        inside = [b.pixel >> 2 * (b.order - level) for b in blocked if b.order > level]
        ok &= ~np.isin(parents, inside)
        if not ok.any():
            break
        ancestor = np.searchsorted(parents, pixels >> 2 * (order - level))
        dest[ok[ancestor]] = level
        nodes = parents
    return dest


def plan(histograms: Iterable[tuple[np.ndarray, np.ndarray]], threshold: int, existing: list[HealpixPixel],
         order: int = HIGHEST_ORDER) -> dict[HealpixPixel, tuple[int, int]]:
    """The partitions of a catalog: for each, the range [first, end) of the fine pixels it
    holds.

    Parameters
    ----------
    histograms : iterable of (pixels, counts)
        Rows per fine pixel, one sparse histogram per per-image file.
    threshold : int
        Most light-curve rows in a partition (a single fine pixel is never split: it may hold
        more).
    existing : list of HealpixPixel
        The current catalog's partitions: kept while they hold rows and stay under
        ``threshold``, split otherwise.
    order : int
        Order of the fine pixels.
    """
    histograms = list(histograms)
    pixels, inverse = np.unique(np.concatenate([h[0] for h in histograms] or [np.empty(0, np.int64)]),
                                return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate([h[1] for h in histograms] or [np.empty(0)]),
                         minlength=pixels.size).astype(np.int64)
    threshold = max(threshold, int(counts.max(initial=0)))  # a fine pixel is never split
    out: dict[HealpixPixel, tuple[int, int]] = {}
    free = np.ones(pixels.size, bool)
    for p in existing:
        lo, hi = pixel_range(p, order)
        a, b = np.searchsorted(pixels, [lo, hi])
        if 0 < counts[a:b].sum() <= threshold:
            out[p] = (lo, hi)
            free[a:b] = False
    pixels, counts = pixels[free], counts[free]
    dest = align(pixels, counts, threshold, order, blocked=list(out))
    for level in np.unique(dest):
        for parent in np.unique(pixels[dest == level] >> 2 * (order - level)):
            p = HealpixPixel(int(level), int(parent))
            out[p] = pixel_range(p, order)
    return out
