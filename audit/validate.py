"""`audit validate`: everything about a spec that needs no forward pass.

The spec itself (names, metrics, parameters) is checked when it loads. Then the model:
the file reads, the factory imports and is allowed (never the standard library, builtins
or torch's loaders), returns a torch.nn.Module, and its state dict has the file's keys
and shapes. Then every dataset: file headers, the label column (read whole: the classes
must be known), sensitive columns and arrays, feature columns and their types (tables
stream through in chunks), image sizes. Then each check's `sensitive` parameter against
the attributes of its dataset. The errors are the audit's own, so a spec validate calls
valid loads the same way when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.data import DataSummary, summarize_dataset
from audit.errors import AuditInputError, DataError
from audit.models import inspect_model
from audit.spec import AuditSpec


@dataclass(frozen=True)
class Validation:
    model: str  # what the model is and what will be imported
    datasets: dict[str, DataSummary]

    def lines(self) -> list[str]:
        out = [f"  model: {self.model}"]
        out += [f"  data {name}: {s.description}" for name, s in self.datasets.items()]
        notices = list(dict.fromkeys(n for s in self.datasets.values() for n in s.notices))
        out += [f"  note: {n}" for n in notices]
        return out


def validate_inputs(spec: AuditSpec) -> Validation:
    """Check the spec's model and data without a forward pass; raises the AuditInputError
    the audit would raise, prefixed with the spec file."""
    try:
        model = inspect_model(spec)
        summaries: dict[str, DataSummary] = {}

        def get(name: str) -> DataSummary:
            if name not in summaries:
                summaries[name] = summarize_dataset(spec, name, get_summary=get)
            return summaries[name]

        for name in spec.dataset_names():
            get(name)
        _check_sensitive_params(spec, summaries)
    except AuditInputError as exc:
        raise type(exc)(str(exc), where=spec.source) from None
    return Validation(model=model, datasets={n: summaries[n] for n in spec.dataset_names()})


def _check_sensitive_params(spec: AuditSpec, summaries: dict[str, DataSummary]) -> None:
    """A check's `sensitive` names must exist in its dataset: sensitive attributes, or for
    checks that do not require them (attributions), input features too."""
    from audit.registry import registry

    for i, entry in enumerate(spec.checks):
        names = getattr(entry.typed_params, "sensitive", None) if entry._typed is not None else None
        if not names:
            continue
        ds = summaries[entry.data]
        needs_attributes = "sensitive" in registry.get(entry.check).requires
        known = list(ds.sensitive) + ([] if needs_attributes else list(ds.features or []))
        for name in names:
            if name not in known:
                what = "sensitive attributes" if needs_attributes else "sensitive attributes or features"
                raise DataError(f"'{name}' is not among the {what} of dataset '{entry.data}' "
                                f"({', '.join(known) or 'none'})", where=f"checks[{i}].sensitive")
