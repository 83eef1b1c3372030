"""k-shot sampling from a train pool.

Owns `sample_shots`: class-balanced (balance="auto" | "strict") or uniform ("none") draws that are
deterministic given (pool, k, seed). Classes are the labels present in the pool; for COPA the "class"
is the position of the correct choice. Only `random.Random(seed)` is used, never the global RNG.
"""

from __future__ import annotations

import random
from collections import defaultdict

from .formats import DataError, Example

BALANCE_MODES = ("auto", "strict", "none")


def _quotas(sizes: dict[int, int], k: int, rng: random.Random, strict: bool) -> dict[int, int]:
    """Per-class quotas summing to k: k // C each, remainder to classes in seeded random order.

    A class with too few examples gives its shortfall to the others (or raises, if strict).
    """
    classes = sorted(sizes)
    order = classes[:]
    rng.shuffle(order)
    base, extra = divmod(k, len(classes))
    quota = {c: base + (1 if i < extra else 0) for i, c in enumerate(order)}
    short = {c: quota[c] - sizes[c] for c in classes if quota[c] > sizes[c]}
    if short and strict:
        detail = ", ".join(f"class {c}: needs {quota[c]}, has {sizes[c]}" for c in sorted(short))
        raise DataError(
            f"balance=strict: cannot draw k={k} balanced shots from a pool of {sum(sizes.values())} "
            f"({detail}); lower k or use balance=auto"
        )
    for c in short:
        quota[c] = sizes[c]
    missing = sum(short.values())
    while missing:  # round-robin over classes with spare examples, in the seeded order
        spare = [c for c in order if quota[c] < sizes[c]]
        if not spare:  # only when k > pool size, which sample_shots rules out first
            raise DataError(f"cannot draw k={k} shots from a pool of {sum(sizes.values())}")
        for c in spare[:missing]:
            quota[c] += 1
        missing -= min(missing, len(spare))
    return quota


def sample_shots(pool: list[Example], k: int, seed: int, balance: str = "auto") -> list[Example]:
    """Draw k examples from `pool`; output order is shuffled by the seed.

    balance="auto": class-balanced quotas, shortfalls of small classes spread over the others;
    "strict": like auto but raise DataError if a class cannot meet its quota; "none": uniform draw.
    """
    if balance not in BALANCE_MODES:
        raise DataError(f"unknown balance {balance!r}; expected one of {list(BALANCE_MODES)}")
    if k <= 0:
        raise DataError(f"k must be positive, got k={k}")
    if k > len(pool):
        raise DataError(f"k={k} shots requested but the train pool has only {len(pool)} examples")
    rng = random.Random(seed)
    if balance == "none":
        shots = rng.sample(pool, k)
    else:
        by_class: dict[int, list[Example]] = defaultdict(list)
        for ex in pool:
            by_class[ex.label].append(ex)
        quota = _quotas({c: len(v) for c, v in by_class.items()}, k, rng, strict=balance == "strict")
        shots = [ex for c in sorted(by_class) for ex in rng.sample(by_class[c], quota[c])]
    rng.shuffle(shots)
    return shots
