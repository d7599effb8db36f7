"""Multi-hot labels stored by row: the class indices of each image (compressed sparse rows).

A dense ``[images, classes]`` float32 matrix costs ``4 * images * classes`` bytes whatever the
file holds: a 400 KB CSV of 20,000 rows over 10,000 classes would take 800 MB. The loaders
(``load_csv``, ``load_coco``) return a :class:`MultiHotLabels` instead: 4 bytes per label
present plus 8 per row, i.e. bounded by what the file holds; the tf.data pipeline
(``make_dataset``) makes each image's dense row only when the image is read.

It behaves as the dense matrix for the usual reads: ``.shape``, ``.dtype``, ``len``,
``labels[i]`` (a dense row), ``labels[rows]`` (a slice, index array or boolean mask: a
:class:`MultiHotLabels` of those rows), ``labels[i, j]``, ``.any(axis=1)``,
``.sum(axis=...)``, ``.tolist()``, and ``np.asarray(labels)`` (densified: the full cost,
only when asked for). A scipy.sparse matrix would do the storage, but scipy is not a
dependency of keras-mld and its matrices do not follow the numpy indexing rules above.
"""
import numpy as np


class MultiHotLabels:
    """A float32 multi-hot ``[M, N]`` matrix kept as per-row sorted class indices.

    Args:
        indptr: int64 ``[M + 1]``: the row ``i``'s classes are ``indices[indptr[i]:indptr[i+1]]``.
        indices: int32 class indices in ``[0, N)``, sorted and unique within each row.
        num_classes: ``N``.
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, indptr, indices, num_classes):
        self.indptr = np.asarray(indptr, np.int64)
        self.indices = np.asarray(indices, np.int32)
        self.num_classes = int(num_classes)
        if self.indptr.ndim != 1 or not len(self.indptr) or self.indptr[0] != 0 \
                or self.indptr[-1] != len(self.indices) or np.any(np.diff(self.indptr) < 0):
            raise ValueError("MultiHotLabels: indptr must rise from 0 to len(indices)")
        if len(self.indices) and (self.indices.min() < 0
                                  or self.indices.max() >= self.num_classes):
            raise ValueError(f"MultiHotLabels: class indices must be in [0, {num_classes})")

    @classmethod
    def from_rows(cls, rows, num_classes):
        """From an iterable of per-row class index lists (duplicates counted once)."""
        indptr, indices = [0], []
        for row in rows:
            unique = sorted(set(int(j) for j in row))
            indices.extend(unique)
            indptr.append(len(indices))
        return cls(np.array(indptr, np.int64), np.array(indices, np.int32), num_classes)

    @classmethod
    def from_pairs(cls, rows, cols, num_rows, num_classes):
        """From ``(row, class)`` index pairs in any order (duplicates counted once)."""
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
        keep = np.ones(len(rows), bool)
        keep[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
        rows, cols = rows[keep], cols[keep]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num_rows))])
        return cls(indptr, cols, num_classes)

    @classmethod
    def from_dense(cls, dense):
        """From a dense ``[M, N]`` 0/1 matrix (nonzero entries are labels)."""
        dense = np.asarray(dense)
        rows, cols = np.nonzero(dense)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(dense)))])
        return cls(indptr, cols, dense.shape[1])

    @property
    def shape(self):
        return (len(self.indptr) - 1, self.num_classes)

    @property
    def size(self):
        return self.shape[0] * self.shape[1]

    def __len__(self):
        return self.shape[0]

    @property
    def nbytes(self):
        """Bytes held (not the dense matrix's)."""
        return self.indptr.nbytes + self.indices.nbytes

    def row_lengths(self):
        """int64 ``[M]``: labels per row."""
        return np.diff(self.indptr)

    def row(self, i):
        """int32 class indices of row ``i``."""
        return self.indices[self.indptr[i]:self.indptr[i + 1]]

    def toarray(self):
        """The dense float32 ``[M, N]`` matrix."""
        dense = np.zeros(self.shape, np.float32)
        dense[np.repeat(np.arange(len(self)), self.row_lengths()), self.indices] = 1.0
        return dense

    def __array__(self, dtype=None, copy=None):
        dense = self.toarray()
        return dense if dtype is None else dense.astype(dtype)

    def tolist(self):
        return self.toarray().tolist()

    def _rows(self, rows):
        """A :class:`MultiHotLabels` of the given rows (int index array)."""
        lengths = self.row_lengths()[rows]
        starts = self.indptr[:-1][rows]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # for each output label: its row's start plus its offset within the row
        offsets = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths)
        return MultiHotLabels(indptr, self.indices[np.repeat(starts, lengths) + offsets],
                              self.num_classes)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if len(key) != 2:
                raise IndexError(f"MultiHotLabels: too many indices {key!r}")
            picked = self[key[0]]
            return picked[key[1]] if isinstance(picked, np.ndarray) \
                else picked.toarray()[:, key[1]]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"MultiHotLabels: row {key} out of range for {len(self)} rows")
            dense = np.zeros(self.num_classes, np.float32)
            dense[self.row(i)] = 1.0
            return dense
        index = np.arange(len(self))[key]
        return self._rows(np.atleast_1d(index).astype(np.int64))

    def any(self, axis=None):
        if axis is None:
            return bool(len(self.indices))
        if axis in (1, -1):
            return self.row_lengths() > 0
        return np.bincount(self.indices, minlength=self.num_classes) > 0

    def sum(self, axis=None, dtype=None):
        if axis is None:
            return np.float32(len(self.indices))
        if axis in (1, -1):
            return self.row_lengths().astype(dtype or np.float32)
        return np.bincount(self.indices, minlength=self.num_classes).astype(dtype or np.float32)

    def __repr__(self):
        return (f"MultiHotLabels(shape={self.shape}, labels={len(self.indices)}, "
                f"{self.nbytes} bytes)")
