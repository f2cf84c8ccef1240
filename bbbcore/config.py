"""Typed settings from a TOML file plus ``<PREFIX>_<SECTION>__<KEY>`` environment variables.

Each program defines one pydantic-settings model; this module loads it with one
precedence rule (environment over file over defaults) and turns every validation
failure into a message that names the offending key as the user wrote it.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

EXIT_CONFIG = 2
"""Exit code for invalid configuration, as promised in the design."""


ListenAddress = str


def template(fields: tuple[str, ...]) -> Any:
    """A field validator: the template may only use ``fields`` as placeholders."""

    def check(value: str) -> str:
        try:
            value.format(**dict.fromkeys(fields, "x"))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad template (placeholders: {', '.join(fields)}): {exc}") from None
        return value

    return check


def check_listen(value: str) -> str:
    """A field validator for ``host:port`` listen addresses."""
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port with a port from 0 to 65535")
    return value


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets allowed) to a (host, port) pair."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104


class Section(BaseModel):
    """A config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level (JSON lines on stderr)."""


class ConfigError(Exception):
    """Invalid configuration; ``str()`` names every offending key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


def settings_config(prefix: str) -> SettingsConfigDict:
    """The model_config every program's settings class uses."""
    return SettingsConfigDict(
        env_prefix=prefix,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
        use_attribute_docstrings=True,
    )


class _TomlSource(PydanticBaseSettingsSource):
    """Reads one TOML file (or nothing) as a settings source."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = dict(data)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


S = TypeVar("S", bound=BaseSettings)


def _env_name(prefix: str, loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if not parts:
        return prefix.rstrip("_")
    return (prefix + "__".join(parts)).upper()


def _describe(prefix: str, err: Mapping[str, Any], secret_keys: frozenset[str]) -> str:
    loc: tuple[int | str, ...] = tuple(err.get("loc", ()))
    msg = str(err.get("msg", "invalid"))
    if not loc:
        # A whole-model check: its message names each key itself.
        return msg.removeprefix("Value error, ")
    dotted = ".".join(str(p) for p in loc)
    text = f"{dotted} ({_env_name(prefix, loc)}): {msg}"
    leaf = str(loc[-1]) if loc else ""
    if "input" in err and leaf not in secret_keys and err.get("type") != "missing":
        shown = repr(err["input"])
        text += f" [got {shown[:80]}]"
    return text


def load_settings(cls: type[S], config_file: Path | None = None) -> S:
    """Build ``cls`` from defaults, ``config_file`` (TOML) and the environment.

    Raises ConfigError naming each bad key by its TOML path and its variable.
    """
    prefix = str(cls.model_config.get("env_prefix", ""))
    data: dict[str, Any] = {}
    problems: list[str] = []
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"config file {config_file}: {exc.strerror or exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"config file {config_file}: {exc}"]) from None

    class _Loaded(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls_,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _TomlSource(settings_cls, data))

    try:
        loaded = _Loaded()
    except ValidationError as exc:
        secret_keys = frozenset({"secret", "password", "token"})
        problems = [_describe(prefix, e, secret_keys) for e in exc.errors()]
        raise ConfigError(problems) from None
    # Hand back the program's own class, not the loader subclass.
    return cast(S, cls.model_construct(**dict(loaded)))


def _show(default: Any) -> str:
    if default is None:
        return ""
    if isinstance(default, tuple | list):
        return ", ".join(str(item) for item in default)
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def reference(cls: type[BaseSettings]) -> str:
    """A Markdown table of every key, for docs/configuration.md."""
    lines = ["| key | environment | default | meaning |", "|---|---|---|---|"]
    for key, env, default, doc in keys(cls):
        lines.append(f"| `{key}` | `{env}` | {f'`{default}`' if default else ''} | {doc} |")
    return "\n".join(lines) + "\n"


def keys(cls: type[BaseSettings]) -> list[tuple[str, str, str, str]]:
    """(TOML key, environment variable, default, description) for every setting."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    rows: list[tuple[str, str, str, str]] = []
    for name, info in cls.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for key, sub in section.model_fields.items():
                shown = _show(sub.get_default(call_default_factory=True))
                rows.append(
                    (
                        f"{name}.{key}",
                        _env_name(prefix, (name, key)),
                        shown,
                        (sub.description or "").replace("\n", " "),
                    )
                )
        else:
            shown = _show(info.get_default(call_default_factory=True))
            rows.append((name, _env_name(prefix, (name,)), shown, info.description or ""))
    return rows


def settings_for_command(
    cls: type[S],
    command: str,
    config_file: Path | None,
    prog: str,
    check: Callable[[S], int] | None = None,
) -> S | int:
    """The settings for a CLI command, or the exit code when the command is done.

    Shared by every program's CLI: ``config-reference`` prints the key table,
    invalid configuration prints the problems and gives EXIT_CONFIG, and
    ``check-config`` prints the settings (secrets hidden) as JSON, then runs the
    program's own ``check`` of them (its exit code is the command's).
    """
    if command == "config-reference":
        print(reference(cls), end="")
        return 0
    try:
        settings = load_settings(cls, config_file)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if command == "check-config":
        print(json.dumps(settings.model_dump(mode="json"), indent=2, sort_keys=True))
        return 0 if check is None else check(settings)
    return settings
