"""The audit spec: safe YAML (duplicate keys rejected), validated on load.

Errors name the file, the YAML path (`checks[3].thresholds.ece`) and, for unknown
names, the closest known one. No code ever runs from a spec: `factory` names a
callable that is imported only when the model is loaded.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from audit.check import DEFAULT_CONFIDENCE
from audit.errors import SpecError, did_you_mean, env_limit
from audit.yamlio import load_yaml, yaml_path

RESERVED_CHECK_KEYS = ("id", "check", "data", "clause", "thresholds", "confidence")
MAX_IMAGE_SIDE = 8192  # image_size: refused before any allocation


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Threshold(_Strict):
    min: float | None = None
    max: float | None = None
    level: Literal["must", "should"] = "must"

    @model_validator(mode="after")
    def _one_bound(self) -> Threshold:
        if (self.min is None) == (self.max is None):
            raise ValueError("give exactly one of 'min' or 'max'")
        return self

    @property
    def op(self) -> str:
        return "min" if self.min is not None else "max"

    @property
    def limit(self) -> float:
        return float(self.min if self.min is not None else self.max)  # type: ignore[arg-type]


class DataEntry(_Strict):
    """One dataset: a built-in fixture, a file/folder, or a transform of another dataset."""

    fixture: str | None = None
    split: str | None = None
    path: str | None = None
    label: str | None = None
    sensitive: list[str] = Field(default_factory=list)
    # input columns (CSV/Parquet columns, or npz arrays stacked as columns), in this order
    features: list[str] | None = Field(None, min_length=1)
    # what x holds; integers are token ids only with `kind: text` (see the README's data contract)
    kind: Literal["image", "tabular", "text", "tokens"] | None = None
    # text data: the column (CSV, Parquet, JSONL) holding the raw text of each row
    text: str | None = None
    # token-classification JSONL: the keys holding each sentence's words and tags
    tokens: str | None = None
    tags: str | None = None
    # token-classification tags: IOB2 (every entity starts with B-) or IOB1 (I- starts an
    # entity, B- only between two adjacent entities of one type); default: inferred
    scheme: Literal["IOB1", "IOB2"] | None = None
    # [H, W]: image folders of mixed sizes are resized to it (and the dataset records it)
    image_size: tuple[int, int] | None = None
    from_: str | None = Field(None, alias="from")
    transform: str | None = None
    severity: int = Field(3, ge=1, le=5)

    @model_validator(mode="after")
    def _one_source(self) -> DataEntry:
        sources = [s for s in ("fixture", "path", "from") if getattr(self, "from_" if s == "from" else s)]
        if len(sources) != 1:
            raise ValueError("give exactly one of 'fixture', 'path' or 'from'")
        if self.from_ and not self.transform:
            raise ValueError("'from' needs a 'transform'")
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError(f"features are repeated: {self.features}")
        if self.image_size is not None and not all(1 <= s <= MAX_IMAGE_SIDE for s in self.image_size):
            raise ValueError(f"image_size must be [H, W] with sides from 1 to {MAX_IMAGE_SIDE}")
        return self

    @field_validator("sensitive", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class EarlyStopping(_Strict):
    patience: int = Field(3, ge=1)


class DPSpec(_Strict):
    """Differentially private training (DP-SGD through Opacus): the target (epsilon, delta)
    the noise is calibrated to, and the per-sample gradient clipping norm."""

    epsilon: float = Field(gt=0, le=1000)
    delta: float = Field(1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)


class TrainSpec(_Strict):
    architecture: Literal["cnn", "resnet", "vit", "ft_transformer", "text_transformer"]
    data: str = "train"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(1e-4, ge=0)
    scheduler: Literal["cosine", "none"] = "cosine"
    early_stopping: EarlyStopping | None = None
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    seed: int | None = None
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    options: dict[str, Any] = Field(default_factory=dict)  # architecture keyword arguments
    dp: DPSpec | None = None  # differentially private training (needs the `privacy` extra: Opacus)


class ModelSpec(_Strict):
    fixture: str | None = None
    path: str | None = None
    factory: str | None = None
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)
    trust_pickle: bool = False
    input_range: tuple[float, float] | None = None
    classes: list[str] | None = None
    train: TrainSpec | None = None
    save: str | None = None
    batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        n = sum(x is not None for x in (self.fixture, self.path, self.train))
        if n != 1:
            raise ValueError("give exactly one of 'fixture', 'path' or 'train'")
        if self.factory and ":" not in self.factory:
            raise ValueError("'factory' must look like 'package.module:callable'")
        return self


class CheckEntry(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    check: str
    data: str = "test"
    clause: str | None = None
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    confidence: float = Field(DEFAULT_CONFIDENCE, gt=0.5, lt=1.0)
    params: dict[str, Any] = Field(default_factory=dict)
    # the check's typed Params, validated once when the spec is loaded
    _typed: Any = PrivateAttr(default=None)

    @property
    def typed_params(self) -> Any:
        if self._typed is None:
            raise RuntimeError(f"check '{self.id}': parameters not validated (load the spec with the registry)")
        return self._typed

    @model_validator(mode="before")
    @classmethod
    def _collect_params(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        own = {k: v for k, v in raw.items() if k in RESERVED_CHECK_KEYS}
        own["params"] = {k: v for k, v in raw.items() if k not in RESERVED_CHECK_KEYS}
        return own


ENGINES = ("auto", "memory", "streaming", "ray")
RAY_ADDRESS = r"^(auto|local|ray://[A-Za-z0-9_.\-\[\]:]+:\d+|[A-Za-z0-9_.\-\[\]:]+:\d+)$"


class ExecutionSpec(_Strict):
    """How the audit reads its data and runs its model passes (see the README's Scale).

    memory: every dataset in memory (nothing streams). streaming: file datasets stream
    from disk (parquet/CSV in row groups or chunks, images decoded in batches, npz
    memory-mapped), one pass per dataset on this machine. ray: the same, with each pass
    sharded over a Ray cluster. auto (default): a file dataset streams when its inputs
    would take more than `stream_above_mb` in memory."""

    engine: Literal["auto", "memory", "streaming", "ray"] = "auto"
    # ray: `local` starts a Ray instance on this machine; `auto` joins the running cluster
    # (RAY_ADDRESS or the one `ray start` made here); `ray://HOST:PORT` (Ray Client) or
    # `HOST:PORT` (the head's GCS) a remote one
    address: str = "local"
    num_workers: int = Field(2, ge=1, le=4096)
    num_gpus_per_worker: float = Field(0.0, ge=0.0, le=64.0)
    # default: 1, or the cluster's CPUs shared among the workers when it has fewer
    num_cpus_per_worker: float | None = Field(None, gt=0.0, le=1024.0)
    # a worker process that dies (out of memory, a crash, a lost node) is restarted and its
    # shard retried by Ray up to this many times; then the dataset's pass fails
    max_retries: int = Field(3, ge=0, le=100)
    stream_above_mb: float = Field(1024.0, gt=0.0)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        import re

        if not re.fullmatch(RAY_ADDRESS, v.strip()):
            raise ValueError(f"address {v!r} is not one of: auto, local, ray://HOST:PORT, HOST:PORT")
        return v.strip()


TASKS = ("classification", "token-classification")


class AuditSpec(_Strict):
    name: str
    standard: str | None = None
    # standard profiles (audit.standards): shipped names or YAML paths; a known profile
    # name in `standard` selects that profile too, any other `standard` is a subtitle
    standards: list[str] = Field(default_factory=list)
    # classification (one label per sample) or token-classification (one tag per word);
    # default: inferred from the model (a Hugging Face config's architecture) and the data
    task: Literal["classification", "token-classification"] | None = None
    seed: int = 0
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    # `holm`: the chance that any pass in the audit is wrong is at most 1 - confidence
    familywise: Literal["none", "holm"] = "none"
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
    model: ModelSpec
    data: dict[str, DataEntry]
    domains: dict[str, DataEntry] = Field(default_factory=dict)
    checks: list[CheckEntry]
    # Where the spec came from; relative paths resolve against `base_dir`.
    source: str = "<memory>"
    base_dir: Path = Path(".")
    sha256: str = ""
    raw: dict[str, Any] = Field(default_factory=dict)
    _profiles: list[Any] = PrivateAttr(default_factory=list)

    @field_validator("standards", mode="before")
    @classmethod
    def _listify_standards(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @property
    def profiles(self) -> list[Any]:
        """The selected standard profiles (audit.standards.Profile), loaded with the spec."""
        return self._profiles

    def dataset_names(self) -> list[str]:
        return list(self.data) + list(self.domains)

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


# Resource limits, checked before anything is allocated for the spec's content: a spec is
# a page of YAML, so these are far above any real one (both can be raised by env var).
MAX_SPEC_BYTES = int(env_limit("AUDIT_MAX_SPEC_BYTES", 1024 * 1024))
# Nodes of the spec once every alias is expanded: a "billion laughs" document of a few
# hundred bytes expands to billions of nodes when anything walks it (pydantic, JSON).
MAX_SPEC_NODES = int(env_limit("AUDIT_MAX_SPEC_NODES", 100_000))


def load_spec(path: str | Path, *, check_registry: bool = True) -> AuditSpec:
    path = Path(path)
    if not path.exists():
        raise SpecError(f"spec file not found: {path}")
    if path.is_dir():
        raise SpecError(f"{path} is a folder, not a spec file: give the YAML file")
    try:
        with open(path, "rb") as fh:  # read at most one byte past the limit (a FIFO has no size)
            raw_bytes = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read the spec: {exc.strerror or exc}", where=str(path)) from None
    if len(raw_bytes) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is larger than {MAX_SPEC_BYTES:,} bytes (AUDIT_MAX_SPEC_BYTES): "
                        f"not an audit spec", where=str(path))
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"the spec is not UTF-8 text (invalid byte 0x{raw_bytes[exc.start]:02x} at offset "
                        f"{exc.start}); save it as UTF-8", where=str(path)) from None
    raw = load_yaml(text, str(path), max_nodes=MAX_SPEC_NODES, what="the spec",
                    limit_var="AUDIT_MAX_SPEC_NODES")
    return parse_spec(raw, source=str(path), base_dir=path.resolve().parent,
                      sha256=hashlib.sha256(raw_bytes).hexdigest(), check_registry=check_registry)


def parse_spec(raw: Any, *, source: str = "<memory>", base_dir: Path = Path("."), sha256: str = "",
               check_registry: bool = True) -> AuditSpec:
    if not isinstance(raw, dict):
        raise SpecError("the spec must be a YAML mapping", where=source)
    body = dict(raw)
    data = body.get("data")
    if isinstance(data, dict) and "domains" in data:
        data = dict(data)
        body["domains"] = data.pop("domains") or {}
        body["data"] = data
    _reject_unknown_top(body, source)
    try:
        spec = AuditSpec.model_validate({**body, "source": source, "base_dir": base_dir,
                                         "sha256": sha256, "raw": raw})
    except ValidationError as exc:
        raise _spec_error(exc, source, body) from None
    _check_references(spec)
    if check_registry:
        validate_checks(spec)
    _select_standards(spec, check_registry)
    return spec


def _select_standards(spec: AuditSpec, check_registry: bool) -> None:
    from audit.standards import select_profiles

    spec._profiles = select_profiles(spec.standard, spec.standards, base_dir=spec.base_dir, source=spec.source,
                                     check_registry=check_registry)


_TOP_KEYS = ("name", "standard", "standards", "task", "seed", "device", "familywise", "execution", "model", "data",
             "domains", "checks")


def _reject_unknown_top(body: dict, source: str) -> None:
    for key in body:
        if key not in _TOP_KEYS:
            raise SpecError(f"unknown key '{key}'.{did_you_mean(str(key), _TOP_KEYS)}", where=f"{source}: {key}")


def _spec_error(exc: ValidationError, source: str, body: dict) -> SpecError:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    if loc and loc[0] == "domains":
        loc = ("data",) + loc
    # Pydantic reports unions and model validators with internal names; drop them.
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        field = str(loc[-1])
        parent_model = _model_at(loc[:-1])
        msg = f"unknown key '{field}'." + (did_you_mean(field, parent_model) if parent_model else "")
    elif err["type"] == "missing":
        msg = f"missing required key '{loc[-1]}'"
    return SpecError(msg, where=f"{source}: {yaml_path(loc)}")


def _model_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the spec model at a YAML path, for did-you-mean on unknown keys."""
    model: Any = AuditSpec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            # dict-valued fields (data.<role>, thresholds.<metric>): descend into the value type
            continue
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            args = getattr(ann, "__args__", ())
            model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if model is None:
        return []
    names = [f.alias or n for n, f in model.model_fields.items()]
    if model is CheckEntry:
        names = list(RESERVED_CHECK_KEYS)
    return names


def _check_references(spec: AuditSpec) -> None:
    src = spec.source
    names = spec.dataset_names()
    for dup in {n for n in spec.domains if n in spec.data}:
        raise SpecError(f"domain '{dup}' has the same name as a dataset", where=f"{src}: data.domains.{dup}")
    _check_transforms(spec)
    for name, entry in spec.domains.items():
        if entry.from_ and entry.from_ not in names:
            raise SpecError(f"unknown dataset '{entry.from_}'.{did_you_mean(entry.from_, names)}",
                            where=f"{src}: data.domains.{name}.from")
    for role, entry in spec.data.items():
        if entry.from_ and entry.from_ not in names:
            raise SpecError(f"unknown dataset '{entry.from_}'.{did_you_mean(entry.from_, names)}",
                            where=f"{src}: data.{role}.from")
    if spec.model.train and spec.model.train.data not in spec.data:
        raise SpecError(f"unknown dataset '{spec.model.train.data}'.{did_you_mean(spec.model.train.data, spec.data)}",
                        where=f"{src}: model.train.data")
    seen: set[str] = set()
    for i, entry in enumerate(spec.checks):
        if entry.id in seen:
            raise SpecError(f"duplicate check id '{entry.id}'", where=f"{src}: checks[{i}].id")
        seen.add(entry.id)
        if entry.data not in names:
            raise SpecError(f"unknown dataset '{entry.data}'.{did_you_mean(entry.data, names)}",
                            where=f"{src}: checks[{i}].data")


def _check_limit(metric: str, t: Threshold, spec: Any, where: str) -> None:
    """A threshold must be a finite number the metric can reach; one outside the metric's
    range would always pass or never pass, which is a mistake, not a requirement."""
    limit = t.limit
    if not math.isfinite(limit):
        raise SpecError(f"the limit of '{metric}' must be a finite number, not {limit}", where=where)
    lo, hi = spec.bounds
    if (lo is not None and limit < lo) or (hi is not None and limit > hi):
        rng = f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        always = (t.op == "min") == (lo is not None and limit < lo)
        raise SpecError(f"{metric} takes values in {rng}: {t.op} {limit:g} would "
                        f"{'always pass' if always else 'never pass'}", where=where)


def _check_transforms(spec: AuditSpec) -> None:
    entries = [(f"data.{n}", e) for n, e in spec.data.items()] + [(f"data.domains.{n}", e) for n, e in spec.domains.items()]
    if not any(e.transform for _, e in entries):
        return
    from audit.transforms import TRANSFORMS  # imports torch: only when a spec uses transforms

    for where, entry in entries:
        if entry.transform and entry.transform not in TRANSFORMS:
            raise SpecError(f"unknown transform '{entry.transform}'.{did_you_mean(entry.transform, TRANSFORMS)}",
                            where=f"{spec.source}: {where}.transform")


def validate_checks(spec: AuditSpec) -> None:
    """Check names, metric names and parameters against the registry."""
    from audit.registry import registry

    src = spec.source
    for i, entry in enumerate(spec.checks):
        where = f"{src}: checks[{i}]"
        if entry.check not in registry.names():
            raise SpecError(f"unknown check '{entry.check}'.{did_you_mean(entry.check, registry.names())}",
                            where=f"{where}.check")
        cls = registry.get(entry.check)
        for metric, t in entry.thresholds.items():
            if metric not in cls.metrics:
                raise SpecError(f"unknown metric '{metric}' for {entry.check}.{did_you_mean(metric, cls.metrics)}",
                                where=f"{where}.thresholds.{metric}")
            _check_limit(metric, t, cls.metrics[metric], where=f"{where}.thresholds.{metric}.{t.op}")
        try:
            params = cls.Params.model_validate({**entry.params, "data": entry.data, "confidence": entry.confidence})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err["loc"])
            name = str(loc[0]) if loc else "?"
            if err["type"] == "extra_forbidden":
                known = [n for n in cls.Params.model_fields if n not in ("data", "confidence")]
                msg = f"unknown parameter '{name}' for {entry.check}.{did_you_mean(name, known)}"
            else:
                msg = err["msg"].removeprefix("Value error, ")
            raise SpecError(msg, where=f"{where}.{yaml_path(loc)}") from None
        try:
            cls.validate_params(params, spec)
        except ValueError as exc:
            raise SpecError(str(exc), where=where) from None
        entry._typed = params
