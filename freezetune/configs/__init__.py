"""Option files: YAML mappings of option names to values, and the study configs shipped with the package.

`--config NAME` finds a packaged config (`freezetune compare --list-configs`) so a pip user needs no checkout;
a path to any YAML file works too. Files are read with `yaml.safe_load` (no code in a config file).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import UserError


def list_configs() -> list[str]:
    """The packaged configs, as `NAME: first comment line`."""
    rows = []
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            first = entry.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
            rows.append(f"{entry.name.removesuffix('.yaml')}: {first}")
    return rows


def find_config(name: str) -> Path | str:
    """A packaged config's name (`seed-game-chat`) or a YAML path, as something to open."""
    if Path(name).is_file():
        return Path(name)
    packaged = resources.files(__package__) / f"{name.removesuffix('.yaml')}.yaml"
    if packaged.is_file():
        return packaged
    names = ", ".join(row.split(":")[0] for row in list_configs())
    raise UserError(f"config {name!r} is neither a file nor a packaged config: pass a YAML path or one of {names}")


def load_yaml(name: str, valid: list[str]) -> dict:
    """A YAML mapping of option names (`batch_size` or `batch-size`) to values; unknown names are refused."""
    import yaml

    source = find_config(name)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise UserError(f"cannot read config file {name}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UserError(f"config file {name} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {name} must be a mapping of option names to values")
    options = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(options) - set(valid) - {"config", "help"})
    if unknown:
        raise UserError(f"config file {name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(v for v in valid if v != 'help')}")
    return options
