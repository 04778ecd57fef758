"""The registry of consent notices: what people were told when they opted in.

`notices/` in the exports folder holds one file per version: YAML
(`*.yaml`/`*.yml`, the text under `text:`) or Markdown with YAML front matter
(`*.md`, the text is the body). Each names its `version`, the `business_name`,
the `channels` where it is shown, the `purposes` it asks for, the stated
`frequency`, `opt_out_instructions`, `privacy_policy_url`, `valid_from` and
`valid_until`. Evidence must not change after the fact: a version already in
the warehouse whose text or fields change is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path

import polars as pl
import yaml

from consent.domain.notices import Notice
from consent.domain.schema import NOTICE_SCHEMA

@dataclass
class NoticeFolder:
    notices: list[Notice]
    refused: list[tuple[str, str]]  # (file, reason)

    def frame(self) -> pl.DataFrame:
        rows = [{k: getattr(n, k) for k in NOTICE_SCHEMA} for n in self.notices]
        return pl.DataFrame(rows, schema=NOTICE_SCHEMA)


def _moment(value) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time.min)
    else:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def _list(value) -> list[str]:
    if value in (None, ""):
        return []
    items = value if isinstance(value, list) else str(value).replace(";", ",").split(",")
    return sorted({str(i).strip().lower() for i in items if str(i).strip()})


def parse_notice(path: Path, relative: str) -> Notice:
    raw = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".md":
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n?(.*)$", raw, re.DOTALL)
        if not match:
            raise ValueError("Markdown notice without YAML front matter (--- ... ---)")
        meta = yaml.safe_load(match.group(1)) or {}
        text = match.group(2).strip()
    else:
        meta = yaml.safe_load(raw) or {}
        text = str(meta.get("text") or "").strip()
    if not isinstance(meta, dict):
        raise ValueError("expected a mapping of fields")
    version = str(meta.get("version") or "").strip()
    if not version:
        raise ValueError("missing 'version'")
    if not text:
        raise ValueError("missing the text shown to people")
    unknown = set(meta) - {"version", "text", "business_name", "channels", "purposes", "frequency",
                           "opt_out_instructions", "privacy_policy_url", "valid_from", "valid_until",
                           "business"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    return Notice(
        notice_version=version,
        notice_text=text,
        business_name=(str(meta["business_name"]).strip() if meta.get("business_name") else None),
        channels=_list(meta.get("channels")),
        purposes=_list(meta.get("purposes")),
        frequency=(str(meta["frequency"]) if meta.get("frequency") else None),
        opt_out_instructions=(str(meta["opt_out_instructions"]) if meta.get("opt_out_instructions") else None),
        privacy_policy_url=(str(meta["privacy_policy_url"]) if meta.get("privacy_policy_url") else None),
        valid_from=_moment(meta.get("valid_from")),
        valid_until=_moment(meta.get("valid_until")),
        source_file=relative,
        business=(str(meta["business"]).strip() if meta.get("business") else None),
    )


def read_notices(exports_dir: Path) -> NoticeFolder:
    folder = exports_dir / "notices"
    notices: list[Notice] = []
    refused: list[tuple[str, str]] = []
    seen: dict[str, Notice] = {}
    if not folder.is_dir():
        return NoticeFolder(notices, refused)
    from consent.reading.ingest import list_exports  # the one rule for files, and the exports folder as boundary

    listing = list_exports(exports_dir, include_notices=True)
    refused += [(name, note) for channel, name, note in listing.unread if channel == "notices"]
    for export in (f for f in listing.files if f.channel == "notices"):
        path, relative = export.path, export.source_file
        if path.suffix.lower() not in (".yaml", ".yml", ".md"):
            refused.append((relative, f"unsupported notice file type {path.suffix or '(none)'}"))
            continue
        try:
            notice = parse_notice(path, relative)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            refused.append((relative, f"unreadable notice: {str(exc).splitlines()[0]}"))
            continue
        twin = seen.get(notice.notice_version)
        if twin is not None:
            if twin.content_hash != notice.content_hash:
                refused.append((relative, f"version {notice.notice_version!r} is also defined, differently, in {twin.source_file}"))
            continue
        seen[notice.notice_version] = notice
        notices.append(notice)
    return NoticeFolder(notices, refused)
