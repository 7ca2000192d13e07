"""`make docs`: dbt's documentation of the warehouse as static files, one HTML page that works
offline (`dbt docs generate --static`), with the catalog read from a copy of the warehouse so
that a sync running meanwhile is neither blocked nor read half-written."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from assets.project import DBT_PROJECT_DIR
from mailbridge.config import ConfigError, load_config


def build_docs(warehouse: Path, out: Path) -> Path:
    """The static documentation page of `warehouse`'s models, written into `out`; its path."""
    if not warehouse.is_file():
        raise ConfigError(f"no warehouse at {warehouse}: run a sync first (make demo)")
    out = out.resolve()  # dbt reads a relative target path from its project folder
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as folder:
        copy = Path(folder) / "catalog.duckdb"
        shutil.copy2(warehouse, copy)
        command = [
            str(Path(sys.executable).parent / "dbt"),
            "docs",
            "generate",
            "--static",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(out),
            "--quiet",
        ]
        done = subprocess.run(
            command, env={**os.environ, "MAILBRIDGE_WAREHOUSE": str(copy)}, capture_output=True, text=True
        )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
        raise RuntimeError(f"dbt docs generate failed:\n{tail}")
    return out / "static_index.html"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="mailbridge.yaml (default: ./mailbridge.yaml)")
    parser.add_argument("--out", type=Path, default=Path(".mailbridge/docs"))
    args = parser.parse_args()
    try:
        page = build_docs(load_config(args.config).warehouse_path(), args.out)
    except (ConfigError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"dbt docs: {page}")


if __name__ == "__main__":
    main()
