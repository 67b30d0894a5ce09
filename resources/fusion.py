"""Reciprocal rank fusion of ranked passes (vector, full-text), as Spice's ``rrf`` and LanceDB do. No Dagster.

A key ranked ``r`` (1-based) by a pass of weight ``w`` gets ``w / (k + r)`` from it; its fused score
is the sum over the passes that found it. ``k`` (60 by default, the value of Cormack et al. that
Spice and LanceDB use) damps the head: rank 1 and rank 5 differ little next to being found by two
passes at all. Ties go to the key with the better best rank, then to the earlier pass's order.
Chunked datasets fuse per row: ``first_per_group`` turns each pass's chunk ranking into a row
ranking (a row ranks where its best chunk does) before the passes are fused.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

RRF_K = 60


@dataclass
class Fused:
    key: Hashable
    score: float  # the fused score, higher is better
    ranks: dict[str, int] = field(default_factory=dict)  # pass -> 1-based rank, for the passes that found it


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[Hashable]], k: int = RRF_K, weights: Mapping[str, float] | None = None
) -> list[Fused]:
    """Every key of every ranking, best fused score first. A key repeated within one ranking counts
    at its first (best) place. Raises ValueError on a negative ``k`` or weight, or an unknown pass."""
    if k < 0:
        raise ValueError(f"rrf k must be 0 or more, got {k}")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(rankings))
    if unknown:
        raise ValueError(f"weights name passes that did not run: {unknown} (passes: {sorted(rankings)})")
    fused: dict[Hashable, Fused] = {}
    order: dict[Hashable, tuple[int, int]] = {}  # first sighting: (pass number, rank) for ties
    for number, (name, keys) in enumerate(rankings.items()):
        weight = float(weights.get(name, 1.0))
        if weight < 0:
            raise ValueError(f"the weight of pass {name!r} must be 0 or more, got {weight}")
        rank = 0
        for key in keys:
            entry = fused.setdefault(key, Fused(key, 0.0))
            if name in entry.ranks:
                continue
            rank += 1
            entry.ranks[name] = rank
            entry.score += weight / (k + rank)
            order.setdefault(key, (number, rank))
    return sorted(fused.values(), key=lambda f: (-f.score, min(f.ranks.values()), order[f.key]))


def first_per_group(keys: Sequence[Hashable], group_of: Mapping[Hashable, Hashable]) -> list[Hashable]:
    """The groups of ``keys`` (chunks -> their rows) in the order of each group's first key."""
    return list(dict.fromkeys(group_of[key] for key in keys))
