"""The settings ("knobs") of a bundle: each with its default and what it does, for ``medvq knobs BUNDLE``.

``python -m monai.bundle run training --help`` cannot explain a bundle: MONAI's runner hands ``--help`` to the
config as an override and starts the run. The knobs are the top-level entries a user overrides on the command line
(``--num_epochs 2``): plain values (numbers, strings, booleans, null, lists of them) and every entry documented by a
``_desc_<name>`` sibling or by a row of the bundle README's settings table (``| `name` | default | meaning |``).
Objects the config builds (networks, optimizers, engines, ``$`` expressions nobody documents) are not knobs.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["bundle_knobs", "format_knobs", "readme_knobs"]

_ROW = re.compile(r"^\|\s*(`[^|]+`)\s*\|\s*([^|]*)\|\s*(.*)\|\s*$")
_STRUCTURE = {"imports", "initialize", "run", "finalize", "training", "inference", "evaluate", "sample", "train",
              "validate", "evaluating"}


def readme_knobs(readme: str | Path) -> dict[str, tuple[str, str]]:
    """``name -> (default, meaning)`` from the settings tables of a bundle README: rows whose first cell names one or
    more settings in backticks (``| `lr`, `d_lr` | 1e-4, 1e-4 | Adam ... |``)."""
    path = Path(readme)
    found: dict[str, tuple[str, str]] = {}
    if not path.is_file():
        return found
    for line in path.read_text().splitlines():
        match = _ROW.match(line.strip())
        if not match:
            continue
        names = re.findall(r"`([A-Za-z_][A-Za-z0-9_#]*)`", match.group(1))
        if not names or match.group(1).replace("`", "").replace(",", " ").split() != names:
            continue  # a table of commands or files, not of settings
        for name in names:
            found.setdefault(name, (match.group(2).strip(), match.group(3).strip()))
    return found


def _plain(value: Any) -> bool:
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    if isinstance(value, (int, float, bool)) or value is None:
        return True
    return isinstance(value, list) and all(_plain(v) and not isinstance(v, list) for v in value)


def _configs(bundle: str | Path, config: str | None) -> tuple[Path, list[Path]]:
    path = Path(bundle).expanduser()
    if path.is_file():
        return (path.parent.parent if path.parent.name == "configs" else path.parent), [path]
    folder = path / "configs"
    if not folder.is_dir():
        raise FileNotFoundError(f"'{path}' is neither a bundle folder (with configs/) nor a config file.")
    if config:
        file = Path(config) if Path(config).is_file() else folder / config
        if not file.is_file():
            have = sorted(p.name for p in folder.glob("*.json"))
            raise FileNotFoundError(f"no config '{config}' in '{folder}' (it has {have}).")
        files = [file]
        if file.name == "train.json" and (folder / "train_tokenizer.json").is_file():
            files = [folder / "train_tokenizer.json", file]
        return path, files
    files = [folder / n for n in ("train_tokenizer.json", "train.json") if (folder / n).is_file()]
    if not files:
        raise FileNotFoundError(f"'{folder}' has no train.json: name a config with --config.")
    return path, files


def bundle_knobs(bundle: str | Path, config: str | None = None) -> list[dict[str, Any]]:
    """Every knob of a bundle's config(s), in config order.

    Args:
        bundle: a bundle folder (``bundles/odir_vq``) or one config file.
        config: a config of the bundle (``evaluate.json``; a file name in ``configs/`` or a path); default
            ``train.json`` (two-stage bundles: ``train_tokenizer.json`` then ``train.json``, merged as MONAI merges a
            config list). An overlay (``sample.json``) lists its own entries only.

    Returns:
        ``{"name", "default", "description", "config"}`` per knob: the default as written in the config (an
        expression stays an expression), the description from ``_desc_<name>`` or the README table, else ``""``.
    """
    root, files = _configs(bundle, config)
    table = readme_knobs(root / "docs" / "README.md")
    merged: dict[str, tuple[Any, str]] = {}
    descriptions: dict[str, str] = {}
    for file in files:
        try:
            content = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"'{file}' is not valid JSON: {error}") from error
        for key, value in content.items():
            if key.startswith("_desc_") and key != "_desc_":
                descriptions[key[len("_desc_"):]] = str(value)
            elif not key.startswith(("_", "+")) and "#" not in key:
                merged[key] = (value, file.name)
    knobs = []
    for name, (value, source) in merged.items():
        if name in _STRUCTURE:
            continue
        if not (_plain(value) or name in descriptions or name in table):
            continue
        description = descriptions.get(name) or (table[name][1] if name in table else "")
        knobs.append({"name": name, "default": value, "description": description, "config": source})
    return knobs


def format_knobs(knobs: list[dict[str, Any]], markdown: bool = False, width: int = 100) -> str:
    """The knobs as aligned text (``name = default`` then the meaning, indented) or a markdown table."""
    if markdown:
        rows = ["| knob | default | meaning |", "|---|---|---|"]
        rows += [f"| `{k['name']}` | `{json.dumps(k['default'])}` | {k['description'] or '(undocumented)'} |"
                 for k in knobs]
        return "\n".join(rows)
    lines = []
    for k in knobs:
        lines.append(f"--{k['name']} {json.dumps(k['default'])}")
        text = k["description"] or "(undocumented)"
        lines.extend(textwrap.wrap(text, width=width, initial_indent="    ", subsequent_indent="    "))
    lines.append(f"\n{len(knobs)} knobs; override any on the command line: python -m monai.bundle run ... --<knob> "
                 "<value>")
    return "\n".join(lines)
