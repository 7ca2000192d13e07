"""The ESP registry: adding an ESP means one entry here, plus its connector, emulator and staging."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

# loading the config asks the registry for the ESP types: every command would import dlt for a type
if TYPE_CHECKING:
    from dlt.sources import DltSource


@dataclass(frozen=True)
class EspConnector:
    """How mailbridge reaches one kind of ESP."""

    type: str
    label: str
    source_path: str  # "module:function" of the dlt source taking (accounts, full_refresh, run_id, extraction)
    emulator_path: str  # "module:class" of the sandbox emulator
    writer_path: str  # "module:class" of the EspWriter

    @property
    def dataset(self) -> str:
        return f"raw_{self.type}"

    def source(self) -> Callable[..., DltSource]:
        module, _, name = self.source_path.partition(":")
        function: Callable[..., DltSource] = getattr(import_module(module), name)
        return function

    def writer(self) -> Any:
        module, _, name = self.writer_path.partition(":")
        return getattr(import_module(module), name)

    def emulator(self) -> Any:
        module, _, name = self.emulator_path.partition(":")
        return getattr(import_module(module), name)


ESP_CONNECTORS: dict[str, EspConnector] = {
    "mailchimp": EspConnector(
        type="mailchimp",
        label="Mailchimp",
        source_path="pipelines.mailchimp:mailchimp_source",
        emulator_path="sandbox.mailchimp.app:MailchimpEmulator",
        writer_path="pipelines.mailchimp.writer:MailchimpWriter",
    ),
}


def esp_types() -> Sequence[str]:
    return tuple(ESP_CONNECTORS)


def connector(esp_type: str) -> EspConnector:
    return ESP_CONNECTORS[esp_type]
