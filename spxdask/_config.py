"""The base of spxdask's configuration dataclasses: validation that names the field at fault,
positions checked in one place, and dict / JSON / YAML round trips (the reference's
``to_yaml_file`` / ``from_yaml_file`` for every config)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import json
import math
import numbers
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import yaml

from ._io import atomic_path

C = TypeVar("C", bound="Config")


def require(config: Any, ok: bool, name: str, what: str) -> None:
    """Raise ``ValueError("<Config>.<name> <what>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{type(config).__name__}.{name} {what}, got {getattr(config, name)!r}")


def valid_position(ra: Any, dec: Any) -> bool:
    """Whether (ra, dec) in degrees is a finite sky position: ra in [0, 360], dec in [-90, 90]."""
    try:
        ra, dec = float(ra), float(dec)
    except (TypeError, ValueError):
        return False
    return math.isfinite(ra) and math.isfinite(dec) and 0 <= ra <= 360 and -90 <= dec <= 90


def require_position(config: Any, ra: str, dec: str) -> None:
    """Raise ``ValueError`` naming both fields unless ``config.<ra>``, ``config.<dec>`` is a
    sky position."""
    value = (getattr(config, ra), getattr(config, dec))
    if not valid_position(*value):
        raise ValueError(f"{type(config).__name__}.{ra}/{dec} must be ra 0..360, dec -90..90 deg, got {value}")


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if type(value).__module__.startswith("lsdb"):  # a catalog given as an object: named, not serialised
        return f"<{type(value).__name__} {getattr(value, 'name', '')}>"
    return value


@functools.cache
def _numeric_fields(cls: type) -> frozenset[str]:
    """The fields of a config dataclass annotated as numbers (``float``, ``int``, or optional)."""
    out = set()
    for name, hint in typing.get_type_hints(cls).items():
        kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        kinds = tuple(k for k in kinds if k is not type(None))
        if kinds and all(k in (int, float) for k in kinds):
            out.add(name)
    return frozenset(out)


class _Checked(type):
    """Configs name the field at fault before they are built: an unknown keyword gets the
    closest field names, a number given as text (``center_ra="150.1"``) is refused."""

    @property
    def __signature__(cls) -> inspect.Signature:
        """The dataclass's own signature (its ``__init__`` without ``self``), not ``__call__``'s,
        for ``inspect``, the docs and IDEs."""
        init = inspect.signature(cls.__init__)  # type: ignore[misc]
        return init.replace(parameters=list(init.parameters.values())[1:])

    def __call__(cls, *args, **kwargs):
        if not dataclasses.is_dataclass(cls):
            return super().__call__(*args, **kwargs)
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = (f"; did you mean {' or '.join(map(repr, close))}?" if close
                        else f"; its fields are {', '.join(names)}")
                raise TypeError(f"{cls.__name__} has no field {key!r}{hint}")
        given = dict(zip(names, args)) | kwargs
        for name in _numeric_fields(cls) & set(given):
            value = given[name]
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ValueError(f"{cls.__name__}.{name} must be a number, got {value!r} ({type(value).__name__})")
        return super().__call__(*args, **kwargs)


class Config(metaclass=_Checked):
    """Mixin of the configuration dataclasses.

    ``to_dict`` gives plain types (paths as text, tuples and arrays as lists, nested configs as
    mappings); ``from_dict`` rebuilds, turning mappings back into nested configs and lists into
    tuples where the field is a tuple, then validates as the constructor does. Unknown keys
    are an error naming them, unless the class keeps the reference's habit of dropping them
    (``drop_unknown = True``).
    """

    drop_unknown: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise ValueError(f"a {cls.__name__} needs a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - set(fields)
        if unknown and not cls.drop_unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for name, value in data.items():
            if name not in fields:
                continue
            hint = hints[name]
            kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
            nested = [k for k in kinds if isinstance(k, type) and issubclass(k, Config)]
            if nested and isinstance(value, dict):
                value = nested[0].from_dict(value)
            elif isinstance(value, list) and any(typing.get_origin(k) is tuple for k in kinds):
                value = tuple(value)
            values[name] = value
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        return cls.from_dict(json.loads(text))

    def to_yaml_file(self, filepath: str | Path) -> None:
        """Write the config as YAML (atomically), under a comment naming its class.

        Parameters
        ----------
        filepath : path
            The YAML file.
        """
        header = f"# spxdask {type(self).__name__}\n"
        with atomic_path(filepath) as tmp:
            tmp.write_text(header + yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml_file(cls: type[C], filepath: str | Path) -> C:
        """Read a config written by :meth:`to_yaml_file` (safe YAML: no Python tags).

        Parameters
        ----------
        filepath : path
            The YAML file.

        Returns
        -------
        Config
            An instance of the class it is called on.
        """
        path = Path(filepath)
        if not path.exists():
            raise FileNotFoundError(f"no config file at {path}")
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a YAML mapping")
        return cls.from_dict(data)
