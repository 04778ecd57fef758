"""The baseline: the script an analyst would write first.

    python bench/naive.py EXPORTS_DIR OUT.duckdb

pandas `read_csv` per file, webhooks flattened with `json`, a per-row
`phonenumbers` apply, the latest event per number and purpose, written to
DuckDB. No consent rules, no quarantine, no lineage: it is the speed floor of
"doing it by hand", not a correct pipeline. It does not call
`phonenumbers.enable_pattern_cache()`, as a first script would not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb
import pandas as pd
import phonenumbers


def to_e164(phone, country):
    try:
        parsed = phonenumbers.parse(str(phone), country if isinstance(country, str) and country else None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def webhook_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    payloads = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else json.loads(text)
    payloads = payloads if isinstance(payloads, list) else [payloads]
    rows = []
    for payload in payloads:
        for entry in payload.get("entry", []):
            for change in entry.get("changes", []):
                value = change.get("value", {})
                for m in value.get("messages", []):
                    body = (m.get("text") or {}).get("body", "").strip().upper()
                    rows.append({"phone": "+" + m["from"], "event_type": "opt_out" if body.startswith("STOP") else "inbound_message",
                                 "occurred_at": pd.to_datetime(int(m["timestamp"]), unit="s", utc=True).isoformat(), "purposes": "marketing"})
                for p in value.get("user_preferences", []):
                    rows.append({"phone": "+" + p["wa_id"], "event_type": "opt_out" if p["value"] == "stop" else "resume",
                                 "occurred_at": pd.to_datetime(int(p["timestamp"]), unit="s", utc=True).isoformat(), "purposes": "marketing"})
    return rows


def main(exports: Path, out: Path) -> None:
    frames = []
    for path in sorted(exports.glob("*/*.csv")):
        frame = pd.read_csv(path, dtype=str, on_bad_lines="skip", encoding_errors="replace")
        frame["channel"] = path.parent.name
        frames.append(frame)
    for path in sorted(exports.glob("whatsapp/*.json*")):
        frame = pd.DataFrame(webhook_rows(path))
        frame["channel"] = "whatsapp"
        frames.append(frame)
    events = pd.concat(frames, ignore_index=True)
    events["country"] = events.get("country")
    events["phone_e164"] = events.apply(lambda r: to_e164(r["phone"], r["country"]), axis=1)
    events["occurred_at"] = pd.to_datetime(events["occurred_at"], errors="coerce", utc=True, format="mixed")
    events["purpose"] = events["purposes"].fillna("marketing").str.split(";")
    events = events.explode("purpose").dropna(subset=["phone_e164", "occurred_at"])
    latest = events.sort_values("occurred_at").groupby(["phone_e164", "purpose"]).tail(1)
    status = latest[["phone_e164", "purpose", "event_type", "occurred_at", "channel"]]
    con = duckdb.connect(str(out))
    con.execute("CREATE OR REPLACE TABLE consent_status AS SELECT * FROM status")
    con.close()
    print(len(events), len(status))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
