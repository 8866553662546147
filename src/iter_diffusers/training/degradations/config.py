"""What the two degradation configs share: a JSON round trip and the checks of their fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from .ops import CV2_INTERPOLATION


class SerializableConfig:
    """Mixin giving frozen dataclass configs a JSON-friendly ``to_dict`` / ``from_dict`` round trip."""

    pipeline: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples become lists) with a ``"pipeline"`` key naming the degradation model."""
        out: dict[str, Any] = {"pipeline": self.pipeline}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` (typos in JSON configs fail loudly)."""
        data = dict(data)
        pipeline = data.pop("pipeline", cls.pipeline)
        if pipeline != cls.pipeline:
            raise ValueError(f"{cls.__name__} cannot be built from a '{pipeline}' config")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} keys: {unknown}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


def check_range(name: str, value: Sequence[float], low: float | None = None) -> None:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be an ordered (min, max) pair, got {value}")
    if low is not None and value[0] < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability, got {value}")


def check_distribution(name: str, value: Sequence[float], length: int) -> None:
    if len(value) != length or any(p < 0 for p in value) or sum(value) <= 0:
        raise ValueError(f"{name} must hold {length} non-negative weights, got {value}")


def check_interpolations(value: Sequence[str]) -> None:
    if not value or any(m not in CV2_INTERPOLATION for m in value):
        raise ValueError(f"interpolations must be a non-empty subset of {sorted(CV2_INTERPOLATION)}")
