"""bench/mutations.py stays current: every change in its list still applies to the code (its old
text is found exactly once), names a guarantee and points at test files that exist."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_mutations():
    spec = importlib.util.spec_from_file_location("bench_mutations", REPO / "bench" / "mutations.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it is being defined
    spec.loader.exec_module(module)
    return module


def test_every_mutation_still_applies_to_the_code():
    module = load_mutations()
    assert module.problems(REPO) == []
    assert len(module.MUTATIONS) >= 25
    assert {m.guarantee for m in module.MUTATIONS} == set(module.GUARANTEES)


def test_a_mutation_whose_text_moved_is_reported(tmp_path):
    module = load_mutations()
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "checks.py").write_text("nothing of the old text\n")
    moved = module.Mutation("moved", "conservation", "assets/checks.py", "rows_read <>", "x", ("tests/test_x.py::t",))
    assert module.problems(tmp_path, (moved,)) == [
        "moved: old text found 0 times in assets/checks.py", "moved: no test file for tests/test_x.py::t"]
