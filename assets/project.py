"""Where the code location finds the project: config, warehouse and dbt project paths."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from mailbridge.config import WAREHOUSE_ENV, MailbridgeConfig, load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
WAREHOUSE_POOL = "duckdb_warehouse"
# a sync job's tag: "full" or "incremental"
SYNC_TAG = "mailbridge/sync"


@lru_cache(maxsize=1)
def project_config() -> MailbridgeConfig:
    """The project config, loaded once per process (MAILBRIDGE_CONFIG or ./mailbridge.yaml)."""
    config = load_config()
    # resources read the warehouse from the environment; default it from the config
    os.environ.setdefault(WAREHOUSE_ENV, str(config.warehouse_path()))
    return config
