"""Compiled per-voxel loops of the streamed thresholding (numba), one pass over memory each.

The numpy versions of these steps made a full pass over the slab for every elementary operation
(a comparison, a product, a shifted sum), which on two cores left thresholding at a few percent of
a raw read's throughput; here each step reads its inputs once. Each kernel repeats the float32 (or
integer) operations of the numpy code it replaces in the same order, so the results are equal
bit for bit (no fast-math: numba then neither reassociates nor fuses multiply-adds).
``tests/test_threshold.py`` checks them against numpy.histogram, scipy.ndimage and the reference
composition :func:`detachment.threshold.classify_slab`.

Compiled functions are cached on disk (``cache=True``): the first call on a new installation
compiles them (seconds); later processes load them.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _bin(x, lo, scale, lut, edge_in):
    """Bin of float32 ``x`` on :class:`detachment.binning.UniformBins` tables (``x`` within their range)."""
    q = int((x - lo) * scale)  # float32 arithmetic, truncation towards zero as numpy's astype(intp)
    b = lut[q]
    if x >= edge_in[q]:
        b += 1
    return b


@njit(cache=True, nogil=True)
def bin_counts(values, lo, hi, scale, lut, edge_in, out):
    """Add the histogram of the float32 ``values`` (1D, not empty) within ``[lo, hi]`` to ``out``.

    ``out``: int64, one entry per bin of the :class:`detachment.binning.UniformBins` tables; values
    outside ``[lo, hi]`` are not counted. Returns the (min, max) of all ``values``.
    """
    # four interleaved partial histograms: runs of equal bins do not wait on one counter
    part = np.zeros((4, out.size), np.int64)
    vmin, vmax = values[0], values[0]
    for i in range(values.size):
        x = values[i]
        vmin = min(vmin, x)
        vmax = max(vmax, x)
        if lo <= x <= hi:
            part[i & 3, _bin(x, lo, scale, lut, edge_in)] += 1
    for j in range(4):
        out += part[j]
    return vmin, vmax


@njit(cache=True, nogil=True)
def phase_codes(data, t, first, steps, out):
    """Per-voxel phase codes of the 1D float32 ``data`` by up to four sorted float32 thresholds.

    ``t`` holds the thresholds padded with +inf to four; ``out[i] = first + sum_j steps[j] (v >= t[j])``
    modulo 256 (uint8), i.e. the code of the class above as many thresholds as ``v`` reaches.
    """
    t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
    s0, s1, s2, s3 = steps[0], steps[1], steps[2], steps[3]
    for i in range(data.size):
        v = data[i]
        out[i] = np.uint8(first + (v >= t0) * s0 + (v >= t1) * s1 + (v >= t2) * s2 + (v >= t3) * s3)


@njit(cache=True, nogil=True)
def _pair(a, b, nmc_a, nmc_b, void):
    """Whether codes ``a`` and ``b`` on opposite sides are NMC and electrolyte, in either order (no branch)."""
    a_nmc = (a == nmc_a) | (a == nmc_b)
    b_nmc = (b == nmc_a) | (b == nmc_b)
    return (a_nmc & (b == void)) | ((a == void) & b_nmc)


@njit(cache=True, nogil=True)
def _candidate_row(c, up, down, zb, za, same, cbd, void, nmc_a, nmc_b, cand):
    """Edge-shell candidates of a row ``c`` into ``cand`` (uint8): CBD, not interior (``same`` 0), with an
    NMC / electrolyte pair across it along x, y or z. A missing neighbour is passed as the row itself; it
    is then CBD, never one of a pair. Written without branches, so that the loops vectorise."""
    nx = c.size
    for x in range(nx):
        cand[x] = (c[x] == cbd) & (same[x] == 0) & (_pair(up[x], down[x], nmc_a, nmc_b, void)
                                                     | _pair(zb[x], za[x], nmc_a, nmc_b, void))
    mid = cand[1: nx - 1]
    left, centre, right = c[: nx - 2], c[1: nx - 1], c[2:]
    for x in range(nx - 2):
        mid[x] |= (centre[x] == cbd) & _pair(left[x], right[x], nmc_a, nmc_b, void)


@njit(cache=True, nogil=True)
def _list_candidates(cand, v, first, where, where_grey, found):
    """Append the flat indices (``first`` + x) and grey levels ``v[x]`` of the row's candidates (``cand``
    set) to ``where`` / ``where_grey`` after the ``found`` listed so far, while they have room; returns
    the new count."""
    for x in range(cand.size):
        if cand[x]:
            if found < where.size:
                where[found] = first + x
                where_grey[found] = v[x]
            found += 1
    return found


@njit(cache=True, nogil=True)
def interior_counts(values, p, z0, z1, lo, scale, lut, edge_in, interior, per_slice, shells, where, where_grey):
    """Fine histograms of the interior voxels of each code, per-slice code counts and the edge-shell
    candidates of ``p[z0:z1]``.

    A voxel is interior when its 6 neighbours inside ``p`` carry its code (the interior voxels of
    :func:`detachment.phases.interior_histograms`); ``values`` (float32) are the grey levels of
    ``p[z0:z1]``. Adds to ``interior`` ((codes, bins) int64) and ``per_slice`` ((z1 - z0, codes) int64).

    ``shells`` holds the codes (cbd, void, nmc_a, nmc_b): the CBD voxels with NMC on one side and void on
    the opposite one along an axis (:func:`detachment.blur.edge_shell_candidates`) are written, in C
    order, as flat indices into ``p[z0:z1]`` to ``where`` and their grey levels to ``where_grey``, as
    many as they hold. Returns the number of candidates (all of them, also beyond the arrays' length).
    """
    nz, ny, nx = p.shape
    n, nb = interior.shape
    cbd, void, nmc_a, nmc_b = shells[0], shells[1], shells[2], shells[3]
    found = 0
    same = np.empty(nx, np.uint8)
    cand = np.empty(nx, np.uint8)
    key = np.empty(nx, np.int64)
    # interior voxels first, then the others; four interleaved copies, so that runs of equal keys do not
    # wait on one counter
    counts = np.zeros((4, 2 * n * nb), np.int64)
    for z in range(z0, z1):
        pz = p[z]
        below = p[z - 1] if z > 0 else pz  # no neighbour: compare with itself
        above = p[z + 1] if z < nz - 1 else pz
        vz = values[z - z0]
        counts[:] = 0
        for y in range(ny):
            c = pz[y]
            up = pz[y - 1] if y > 0 else c
            down = pz[y + 1] if y < ny - 1 else c
            zb, za = below[y], above[y]
            for x in range(nx):
                same[x] = (c[x] == up[x]) & (c[x] == down[x]) & (c[x] == zb[x]) & (c[x] == za[x])
            left, right = c[: nx - 1], c[1:]
            head, tail = same[: nx - 1], same[1:]
            for x in range(nx - 1):
                eq = left[x] == right[x]
                head[x] &= eq
                tail[x] &= eq
            v = vz[y]
            for x in range(nx):
                key[x] = ((1 - same[x]) * n + c[x]) * nb + _bin(v[x], lo, scale, lut, edge_in)
            for x in range(nx):
                counts[x & 3, key[x]] += 1
            _candidate_row(c, up, down, zb, za, same, cbd, void, nmc_a, nmc_b, cand)
            found = _list_candidates(cand, v, ((z - z0) * ny + y) * nx, where, where_grey, found)
        total = counts[0] + counts[1] + counts[2] + counts[3]
        for code in range(n):
            interior[code] += total[code * nb: (code + 1) * nb]
            per_slice[z - z0, code] += (total[code * nb: (code + 1) * nb].sum()
                                        + total[(n + code) * nb: (n + code + 1) * nb].sum())
    return found


@njit(cache=True, nogil=True)
def _nmc_mask(p, low, high, z, out):
    """NMC (codes ``low`` or ``high``) of plane ``z`` into ``out`` ((y + 2, x) uint8, padded by one row each
    side in y); rows and planes outside ``p`` are 1 (they count as NMC in the erosion). Returns whether
    the plane holds NMC."""
    nz, ny, nx = p.shape
    out[:] = 1
    if z < 0 or z >= nz:
        return False
    found = False
    pz = p[z]
    for y in range(ny):
        py, my = pz[y], out[y + 1]
        for x in range(nx):
            my[x] = (py[x] == low) | (py[x] == high)
        found |= my.any()
    return found


@njit(cache=True, nogil=True)
def _nmc_weights(below, mid, above, thr, dz, inner, uz):
    """``uz = (v - thr) w`` of one plane, ``w = (interior + 0.05) nmc`` (float32), from the NMC masks of
    the plane and its two neighbours (:func:`_nmc_mask`); ``interior``: NMC with its 6 neighbours NMC, the
    erosion of :func:`detachment.slab_phases.erode6`."""
    ny, nx = dz.shape
    five = np.float32(0.05)
    for y in range(ny):
        c, up, down, zb, za = mid[y + 1], mid[y], mid[y + 2], below[y + 1], above[y + 1]
        for x in range(nx):
            inner[x] = c[x] & up[x] & down[x] & zb[x] & za[x]
        left, right = c[: nx - 1], c[1:]
        head, tail = inner[: nx - 1], inner[1:]
        for x in range(nx - 1):
            head[x] &= right[x]
            tail[x] &= left[x]
        ur, dr = uz[y], dz[y]
        for x in range(nx):
            w = (np.float32(inner[x]) + five) * np.float32(c[x])
            ur[x] = (dr[x] - thr) * w


@njit(cache=True, nogil=True)
def _smooth_rows(src, k, out, acc):
    """Along y: ``out[y] = sum_j k[j] src[clamp(y + j - R)]``, in the order of :func:`nmc_refine`."""
    ny, nx = src.shape
    r = k.size // 2
    for y in range(ny):
        s = src[y]
        for x in range(nx):
            acc[x] = s[x] * k[r]
        for j in range(r, 0, -1):
            a = src[max(y - j, 0)]
            b = src[min(y + j, ny - 1)]
            kj = k[r + j]
            for x in range(nx):
                acc[x] += (a[x] + b[x]) * kj
        out[y] = acc


@njit(cache=True, nogil=True)
def _smooth_columns(src, k, out, row, acc):
    """Along x: ``out[:, x] = sum_j k[j] src[:, clamp(x + j - R)]``, same order."""
    ny, nx = src.shape
    r = k.size // 2
    for y in range(ny):
        row[r: r + nx] = src[y]
        row[:r] = src[y, 0]
        row[r + nx:] = src[y, nx - 1]
        mid = row[r: r + nx]
        for x in range(nx):
            acc[x] = mid[x] * k[r]
        for j in range(r, 0, -1):
            a = row[r - j: r - j + nx]
            b = row[r + j: r + j + nx]
            kj = k[r + j]
            for x in range(nx):
                acc[x] += (a[x] + b[x]) * kj
        out[y] = acc


@njit(cache=True, nogil=True)
def nmc_refine(data, p, z0, z1, low, high, thr, k, bound, undecided):
    """Split the NMC voxels of rows ``z0:z1`` into ``low`` / ``high`` where a float32 screen decides.

    The screen is ``s = G * ((v - thr) w)``, ``w = (interior + 0.05) nmc``, separable (z, then y, then
    x) with the nearest voxel repeated beyond the slab's faces, each pass
    ``k[R] s[i] + sum_{j=R..1} k[R + j] (s[i - j] + s[i + j])``: the operations
    :meth:`detachment.slab_phases.SlabClassifier._bound` counts. ``s > bound`` gives ``high``,
    ``s < -bound`` gives ``low``, in place in ``p``; the other NMC voxels are left as they are and their
    (z, y, x) indices into ``p`` written to ``undecided`` ((m, 3) int64) in C order, as many as it holds.
    NMC membership does not change, so the rows outside ``z0:z1`` serve as context unchanged. Returns the
    number of undecided voxels (all of them, also beyond ``m``).
    """
    nz, ny, nx = data.shape
    r = k.size // 2
    # rings of planes, so that the working set stays in the CPU cache: the NMC masks of three planes
    # and the weighted values u of the 2 R + 1 planes the z pass reads
    masks = np.empty((3, ny + 2, nx), np.uint8)
    u = np.empty((2 * r + 1, ny, nx), np.float32)
    has_nmc = np.zeros(nz + 1, np.bool_)
    inner = np.empty(nx, np.uint8)
    first = max(0, z0 - r)
    for z in (first - 1, first):
        has_nmc[max(z, 0)] |= _nmc_mask(p, low, high, z, masks[z % 3])
    done = first  # u holds the planes below ``done``
    plane = np.empty((ny, nx), np.float32)
    rows = np.empty((ny, nx), np.float32)
    acc = np.empty(nx, np.float32)
    row = np.empty(nx + 2 * r, np.float32)
    n_undecided = 0
    for z in range(z0, z1):
        while done <= min(z + r, nz - 1):
            has_nmc[min(done + 1, nz)] = _nmc_mask(p, low, high, done + 1, masks[(done + 1) % 3])
            _nmc_weights(masks[(done - 1) % 3], masks[done % 3], masks[(done + 1) % 3], thr, data[done], inner,
                         u[done % (2 * r + 1)])
            done += 1
        if not has_nmc[z]:
            continue
        _smooth_planes(u, z, nz, k, plane)
        _smooth_rows(plane, k, rows, acc)
        _smooth_columns(rows, k, plane, row, acc)
        n_undecided = _decide(plane, p[z], z, low, high, bound, undecided, n_undecided)
    return n_undecided


@njit(cache=True, nogil=True)
def _smooth_planes(u, z, nz, k, out):
    """Along z: ``out = sum_j k[j] u[clamp(z + j - R)]``, ``u`` a ring of 2 R + 1 planes (index z mod 2 R + 1)."""
    r = k.size // 2
    ring = 2 * r + 1
    mid = u[z % ring]
    ny, nx = out.shape
    for y in range(ny):
        for x in range(nx):
            out[y, x] = mid[y, x] * k[r]
    for j in range(r, 0, -1):
        below = u[max(z - j, 0) % ring]
        above = u[min(z + j, nz - 1) % ring]
        kj = k[r + j]
        for y in range(ny):
            for x in range(nx):
                out[y, x] += (below[y, x] + above[y, x]) * kj


@njit(cache=True, nogil=True)
def _decide(s, pz, z, low, high, bound, where, n):
    """Set the NMC voxels of plane ``pz`` (volume index ``z``) to ``high`` where ``s > bound``, ``low`` where
    ``s < -bound``; write the others' (z, y, x) to ``where[n:]`` while it has room. Returns ``n`` plus
    how many there were."""
    for y in range(pz.shape[0]):
        sy, py = s[y], pz[y]
        for x in range(pz.shape[1]):
            c = py[x]
            if c == low or c == high:
                if sy[x] > bound:
                    py[x] = high
                elif sy[x] < -bound:
                    py[x] = low
                else:
                    if n < where.shape[0]:
                        where[n, 0] = z
                        where[n, 1] = y
                        where[n, 2] = x
                    n += 1
    return n


@njit(cache=True, nogil=True)
def _line_edges(cls, run, out):
    """Edges of one line of classes (1 solid, 2 background, 0 other): ``run`` voxels of one class, then
    ``run`` of the other. Writes their first positions into ``out[:, 0]`` and the first class into
    ``out[:, 1]``, by increasing position; returns how many."""
    n = cls.size
    found = 0
    start = 0  # of the current run
    prev_len, prev_class = 0, 0
    for t in range(1, n + 1):
        if t < n and cls[t] == cls[start]:
            continue
        length, c = t - start, cls[start]
        if prev_class != 0 and c == 3 - prev_class and prev_len >= run and length >= run:
            out[found, 0] = start - run
            out[found, 1] = prev_class
            found += 1
        prev_len, prev_class = length, c
        start = t
    return found


@njit(cache=True, nogil=True)
def edge_profiles(phases, grey, keep, every, solid, background, run, totals, counts, flat_totals, flat_counts,
                  directions):
    """Add the grey-level profiles across straight solid / background edges of the slices ``keep`` of a slab.

    Lines run along y (where ``directions[0]``), then along x (where ``directions[1]``; bools), in each
    (z, y, x) slice of ``phases`` whose index is in ``keep``
    (int64, increasing); an edge is ``run`` voxels of one class (solid: either code of the pair ``solid``;
    background: either of ``background``) followed by ``run`` of the other. Where ``every[k]`` (bool) is
    set, its profile (``2 run`` float32 grey levels, solid side first) is added to ``totals[k]``
    ((len(keep), 2 run) float64) for ``keep[k]``, in C order of (line direction, slice, line, position),
    and ``counts[k]`` (int64) counts them. An edge is also flat, and added to ``flat_totals`` /
    ``flat_counts`` the same way (whatever ``every``), where its ``run`` background voxels are one phase and
    the four neighbouring lines (the next lines in the slice, the same line in the slices above and below),
    those that lie in the array, show the same phases over its ``2 run`` voxels (NMC low and high count as
    one): the surface is then close to perpendicular to the line, and one phase lies beyond it. Slices not
    in ``keep`` are read only as neighbours.
    """
    nz = phases.shape[0]
    cls = np.zeros(phases.shape, np.uint8)  # 1 solid, 2 background, 0 other: the runs of an edge
    phase = np.zeros(phases.shape, np.uint8)  # 1 solid, 2 and 3 the two background phases, 0 other
    for z in range(nz):
        for y in range(phases.shape[1]):
            pz, cz, fz = phases[z, y], cls[z, y], phase[z, y]
            for x in range(phases.shape[2]):
                c = pz[x]
                cz[x] = ((c == solid[0]) | (c == solid[1])) + 2 * ((c == background[0]) | (c == background[1]))
                fz[x] = 3 if c == background[1] and c != background[0] else cz[x]
    for axis in range(2):
        if not directions[axis]:
            continue
        # lines along y: a transposed copy, so that every line is contiguous
        c3 = np.ascontiguousarray(cls.transpose(0, 2, 1)) if axis == 0 else cls
        f3 = np.ascontiguousarray(phase.transpose(0, 2, 1)) if axis == 0 else phase
        g3 = np.ascontiguousarray(grey.transpose(0, 2, 1)) if axis == 0 else grey
        lines, n = c3.shape[1], c3.shape[2]
        if n < 2 * run:
            continue
        edges = np.empty((n, 2), np.int64)
        for k in range(keep.size):
            z = keep[k]
            for o in range(lines):
                g, f = g3[z, o], f3[z, o]
                for e in range(_line_edges(c3[z, o], run, edges)):
                    i, first = edges[e, 0], edges[e, 1]
                    beyond = i + run if first == 1 else i  # the background run's first voxel
                    flat = _one_phase(f, beyond, run) and _same_classes(f3, z, o, i, 2 * run)
                    for j in range(2 * run):
                        v = g[i + j]
                        t = j if first == 1 else 2 * run - 1 - j
                        if every[k]:
                            totals[k, t] += v
                        if flat:
                            flat_totals[k, t] += v
                    if every[k]:
                        counts[k] += 1
                    if flat:
                        flat_counts[k] += 1


@njit(cache=True, nogil=True)
def _one_phase(line, i, length):
    """Whether ``line[i:i + length]`` holds one value."""
    for j in range(i + 1, i + length):
        if line[j] != line[i]:
            return False
    return True


@njit(cache=True, nogil=True)
def _same_classes(c3, z, o, i, length):
    """Whether the lines next to line ``o`` of slice ``z`` of ``c3`` ((z, line, position) classes), in
    the slice and in the slices above and below, where they exist, hold the classes of
    ``c3[z, o, i:i + length]``."""
    nz, lines = c3.shape[0], c3.shape[1]
    for dz, do in ((0, -1), (0, 1), (-1, 0), (1, 0)):
        zz, oo = z + dz, o + do
        if zz < 0 or zz >= nz or oo < 0 or oo >= lines:
            continue
        for j in range(i, i + length):
            if c3[zz, oo, j] != c3[z, o, j]:
                return False
    return True


@njit(cache=True, nogil=True)
def _cross6(src, dst, erode):
    """One erosion (``erode``) or dilation of the (z, y, x) uint8 0/1 mask ``src`` by the 6-neighbour cross
    into ``dst``, voxels outside the array counting as set: a dilation sets the array's faces."""
    nz, ny, nx = src.shape
    for z in range(nz):
        for y in range(ny):
            c = src[z, y]
            # a missing neighbour is replaced by the voxel itself, which leaves the AND / OR unchanged
            up = src[z, y - 1] if y > 0 else c
            down = src[z, y + 1] if y < ny - 1 else c
            zb = src[z - 1, y] if z > 0 else c
            za = src[z + 1, y] if z < nz - 1 else c
            d = dst[z, y]
            head, tail = d[: nx - 1], d[1:]
            left, right = c[: nx - 1], c[1:]
            if erode:
                for x in range(nx):
                    d[x] = c[x] & up[x] & down[x] & zb[x] & za[x]
                for x in range(nx - 1):
                    head[x] &= right[x]
                for x in range(nx - 1):
                    tail[x] &= left[x]
            elif z == 0 or z == nz - 1 or y == 0 or y == ny - 1:
                d[:] = 1
            else:
                for x in range(nx):
                    d[x] = c[x] | up[x] | down[x] | zb[x] | za[x]
                for x in range(nx - 1):
                    head[x] |= right[x]
                for x in range(nx - 1):
                    tail[x] |= left[x]
                d[0] = 1
                d[nx - 1] = 1


@njit(cache=True, nogil=True)
def opening6(mask, iterations, work, out):
    """Binary opening of the (z, y, x) uint8 0/1 ``mask`` by the 6-neighbour cross, ``iterations`` erosions
    then as many dilations, voxels outside the array counting as set (scipy.ndimage.binary_opening with
    ``border_value=1``), into ``out``; ``work`` is scratch of the same shape. ``mask`` is not changed."""
    if iterations == 0:
        out[...] = mask
        return
    # odd steps write ``work``, even ones ``out``: the last (step 2 iterations) lands in ``out``
    a, b = work, out
    _cross6(mask, a, True)
    for i in range(1, 2 * iterations):
        _cross6(a, b, i < iterations)
        a, b = b, a


@njit(cache=True, nogil=True)
def reassign_al(p, data, al, kept, start, mean, below, above):
    """Reassign, in place, the Al voxels (``al`` set) of ``p`` that are not ``kept`` or lie at z >=
    ``start[y, x]`` (the column's first slice above the collector, slab z): to ``below`` where the grey
    level is < ``mean``, else to ``above``. Returns how many."""
    nz, ny, nx = p.shape
    moved = 0
    for z in range(nz):
        for y in range(ny):
            pz, mz, kz, dz, sz = p[z, y], al[z, y], kept[z, y], data[z, y], start[y]
            for x in range(nx):
                if mz[x] and (not kz[x] or z >= sz[x]):
                    pz[x] = below if dz[x] < mean else above
                    moved += 1
    return moved
