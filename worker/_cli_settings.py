"""The settings as command-line flags: one per setting, grouped by section, unset by default."""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from torchkafka.worker._argtypes import key_value
from torchkafka.worker._errors import StartupError
from torchkafka.worker.config import SETTINGS, Setting, load_connection

#: How each section's flags are titled in --help.
SECTION_TITLES = {
    None: "the job",
    "kafka": "Kafka connection (every client: consumer, producer, admin)",
    "model": "model",
    "batching": "batching",
    "dedup": "dedup (Redis)",
    "dead_letters": "dead letters",
    "operations": "operations",
    "topics": "topics (`torchkafka topics`)",
}
#: The settings of each section (None: the job's own), by flat name.
SECTION_SETTINGS = {
    section: [s.name for s in SETTINGS.values() if s.section == section]
    for section in SECTION_TITLES
}
CONNECTION_SETTINGS = SECTION_SETTINGS["kafka"]
TOPICS_SETTINGS = SECTION_SETTINGS["topics"]
TOPIC_NAMES = ["input_topic", "output_topic", "dead_letter_topic"]
#: What `run` takes: every setting but the topics' declaration (`torchkafka topics` reads it).
RUN_SETTINGS = [name for name in SETTINGS if name not in TOPICS_SETTINGS]


def add_settings(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """One flag per setting in ``names``, grouped by section, all defaulting to unset.

    A secret gets no flag (flags show in ``ps``): only ``--NAME-file``.
    """
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML file with any of the settings below"
    )
    groups: dict[str | None, Any] = {}
    for name in names:
        setting = SETTINGS[name]
        if setting.section not in groups:
            groups[setting.section] = parser.add_argument_group(SECTION_TITLES[setting.section])
        group = groups[setting.section]
        flag = "--" + name.replace("_", "-")
        help_text = setting.help
        if setting.field.default not in (MISSING, None, ()):
            help_text += f" (default: {setting.field.default})"
        if setting.is_secret:
            group.add_argument(f"{flag}-file", dest=f"{name}_file", metavar="FILE", help=help_text)
        elif setting.is_mapping:
            group.add_argument(
                f"{flag}-config",
                dest=name,
                type=key_value,
                action="append",
                metavar="KEY=VALUE",
                help=f"{help_text}; repeatable",
            )
        elif setting.kind is bool:
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            group.add_argument(flag, dest=name, metavar=metavar_of(setting), help=help_text)


def metavar_of(setting: Setting) -> str:
    return "N,N,..." if setting.is_integer_list else setting.name.split("_")[-1].upper()


def setting_flags(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The settings given as flags, by flat name (secrets by their ``_file`` key)."""
    flags: dict[str, Any] = {}
    for name in names:
        setting = SETTINGS[name]
        key = f"{name}_file" if setting.is_secret else name
        value = getattr(args, key)
        flags[key] = dict(value) if setting.is_mapping and value else value
    return flags


def connection_settings(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> dict[str, str]:
    """The librdkafka settings of the connection the command's flags describe."""
    try:
        flags = setting_flags(args, CONNECTION_SETTINGS)
        return load_connection(args.config, os.environ, flags).librdkafka()
    except StartupError as exc:
        parser.error(str(exc))
