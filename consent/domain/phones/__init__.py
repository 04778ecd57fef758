"""Phone number normalisation: every spelling of a number becomes one E.164 key.

Plain Python on top of `phonenumbers`. The pipeline normalises each distinct
(raw string, region hint) pair once, so the per-row cost of a nightly run is a
join, not a parse; `normalise_many` can spread the distinct pairs over worker
processes (parsing is CPU-bound Python, threads do not help).
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import polars as pl

from consent.domain.phones.reference import (  # noqa: F401 (the package's public names)
    METADATA_VERSION,
    PHONE_BOOK_SCHEMA,
    NormalisedPhone,
    normalise,
    normalise_frame_reference,
    parse_key,
    wa_id_to_raw,
)
from consent.domain.phones.columnar import normalise_frame_columnar

# `normalise_frame` decides the common spellings column-wise (consent/domain/phones/columnar.py) and
# parses only the rest one by one; False parses every spelling with `normalise` (the reference).
COLUMNAR_FAST_PATH = True

def normalise_many(
    pairs: Iterable[tuple[str, str | None]],
    workers: int = 1,
    parallel_threshold: int = 20_000,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[NormalisedPhone]:
    """Normalise pairs, in `workers` processes when there are many: the same
    results as `normalise` on each pair (a test compares them)."""
    frame = normalise_frame(pairs, workers, parallel_threshold, progress)
    return [
        NormalisedPhone(raw, hint or None, e164, region, kind, reason)
        for raw, hint, e164, region, kind, reason in frame.iter_rows()
    ]


def normalise_frame(
    pairs: Iterable[tuple[str, str | None]],
    workers: int = 1,
    parallel_threshold: int = 20_000,
    progress: Callable[[str, int, int], None] | None = None,
) -> pl.DataFrame:
    """`normalise_many` as a frame (PHONE_BOOK_SCHEMA, in the order of `pairs`): the common spellings
    decided in columns, the rest parsed once per distinct parse key by `phonenumbers`."""
    if COLUMNAR_FAST_PATH:
        return normalise_frame_columnar(list(pairs), workers, parallel_threshold, progress)
    return normalise_frame_reference(pairs, workers, parallel_threshold, progress)


class _Lookup(dict):
    def __missing__(self, pair: tuple[str, str | None]) -> NormalisedPhone:
        found = self[pair] = normalise(*pair)
        return found


class PhoneBook:
    """The normalisation of every (raw, hint) pair of a run.

    A frame for column-wise joins (`frame`); `lookup` gives row-wise code a
    mapping in which a pair not in the book is normalised on first use, so a
    lookup never fails.
    """

    def __init__(self, frame: pl.DataFrame):
        self.frame = frame.select(list(PHONE_BOOK_SCHEMA))

    @classmethod
    def of_pairs(cls, pairs: Iterable[tuple[str, str | None]], workers: int = 1) -> "PhoneBook":
        return cls(normalise_frame(sorted(set(pairs), key=lambda p: (p[0], p[1] or "")), workers=workers))

    def lookup(
        self, pairs: Iterable[tuple[str, str | None]] | None = None
    ) -> Mapping[tuple[str, str | None], NormalisedPhone]:
        """A mapping of these pairs (all when None): cheaper than the whole book when few rows are read one by one."""
        frame = self.frame
        if pairs is not None:
            wanted = pl.DataFrame(
                [(raw, hint or "") for raw, hint in pairs], schema={"phone_raw": pl.Utf8, "country_hint": pl.Utf8}, orient="row"
            )
            frame = frame.join(wanted, on=["phone_raw", "country_hint"], how="semi")
        return _Lookup(
            ((raw, hint or None), NormalisedPhone(raw, hint or None, e164, region, kind, reason))
            for raw, hint, e164, region, kind, reason in frame.iter_rows()
        )
