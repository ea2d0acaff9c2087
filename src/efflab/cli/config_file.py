"""Configs you can see and save: ``efflab run NAME --print-config`` and ``--config FILE``.

``--print-config`` prints the resolved config as TOML, each key preceded by a comment with its
type, default, constraint and meaning; saved to a file, it is read back by ``--config FILE``
(``--set`` still overrides it). ``--config`` also takes a ``results.json``: the exact config
of that run, so a finished run is repeated with ``efflab run NAME --config OUT/NAME/results.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from efflab.experiments.base import ConfigError, Experiment, ExperimentConfig


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        text = repr(v)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if v is None:
        return '"none"'  # TOML has no null; --config parses "none" back for optional fields
    raise ConfigError(f"cannot write {type(v).__name__} {v!r} as TOML")


def config_toml(experiment: type[Experiment] | Experiment, config: ExperimentConfig,
                profile: str) -> str:
    """The resolved ``config`` as TOML with one comment line per key (type, default,
    constraint, meaning)."""
    lines = [f"# {experiment.name}: {experiment.checks}",
             f"# resolved from the {profile} profile; save this and run it again with",
             f"#   efflab run {experiment.name} --config FILE.toml   (--set still overrides)",
             ""]
    values = config.to_dict()
    for row in type(config).describe():
        meta = [row["type"], f"default {row['default']}"]
        if row["constraint"]:
            meta.append(row["constraint"])
        help_text = f": {row['help']}" if row["help"] else ""
        lines.append(f"# {row['name']} ({'; '.join(meta)}){help_text}")
        lines.append(f"{row['name']} = {_toml_value(values[row['name']])}")
    return "\n".join(lines) + "\n"


def read_config_file(path: str | Path, name: str) -> tuple[dict[str, Any], str | None]:
    """The config values in ``path`` (TOML, or JSON: a saved ``results.json`` or a plain
    object) and the profile it names (a results.json's), for experiment ``name``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: cannot be read ({e})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"--config {path}: not valid JSON ({e})") from None
    else:
        toml = _toml_reader()
        try:
            data = toml.loads(text)
        except toml.TOMLDecodeError as e:
            raise ConfigError(f"--config {path}: not valid TOML ({e})") from None
    profile = None
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "experiment" in data:
        if data["experiment"] != name:
            raise ConfigError(f"--config {path} holds a run of {data['experiment']!r}, "
                              f"not of {name!r}")
        profile = data.get("profile") if isinstance(data.get("profile"), str) else None
        data = data["config"]
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a table of key = value, got "
                          f"{type(data).__name__}")
    return data, profile


def _toml_reader():
    try:
        import tomllib  # Python >= 3.11
    except ImportError:
        try:
            import tomli as tomllib  # the same parser, for Python 3.10
        except ImportError:
            raise ConfigError("reading a TOML --config needs Python >= 3.11 (or the tomli "
                              "package); a results.json works on every version") from None
    return tomllib
