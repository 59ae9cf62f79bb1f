"""How diverse is a data file? distinct-n, near duplicates (MinHash), lengths, embedding spread.

Each statistic is computed separately for the instructions (last user turns) and the responses.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter
from typing import Any

import torch

from delia.core.example import Example
from delia.synth.embed import load_embedder

WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
LENGTH_EDGES = (0, 8, 16, 32, 64, 128, 256, 512, 1024)
NEAR_DUP_THRESHOLD = 0.8  # estimated Jaccard similarity of word 3-gram sets
SPREAD_SAMPLE = 2000  # texts embedded for the spread (a seeded sample beyond this)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / all n-grams over the whole corpus (Li et al. 2016's distinct-n)."""
    grams: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        tokens = words(text)
        grams.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(grams.values())
    return round(len(grams) / total, 4) if total else 0.0


def _shingles(text: str) -> set[bytes]:
    tokens = words(text)
    if len(tokens) < 3:
        return {" ".join(tokens).encode()} if tokens else {b""}
    return {" ".join(tokens[i : i + 3]).encode() for i in range(len(tokens) - 2)}


def near_duplicate_rate(
    texts: list[str], threshold: float = NEAR_DUP_THRESHOLD, num_perm: int = 128
) -> float:
    """Fraction of texts with at least one other text whose MinHash Jaccard estimate is >= threshold."""
    from datasketch import MinHash, MinHashLSH

    if len(texts) < 2:
        return 0.0
    hashes = MinHash.bulk([_shingles(t) for t in texts], num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    duplicated: set[int] = set()
    for index, minhash in enumerate(hashes):
        for other in lsh.query(minhash):
            if hashes[other].jaccard(minhash) >= threshold:
                duplicated.update((index, other))
        lsh.insert(index, minhash)
    return round(len(duplicated) / len(texts), 4)


def length_histogram(texts: list[str]) -> dict[str, int]:
    """Word counts in doubling bins: {"0-7": n, "8-15": n, ..., "1024+": n}."""
    labels = [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(LENGTH_EDGES)]
    labels.append(f"{LENGTH_EDGES[-1]}+")
    histogram = dict.fromkeys(labels, 0)
    for text in texts:
        length = len(words(text))
        index = next((i for i, hi in enumerate(LENGTH_EDGES[1:]) if length < hi), len(labels) - 1)
        histogram[labels[index]] += 1
    return histogram


def tfidf_vectors(texts: list[str]) -> list[dict[str, float]]:
    """Unit-length sparse TF-IDF vectors (smoothed idf). Hand-written: scikit-learn is not a dependency."""
    docs = [Counter(words(t)) for t in texts]
    doc_freq: Counter[str] = Counter()
    for doc in docs:
        doc_freq.update(doc.keys())
    idf = {term: math.log((1 + len(docs)) / (1 + df)) + 1 for term, df in doc_freq.items()}
    vectors = []
    for doc in docs:
        vector = {term: count * idf[term] for term, count in doc.items()}
        norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
        vectors.append({term: v / norm for term, v in vector.items()})
    return vectors


def _mean_pairwise_cosine_sparse(vectors: list[dict[str, float]]) -> float:
    # For unit vectors, sum_{i != j} cos(i, j) = |sum_i v_i|^2 - n: no n^2 loop needed.
    total: Counter[str] = Counter()
    for vector in vectors:
        total.update(vector)
    n = len(vectors)
    return (sum(v * v for v in total.values()) - n) / (n * (n - 1))


def _mean_pairwise_cosine_dense(vectors: torch.Tensor) -> float:
    n = vectors.shape[0]
    summed = vectors.sum(0)
    return float((summed @ summed - n) / (n * (n - 1)))


def embedding_spread(texts: list[str], embedder: Any = None, seed: int = 0) -> dict[str, Any]:
    """1 - mean pairwise cosine similarity: 0 when every text is the same, higher when they spread out."""
    texts = [t for t in texts if t.strip()]
    if len(texts) > SPREAD_SAMPLE:
        texts = random.Random(seed).sample(texts, SPREAD_SAMPLE)
    if len(texts) < 2:
        return {"method": "none", "spread": None, "texts": len(texts)}
    if embedder is not None:
        mean_cosine = _mean_pairwise_cosine_dense(embedder.encode(texts))
        method = embedder.name
    else:
        mean_cosine = _mean_pairwise_cosine_sparse(tfidf_vectors(texts))
        method = "tfidf"
    return {"method": method, "spread": round(1 - mean_cosine, 4), "texts": len(texts)}


def field_stats(texts: list[str], embedder: Any) -> dict[str, Any]:
    present = [t for t in texts if t.strip()]
    lengths = [len(words(t)) for t in present]
    return {
        "texts": len(present),
        "mean_words": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
        "distinct_1": distinct_n(present, 1),
        "distinct_2": distinct_n(present, 2),
        "near_duplicate_rate": near_duplicate_rate(present),
        "exact_duplicate_rate": round(1 - len(set(present)) / len(present), 4) if present else 0.0,
        "length_histogram": length_histogram(present),
        "embedding_spread": embedding_spread(present, embedder),
    }


def dataset_stats(examples: list[Example], embedder: Any = "auto") -> dict[str, Any]:
    """Statistics for instructions and responses; embedder "auto": the offline one when installed."""
    if embedder == "auto":
        embedder = load_embedder()
    sources = Counter(ex.source for ex in examples)
    return {
        "records": len(examples),
        "sources": dict(sources),
        "near_duplicate_threshold": NEAR_DUP_THRESHOLD,
        "instruction": field_stats([ex.instruction for ex in examples], embedder),
        "response": field_stats([ex.response for ex in examples], embedder),
    }
