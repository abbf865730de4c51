"""Config text into nested data: YAML files and `--set KEY=VALUE` overrides, read safely (YAML's safe loader, never
code; alias bombs and deep nesting refused) and laid over each other. `posepart.engine.config` validates the result
into the settings dataclasses.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import yaml

from posepart.engine.settings import ConfigError


class _YamlLoader(yaml.SafeLoader):
    """YAML's safe loader (no tags, never code), reading 1e-3 as a number as YAML 1.2 does (YAML 1.1 wants a dot),
    and refusing a key written twice in one mapping (YAML forbids it; PyYAML kept the last, so a config with two
    `model:` sections silently lost the first one's settings)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()  # mapping nodes whose own keys were checked

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Check a mapping's keys as written the first time PyYAML flattens it (it merges `<<` keys into the node in
        place, the merged pairs then standing beside the mapping's own, which override them), then flatten it."""
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = self.construct_object(key_node)
                    if key in seen:
                        raise yaml.YAMLError(f"line {key_node.start_mark.line + 1}: the key {key!r} is written twice "
                                             f"in one mapping (first on line {seen[key].start_mark.line + 1})")
                    seen[key] = key_node
        super().flatten_mapping(node)


_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                  list("-+.0123456789"))


_MAX_YAML_VALUES = 100_000  # a config holds hundreds; aliases may make a short text mean billions ("billion laughs")


def read_yaml(text: str) -> Any:
    """Parse config YAML (files and `--set` values) with `_YamlLoader`. A document whose aliases expand it past
    `_MAX_YAML_VALUES` values, or nested past Python's recursion limit, is a yaml.YAMLError (before: memory
    exhausted by the expansion, or a RecursionError traceback)."""
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}

        def expanded(node: yaml.Node) -> int:  # memoised: an alias counts its whole value, computed once
            if id(node) not in sizes:
                sizes[id(node)] = _MAX_YAML_VALUES + 1  # a node inside itself (a recursive alias) is refused
                children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else (
                    node.value if isinstance(node, yaml.SequenceNode) else [])
                sizes[id(node)] = min(1 + sum(expanded(child) for child in children), _MAX_YAML_VALUES + 1)
            return sizes[id(node)]

        if expanded(node) > _MAX_YAML_VALUES:
            raise yaml.YAMLError(f"it expands to more than {_MAX_YAML_VALUES} values (YAML aliases)")
        return loader.construct_document(node)
    except RecursionError:
        raise yaml.YAMLError("it is nested too deeply") from None
    finally:
        loader.dispose()


def merge_overrides(base: Any, override: dict[str | int, Any], where: str = "") -> Any:
    """`override` (from `parse_overrides`) laid over `base`: mappings merge key by key (as OmegaConf merges), integer
    keys set the items of a list (`data.sources[0].train`), null removes the key (its default: `part_map=null`
    clears a source's part map; no setting has a default other than None that takes None), anything else replaces
    the value."""
    if any(isinstance(key, int) for key in override):
        if base is not None and not isinstance(base, list):
            raise ConfigError(f"--set {where}[{next(iter(override))}]: {where} is not a list in the config")
        items = list(base or [])  # unset: empty (before: "not a list", of data.sources' default [])
        for index, value in override.items():
            if not items:  # (unset: an empty list, or a mistyped key, which validation names once set whole)
                raise ConfigError(f"--set {where}[{index}]: the config has no item of {where} to set (an empty list, "
                                  f"or a mistyped key): set the whole list, --set '{where}=[{{...}}, ...]'")
            if not isinstance(index, int) or not -len(items) <= index < len(items):
                raise ConfigError(f"--set {where}[{index}]: {where} has {len(items)} item(s), numbered from 0")
            here = f"{where}[{index}]"
            items[index] = merge_overrides(items[index], value, here) if isinstance(value, dict) else value
        return items
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in override.items():
        here = f"{where}.{key}" if where else str(key)
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_overrides(out.get(key), value, here) if isinstance(value, dict) else value
    return out


_KEY = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[-?\d+\])*")  # section.key, list items as key[0] (or key.0)
_KEY_PART = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def _key_parts(key: str, pair: str) -> list[str | int]:
    """'data.sources[0].train' (or 'data.sources.0.train') -> ['data', 'sources', 0, 'train']."""
    if not _KEY.fullmatch(key):
        raise ConfigError(f"--set {pair!r}: {key!r} is not a key (write section.key, list items as key[0])")
    return [int(index) if index is not None else int(name) if name.lstrip("-").isdigit() else name
            for name, index in (m.groups() for m in _KEY_PART.finditer(key))]


_COMMENT = re.compile(r"(^|\s)#")  # where YAML starts a comment


def parse_overrides(pairs: Sequence[str]) -> dict[str | int, Any]:
    """['optim.lr=0.01', 'data.sources[0].weight=2'] -> nested dict (list items under int keys); values parsed as
    YAML (`read_yaml`: safe, never code)."""
    nested: dict[str | int, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        if not raw.strip():  # before: read as null, which resets the key to its default (`--set optim.lr=$LR` with
            # LR unset trained at the code's 0.001, not the config's rate, without a word)
            raise ConfigError(f"--set {pair!r}: no value (to reset {key} to its default, write {key}=null)")
        try:
            value = read_yaml(raw)
        except yaml.YAMLError as err:  # a syntax error, or a tag (!!python/...) the safe loader will not construct
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"--set {pair!r}: the value is not plain YAML: {problem}") from None
        if _COMMENT.search(raw) and isinstance(value, str) and value != raw.strip() and raw.strip()[0] not in "'\"":
            value = raw.strip()  # a shell argument holds no YAML comment: `data.train=my ds #1` is that folder (before:
            # `my ds`, without a word, and a folder of that name would have been trained on)
        node: Any = nested
        parts = _key_parts(key.strip(), pair)
        for i, part in enumerate(parts):
            if isinstance(node, list):  # an earlier --set gave this list whole: set inside one of its items
                if not (isinstance(part, int) and 0 <= part < len(node)):
                    raise ConfigError(f"--set {pair!r}: an earlier --set gave {len(node)} item(s) there")
            elif not isinstance(node, dict):  # before: AttributeError
                raise ConfigError(f"--set {pair!r}: an earlier --set gave a value there, not a section")
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node[part] if isinstance(node, list) else node.setdefault(part, {})
    return nested


def reset_keys(override: dict[str | int, Any], where: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The key paths `--set KEY=null` resets."""
    found = []
    for key, value in override.items():
        if value is None:
            found.append((*where, key))
        elif isinstance(value, dict):
            found += reset_keys(value, (*where, key))
    return found


def check_reset_key(config: Any, path: tuple[str | int, ...]) -> None:
    """A ConfigError unless `path` names a setting of `config` (or lies inside a mapping-valued one)."""
    node: Any = config
    for i, part in enumerate(path):
        if isinstance(node, dict):  # a mapping's own keys (part_map's classes) are the user's
            return
        if isinstance(part, int):  # a list index `merge_overrides` has checked
            node = node[part]
        elif dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}:
            node = getattr(node, part)
        else:
            here = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[: i + 1]).lstrip(".")
            raise ConfigError(f"--set {here}=null: unknown key")
