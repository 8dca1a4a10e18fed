"""Reading and writing configs: defaults in code, a YAML file on top, dotted `key=value` overrides last.

A YAML file is read strictly (a key given twice is an error), an unknown key is an error naming the known ones, a
value is converted to the field's type (YAML reads `1e-3` as a string), and the result is checked (`validate`).
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from istpan.config.checks import K_FIELDS, LEGACY_KEYS, note_k_assignment, validate
from istpan.config.schema import Config, DataConfig
from istpan.errors import UserError

__all__ = [
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "packaged_config_summary",
    "packaged_configs",
    "resolve_config",
    "save_config",
]


def _coerce(value: Any, current: Any, where: str) -> Any:
    """Bring a YAML value to the type of the field's default (YAML reads `1e-3` as a string, `5` as an int)."""
    if value is None or current is None:
        return value
    try:
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(current, float) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return float(value)
        if isinstance(current, int) and isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(current, str) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(current, list) and isinstance(value, list):
            return value
        if isinstance(current, dict) and isinstance(value, dict):
            return value
    except ValueError:
        pass
    raise UserError(f"{where}: expected a {type(current).__name__}, got {value!r}")


def _merge(obj: Any, updates: dict[str, Any], where: str) -> None:
    """Set fields of a dataclass from a nested dict, refusing unknown keys and values of the wrong type."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        dotted = f"{where}.{key}" if where else key
        if isinstance(obj, DataConfig) and key in LEGACY_KEYS:
            note_k_assignment(obj, key, _coerce(value, 0, dotted))
            continue
        if key not in names:
            raise UserError(f"{dotted}: unknown config key '{key}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"{dotted}: must be a mapping, got {value!r}")
            _merge(current, value, dotted)
        elif isinstance(current, dict) and isinstance(value, dict):
            # Free-form mappings (model.options) merge key by key, so `model.options.fuse=learned` on top of a
            # config keeps its other options (dropout, ...).
            setattr(obj, key, {**current, **value})
        else:
            setattr(obj, key, _coerce(value, current, dotted))
            if isinstance(obj, DataConfig) and key in K_FIELDS:
                note_k_assignment(obj, key, getattr(obj, key))


class _StrictLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping is an error: PyYAML silently keeps the last
    one, so of two `augment:` sections the first (the one a reader finds and edits) would change nothing."""


def _unique_keys_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: list[Any] = []
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges are PyYAML's to resolve
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"'{key}' is given twice (only the last one would "
                                                    "count); keep one", key_node.start_mark)
        seen.append(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_keys_mapping)


def _yaml_problem(err: yaml.YAMLError, *, line: bool = True) -> str:
    """PyYAML's message in one line: 'line N: <problem>' (its own text spans several lines with a caret)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    return f"line {mark.line + 1}: {problem}" if line and mark is not None else problem


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise UserError(f"override '{item}' must look like key=value, e.g. optim.lr=0.001")
    key, raw = item.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(raw)
    except yaml.YAMLError as err:  # e.g. data.root=@videos ('@' is reserved in YAML) or an unclosed [
        problem = _yaml_problem(err, line=False)
        raise UserError(f"override '{item}': the value is not valid YAML ({problem}); quote it, e.g. "
                        f"{key.strip()}='\"{raw}\"'") from None


def packaged_configs() -> dict[str, Path]:
    """The configs shipped inside the package, by name: {"ucf101": .../istpan/configs/ucf101.yaml, ...}."""
    folder = Path(str(resources.files("istpan").joinpath("configs")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def packaged_config_summary(path: Path) -> str:
    """First line of a shipped config's leading comment (what it is for), for `istpan configs`."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").rstrip(":")
        break
    return ""


def resolve_config(name: str | Path) -> Path:
    """A config file path, or the name of a packaged config (`ucf101`, `ucf101.yaml`, `configs/ucf101.yaml`).

    An existing file always wins. Otherwise a bare name, or a path whose folder is called `configs` (the README's
    `--config configs/ucf101.yaml`, typed outside the repository), means the config shipped with istpan, so the
    documented commands work from any directory.
    """
    path = Path(name)
    if path.is_file():
        return path
    shipped = packaged_configs()
    bare = path.parent in (Path("."), Path("configs")) and path.suffix in ("", ".yaml", ".yml")
    if bare and path.stem in shipped:
        return shipped[path.stem]
    raise UserError(f"{path}: config file not found (packaged configs: {', '.join(shipped)}; see `istpan configs`)")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file (a path or a packaged config's name, see `resolve_config`), then `a.b=value`
    overrides (values parsed as YAML: 3, 0.1, true, [1, 2])."""
    cfg = Config()
    if path:
        path = resolve_config(path)
        try:
            data = yaml.load(path.read_text(), Loader=_StrictLoader) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{path}: not valid YAML ({_yaml_problem(err)})") from err
        if not isinstance(data, dict):
            raise UserError(f"{path}: a config file must be a mapping of sections (data, model, optim, train)")
        try:
            _merge(cfg, data, "")
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply dotted `a.b=value` overrides in place (e.g. on a config stored in a checkpoint) and check the result."""
    for item in overrides:
        keys, value = _parse_override(item)
        nested: dict[str, Any] = value
        for key in reversed(keys):
            nested = {key: nested}
        try:
            _merge(cfg, nested, "")
        except UserError as err:
            raise UserError(f"override '{item}': {err}") from None
    return validate(cfg)


def config_from_dict(data: dict[str, Any]) -> Config:
    """A Config from a nested dict (e.g. the one stored in a checkpoint), with the same checks as a YAML file."""
    cfg = Config()
    _merge(cfg, data, "")
    return validate(cfg)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of built-in types: safe for YAML, JSON and `torch.load(weights_only=True)`."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config, so a run can be repeated with `istpan train --config <run>/config.yaml`."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
