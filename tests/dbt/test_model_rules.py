"""Static checks on the dbt project: the rules read only the canonical shape."""

from __future__ import annotations

import re

from mailbridge.explain import RULES
from pipelines.registry import ESP_CONNECTORS
from tests.conftest import REPO_ROOT

MODELS = REPO_ROOT / "dbt_project" / "models"


def test_no_esp_name_in_intermediate_or_mart_models() -> None:
    names = [esp.type for esp in ESP_CONNECTORS.values()] + ["brevo", "cleverreach", "inxmail", "rapidmail"]
    pattern = re.compile("|".join(names), re.IGNORECASE)
    offenders = [
        f"{path.relative_to(MODELS)}:{number}"
        for folder in ("intermediate", "marts")
        for path in (MODELS / folder).rglob("*.sql")
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_every_rule_of_the_mart_is_explained() -> None:
    sql = (MODELS / "marts" / "reconciliation" / "fct_list_reconciliation.sql").read_text("utf-8")
    decided = sql[sql.index("status_rules as (") : sql.index("end as rule")]
    codes = set(re.findall(r"then '([a-z_]+)'", decided))
    codes |= set(re.findall(r"else '([a-z_]+)'", decided))
    assert codes, "no rule codes found"
    assert codes - set(RULES) == set()
    assert set(RULES) - codes == set()
