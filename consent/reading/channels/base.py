"""What every channel adapter returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from consent.domain.events import SourceRow

if TYPE_CHECKING:
    from consent.reading.channels.csv_export import CsvTable
    from consent.reading.channels.whatsapp_webhook import WebhookTable


@dataclass
class FileRead:
    """The rows of one file (every row, good or bad) and file-level notes.

    `rows` are read one by one (CSV rows that are malformed; webhook items that are not ordinary);
    `table` holds a CSV file's well-formed rows column by column, `webhook` a webhook file's
    ordinary items.
    """

    rows: list[SourceRow]
    notes: list[str] = field(default_factory=list)
    table: CsvTable | None = None
    webhook: WebhookTable | None = None
    # The rows the input itself says it holds, counted apart from the reader (a webhook file's items,
    # counted in its payloads): a reader that drops an item then breaks conservation instead of hiding it.
    items: int | None = None

    @property
    def row_count(self) -> int:
        if self.items is not None:
            return self.items
        return (len(self.rows) + (self.table.height if self.table is not None else 0)
                + (self.webhook.height if self.webhook is not None else 0))

    def all_rows(self) -> list[SourceRow]:
        """Every row as a `SourceRow`, in file order."""
        if self.webhook is not None:
            from consent.reading.channels.whatsapp_webhook import item_order

            return sorted([*self.rows, *self.webhook.source_rows()], key=lambda r: item_order(r.line, r.pointer))
        if self.table is None:
            return list(self.rows)
        return sorted([*self.rows, *self.table.source_rows()], key=lambda r: (r.line, r.pointer or ""))
