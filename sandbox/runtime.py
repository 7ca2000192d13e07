"""The sandbox as one app: every ESP emulator the scenario needs, on one loopback port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from pipelines.registry import ESP_CONNECTORS
from sandbox.scenario import TABLE_SCHEMAS, Scenario

# what the emulators read of a scenario: its ESP side
EMULATED_TABLES = tuple(name for name in TABLE_SCHEMAS if name.startswith("esp_"))


@dataclass
class Sandbox:
    app: Starlette
    emulators: dict[str, Any]


def build_sandbox(scenario: Scenario, *, release_tables: bool = False) -> Sandbox:
    """Emulators for the ESP types in the scenario.

    One type is served at the root (Mailchimp: /3.0/...), as the real host serves it; with
    several types each is mounted under /<type>, and its accounts' base_url says so. With
    `release_tables` and one type, its emulator leaves the scenario's tables empty once read
    (several emulators each read the same tables).
    """
    types = sorted({account.type for account in scenario.accounts}) or ["mailchimp"]
    release = release_tables and len(types) == 1
    emulators = {
        esp_type: ESP_CONNECTORS[esp_type].emulator().from_scenario(scenario, release_tables=release)
        for esp_type in types
    }
    if len(emulators) == 1:
        app = next(iter(emulators.values())).app
    else:
        app = Starlette(routes=[Mount(f"/{esp_type}", app=emulator.app) for esp_type, emulator in emulators.items()])
    return Sandbox(app=app, emulators=emulators)
