"""The check catalog: an entry for every §8 check id, in plain words, pointing at real code."""

from __future__ import annotations

import importlib
import re

from auditor.checkids import CHECK_IDS
from auditor.rules import catalog, rules_hash
from tests.specdir import SPEC_TEXT

SPEC = SPEC_TEXT


def test_every_spec_check_id_has_a_complete_entry() -> None:
    rules = catalog()
    assert list(rules) == list(CHECK_IDS)
    for rule in rules.values():
        assert rule.title and rule.statement and rule.proves and rule.does_not_prove
        assert rule.spec.startswith("§")


def test_check_ids_are_those_of_the_spec() -> None:
    table = SPEC.read_text(encoding="utf-8").split("## 8. Audit checks", 1)[1].split("## 9.", 1)[0]
    ids = re.findall(r"^\| ([A-Z]+-[A-Z]+) \| (critical|error|warning|info) \|", table, flags=re.M)
    assert ids and dict(ids) == {rule.id: rule.severity for rule in catalog().values()}


def test_implemented_entries_name_importable_modules() -> None:
    for rule in catalog().values():
        for module in filter(None, (m.strip() for m in rule.implemented.split(","))):
            importlib.import_module(module)


def test_rules_hash_is_stable_hex() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", rules_hash()) and rules_hash() == rules_hash()
