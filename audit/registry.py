"""Check registry: lazy "module:Class" entries, `@register_check`, entry points.

Built-in checks are listed by name so that `audit validate` and `audit checks` import
only what they use (torch, captum and shap load when a check module is imported).
Third-party checks register through the `audit.checks` entry-point group.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from audit.check import Check

BUILTIN: dict[str, str] = {
    "performance.classification": "checks.performance.classification:ClassificationPerformance",
    "performance.calibration": "checks.performance.calibration:Calibration",
    "data.integrity": "checks.data.integrity:DataIntegrity",
    "fairness.group": "checks.fairness.group_gaps:GroupFairness",
    "privacy.membership_inference": "checks.privacy.membership_inference:MembershipInference",
    "shift.domain": "checks.shift.domain:DomainShift",
    "shift.corruption": "checks.shift.corruption:CorruptionShift",
    "robustness.adversarial": "checks.robustness.adversarial:AdversarialRobustness",
    "explain.attribution": "checks.explain.attribution:Attribution",
    "efficiency.latency": "checks.efficiency.latency:Latency",
    "efficiency.quantization": "checks.efficiency.quantization:Quantization",
    "training.reproducibility": "checks.training.reproducibility:Reproducibility",
}


class DuplicateCheckError(ValueError):
    pass


class Registry:
    def __init__(self) -> None:
        self._lazy: dict[str, str] = {}
        self._loaded: dict[str, type[Check]] = {}
        self._entry_points_read = False

    def add_lazy(self, name: str, target: str) -> None:
        if name in self._lazy or name in self._loaded:
            raise DuplicateCheckError(f"check '{name}' is registered twice")
        self._lazy[name] = target

    def register(self, cls: type[Check]) -> type[Check]:
        name = cls.name
        if name in self._loaded and self._loaded[name] is not cls:
            raise DuplicateCheckError(f"check '{name}' is registered twice "
                                      f"({self._loaded[name].__module__} and {cls.__module__})")
        target = self._lazy.get(name)
        if target is not None and target != f"{cls.__module__}:{cls.__qualname__}":
            raise DuplicateCheckError(f"check '{name}' is registered twice ({target} and {cls.__module__})")
        self._loaded[name] = cls
        return cls

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        for ep in entry_points(group="audit.checks"):
            self.add_lazy(ep.name, ep.value)

    def names(self) -> list[str]:
        self._read_entry_points()
        return sorted(set(self._lazy) | set(self._loaded))

    def get(self, name: str) -> type[Check]:
        self._read_entry_points()
        if name not in self._loaded:
            target = self._lazy.get(name)
            if target is None:
                raise KeyError(name)
            module, _, attr = target.partition(":")
            cls = getattr(importlib.import_module(module), attr)
            self._loaded[name] = cls
        return self._loaded[name]


registry = Registry()
for _name, _target in BUILTIN.items():
    registry.add_lazy(_name, _target)


def register_check(cls: type[Check]) -> type[Check]:
    """Class decorator: registers a check under `cls.name`; duplicate names are an error."""
    if not getattr(cls, "name", "") or cls.name != cls.name.lower() or " " in cls.name:
        raise ValueError(f"{cls.__qualname__}: a check needs a dotted lowercase `name`")
    return registry.register(cls)
