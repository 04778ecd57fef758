"""What every channel adapter returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from consent.events import SourceRow


@dataclass
class FileRead:
    """The rows of one file (every row, good or bad) and file-level notes."""

    rows: list[SourceRow]
    notes: list[str] = field(default_factory=list)
