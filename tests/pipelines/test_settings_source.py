"""The settings extraction: what mailbridge.yaml says, in raw_mailbridge, never a secret."""

from __future__ import annotations

from pathlib import Path

import duckdb

from mailbridge.config import EspAccount, load_config
from pipelines.runner import extraction_named
from tests.conftest import write_project_config


def test_a_base_url_is_stored_without_its_userinfo(tmp_path: Path) -> None:
    config = load_config(write_project_config(tmp_path, base_url=None, crm_url="sqlite:///crm.sqlite"))
    # validation refuses such a URL; the warehouse must not keep one that got past it
    smuggled = EspAccount.model_construct(
        **{
            **config.esp_accounts[0].model_dump(),
            "base_url": "https://mailbridge:Geheim-42-us1@us1.api.mailchimp.com/3.0?apikey=Geheim-42",
        }
    )
    config = config.model_copy(update={"esp_accounts": [smuggled, *config.esp_accounts[1:]]})
    run = extraction_named(config, "mailbridge", full_refresh=True, run_id="test")
    run.pipeline.run(run.source)
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        rows = db.execute("select esp_account, base_url from raw_mailbridge.esp_accounts order by 1").fetchall()
    assert rows == [
        ("brand_main", "https://us1.api.mailchimp.com/3.0?apikey=***"),
        ("brand_shop", None),
    ]
