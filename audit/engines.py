"""The pass over a streamed dataset, on this machine or sharded over a Ray cluster.

Both engines run `audit.lazy.scan_range` over the same blocks and the same batches and
produce one `PassSummary`: what every check shares of a dataset (float32 logits, and
penultimate-layer embeddings when a check asked for them; a 64-bit hash per row; the
SHA-256 of each block of inputs; exact per-element statistics of the inputs). Rows keep
their place (canonical order: shard files sorted, rows in file order) whatever order the
shards finish in, so every number a check derives, bootstrap draws included, is the same
on either engine and with any number of workers.

Ray: the rows are cut into shards of whole blocks; Ray Data maps them (`map_batches` with
an actor pool, one shard per call) over `num_workers` actors that each take the model
once (from the object store) and read their own rows from the files. Scheduling,
transport and fault tolerance are Ray's: an actor whose process dies (out of memory, a
crash, a lost node) is restarted and its shard retried, up to `execution.max_retries`
times; when that is spent the pass fails (`PassFailed`), the checks that need that
dataset end in `error` and the report is still written. An exception raised by our own
code in a worker (an unreadable file, a model that rejects the input) is not retried:
it is the same error a pass on this machine raises.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.errors import AuditInputError, DataError, ModelError
from audit.lazy import BlockStats, LazyInputs, block_rows, merge_stats, scan_range

Progress = Callable[[int, int, str], None]  # (rows done, rows in all, detail)


class EngineError(AuditInputError):
    """The engine cannot be used as the spec asks (Ray missing, a cluster that cannot be
    reached): exit 2, one message."""


class ForwardFailed(Exception):
    """The model raised on a batch of a streamed dataset (its first line); the Context says
    it as the in-memory pass does (exit 2)."""


class PassFailed(Exception):
    """A dataset's pass failed after the engine's retries: the checks that need the dataset
    error, the audit goes on and its report is written."""


@dataclass
class PassSummary:
    """What the one pass over a dataset produced, in canonical row order."""

    n: int
    block: int
    row_hashes: np.ndarray | None  # (N,) uint64; None once dropped (Context.keep_row_hashes)
    digests: list[bytes]  # SHA-256 of each block's float32 inputs
    stats: BlockStats
    logits: np.ndarray | None = None  # (N, K) float32, when the model ran
    embeddings: np.ndarray | None = None  # (N, D) float32, when a check asked for them
    engine: str = "streaming"
    shards: int = 1  # input files
    tasks: int = 1  # units of work the engine scheduled (Ray: shards of blocks)
    workers: int = 1
    forward_rows: int = 0  # rows the model ran on (incl. rows read to complete a batch)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.engine, "rows": self.n, "shards": self.shards, "tasks": self.tasks,
                "workers": self.workers, "blocks": len(self.digests), "block_rows": self.block,
                "model_pass": self.logits is not None, "seconds": round(self.seconds, 3)}


class _Collector:
    """Puts blocks and outputs where their rows belong."""

    def __init__(self, n: int, block: int) -> None:
        self.n, self.block = n, block
        self.hashes = np.zeros(n, np.uint64)
        n_blocks = -(-n // block) if n else 0
        self.digests: list[bytes | None] = [None] * n_blocks
        self.stats: list[BlockStats | None] = [None] * n_blocks
        self.outputs: dict[str, np.ndarray] = {}
        self.forward_rows = 0

    def block_done(self, start: int, stop: int, digest: bytes, hashes: np.ndarray, stats: BlockStats) -> None:
        self.hashes[start:stop] = hashes
        self.digests[start // self.block] = digest
        self.stats[start // self.block] = stats

    def out(self, r0: int, arrays: dict[str, np.ndarray | None]) -> None:
        for key, a in arrays.items():
            if a is None:
                continue
            if key not in self.outputs:
                self.outputs[key] = np.zeros((self.n, *a.shape[1:]), np.float32)
            self.outputs[key][r0:r0 + len(a)] = a

    def summary(self, **kw: Any) -> PassSummary:
        missing = [i for i, d in enumerate(self.digests) if d is None]
        if missing:
            raise PassFailed(f"{len(missing)} block(s) of rows never came back (first at row {missing[0] * self.block})")
        return PassSummary(n=self.n, block=self.block, row_hashes=self.hashes, digests=list(self.digests),  # type: ignore[arg-type]
                           stats=merge_stats(self.stats) if self.stats else BlockStats.of(np.zeros((0, 1))),  # type: ignore[arg-type]
                           logits=self.outputs.get("logits"), embeddings=self.outputs.get("emb"),
                           forward_rows=self.forward_rows, **kw)


def _as_dict(out: Any) -> dict[str, np.ndarray | None]:
    return out if isinstance(out, dict) else {"logits": out}


# ---- this machine --------------------------------------------------------------------------
def run_local(x: LazyInputs | np.ndarray, *, batch_size: int, forward: Callable[[np.ndarray], Any] | None,
              progress: Progress | None = None) -> PassSummary:
    """The pass on this machine: blocks in order, memory bounded by a block and a batch."""
    t0 = time.perf_counter()
    n = len(x)
    block = block_rows(int(np.prod(x.shape[1:])) if len(x.shape) > 1 else 1)
    col = _Collector(n, block)
    for kind, item in scan_range(x, 0, n, block=block, batch_size=batch_size, forward=forward):
        if kind == "block":
            col.block_done(item.start, item.stop, item.digest, item.hashes, item.stats)
            if progress:
                progress(item.stop, n, "")
        else:
            r0, out, ran = item
            col.out(r0, _as_dict(out))
            col.forward_rows += ran
    shards = x.shards if isinstance(x, LazyInputs) else 1
    return col.summary(engine="streaming", shards=shards, tasks=1, workers=1, seconds=time.perf_counter() - t0)


# ---- Ray -------------------------------------------------------------------------------------
def _pack(arrays: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _unpack(blob: bytes) -> Any:
    return np.load(io.BytesIO(blob), allow_pickle=False)


class _ShardWorker:
    """A Ray Data actor: takes the model once, then scans the shards (row ranges) it is
    handed and returns one packed result per shard."""

    def __init__(self, model: Any, inputs: LazyInputs, setup: dict[str, Any]) -> None:
        import torch

        self.inputs = inputs
        self.setup = setup
        self.block = int(setup["block"])
        self.batch_size = int(setup["batch_size"])
        threads = setup.get("threads")
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(setup["device"])
        self.module = None
        if model is not None and type(model).__name__ == "ObjectRef":
            import ray

            model = ray.get(model)  # the model was put in the object store once, for every worker
        if model is not None:
            module = _unwrap_model(model)
            module.to(self.device).eval()
            for p in module.parameters():
                p.requires_grad_(False)
            self.module = module

    def _forward(self, buf: np.ndarray) -> dict[str, np.ndarray | None]:
        import torch

        from audit.inference import _capture_head, predict_logits

        cast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else \
            torch.autocast(device_type=self.device.type, enabled=False)
        try:
            with _capture_head(self.module, int(self.setup["n_classes"]), enabled=bool(self.setup["capture"])) as grab:
                logits = predict_logits(self.module, buf, self.device, self.batch_size, autocast=cast)
        except Exception as exc:  # noqa: BLE001 - the model's own error, said once by the driver
            raise forward_failed(exc) from None
        return {"logits": logits, "emb": grab.result(len(buf)) if self.setup["capture"] else None}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        blobs = []
        for start, stop in zip(batch["start"], batch["stop"]):
            start, stop = int(start), int(stop)
            forward = self._forward if self.module is not None else None
            blocks: dict[str, list[Any]] = {"start": [], "stop": [], "digest": [], "hashes": []}
            stats: list[BlockStats] = []
            outs: dict[str, list[np.ndarray]] = {}
            out_rows: list[int] = []
            ran = 0
            for kind, item in scan_range(self.inputs, start, stop, block=self.block, batch_size=self.batch_size,
                                         forward=forward):
                if kind == "block":
                    blocks["start"].append(item.start)
                    blocks["stop"].append(item.stop)
                    blocks["digest"].append(np.frombuffer(item.digest, np.uint8))
                    blocks["hashes"].append(item.hashes)
                    stats.append(item.stats)
                else:
                    r0, out, n_ran = item
                    ran += n_ran
                    out_rows.append(r0)
                    for k, v in out.items():
                        if v is not None:
                            outs.setdefault(k, []).append(v)
            packed: dict[str, Any] = {
                "block_start": np.array(blocks["start"], np.int64), "block_stop": np.array(blocks["stop"], np.int64),
                "digests": np.stack(blocks["digest"]) if blocks["digest"] else np.zeros((0, 32), np.uint8),
                "hashes": np.concatenate(blocks["hashes"]) if blocks["hashes"] else np.zeros(0, np.uint64),
                "ran": np.array(ran), "start": np.array(start), "stop": np.array(stop)}
            for i, st in enumerate(stats):
                packed.update(st.to_arrays(f"s{i}_"))
            packed["n_stats"] = np.array(len(stats))
            for k, parts in outs.items():
                packed[f"out_{k}"] = np.concatenate(parts)
            blobs.append(_pack(packed))
        return {"start": np.asarray(batch["start"], np.int64), "payload": np.array(blobs, dtype=object)}


def _unwrap_model(model: Any) -> Any:
    """The module as the driver sent it: a torch module, or TorchScript saved to bytes."""
    if isinstance(model, (bytes, bytearray)):
        import torch

        return torch.jit.load(io.BytesIO(model), map_location="cpu")
    return model


class RayEngine:
    """Ray Data over a local instance or an existing cluster (see the module docstring)."""

    name = "ray"

    def __init__(self, execution: Any) -> None:
        self.execution = execution
        self.started = False  # this engine started the Ray instance (and shuts it down)
        self.info: dict[str, Any] = {}

    # -- connecting
    @staticmethod
    def require() -> Any:
        try:
            import ray
            import ray.data
        except ImportError as exc:
            raise EngineError(f"execution engine 'ray' needs Ray Data, which is not installed ({exc.name or exc}): "
                              "pip install 'audit-suite[ray]' (or use engine: streaming on one machine)") from None
        return ray

    def start(self) -> None:
        ray = self.require()
        if ray.is_initialized():
            self.info = {"address": "already connected"}
        else:
            self._connect(ray)
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        self.info.update(self._cluster(ray))

    def _connect(self, ray: Any) -> None:
        import logging
        import os

        address = self.execution.address
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
                              "configure_logging": True}
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        if address not in ("local", "auto"):
            _probe(address)
        try:
            if address == "local":
                cpus = os.cpu_count() or 1
                ray.init(num_cpus=cpus, **kw)
            elif address.startswith("ray://"):
                ray.init(address=address, logging_level=logging.WARNING)
            else:
                ray.init(address=address, **kw)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = {"auto": "no running Ray cluster was found (start one with `ray start --head`, or set "
                             "RAY_ADDRESS)"}.get(address, f"cannot connect to the Ray cluster at {address}")
            raise EngineError(f"execution.address: {where}: {first}") from None
        self.started = True
        self.info = {"address": address}

    @staticmethod
    def _cluster(ray: Any) -> dict[str, Any]:
        try:
            res = ray.cluster_resources()
        except Exception:  # noqa: BLE001 - informational only
            res = {}
        return {"ray_version": getattr(ray, "__version__", "?"), "cluster_cpus": float(res.get("CPU", 0)),
                "cluster_gpus": float(res.get("GPU", 0)), "nodes": sum(1 for k in res if k.startswith("node:"))}

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    # -- the pass
    def resources(self) -> dict[str, float]:
        ex = self.execution
        cpus = ex.num_cpus_per_worker
        if cpus is None:
            total = float(self.info.get("cluster_cpus") or 1.0)
            cpus = min(1.0, total / ex.num_workers) if total else 1.0
        return {"num_cpus": float(cpus), "num_gpus": float(ex.num_gpus_per_worker)}

    def run(self, x: LazyInputs, *, batch_size: int, module: Any, n_classes: int, capture: bool,
            progress: Progress | None = None) -> PassSummary:
        import ray
        import ray.data

        t0 = time.perf_counter()
        ex = self.execution
        n = len(x)
        block = block_rows(x.row_elements)
        n_blocks = -(-n // block)
        # a few shards per worker, each a run of whole blocks
        per = max(1, -(-n_blocks // (ex.num_workers * 4)))
        starts = list(range(0, n, block * per))
        items = [{"start": s, "stop": min(s + block * per, n)} for s in starts]
        res = self.resources()
        device = "cuda" if res["num_gpus"] > 0 else "cpu"
        setup = {"block": block, "batch_size": batch_size, "device": device, "n_classes": n_classes,
                 "capture": bool(capture and module is not None), "threads": max(1, int(res["num_cpus"]))}
        model_ref = ray.put(_shippable(module)) if module is not None else None
        retries = int(ex.max_retries)
        workers = min(ex.num_workers, len(items))  # no idle actor for a dataset of fewer shards
        data = ray.data.from_items(items, override_num_blocks=len(items))
        mapped = data.map_batches(
            _ShardWorker, fn_constructor_args=(model_ref, x, setup), batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=res["num_cpus"],
            num_gpus=res["num_gpus"] or None,
            ray_remote_args_fn=lambda: {"max_restarts": retries, "max_task_retries": retries})
        col = _Collector(n, block)
        done_rows = done_tasks = 0
        try:
            for out in mapped.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                for blob in out["payload"]:
                    part = _unpack(blob)
                    k = int(part["n_stats"])
                    for i, (b0, b1) in enumerate(zip(part["block_start"], part["block_stop"])):
                        lo = int(b0) - int(part["start"])
                        col.block_done(int(b0), int(b1), part["digests"][i].tobytes(),
                                       part["hashes"][lo:lo + int(b1) - int(b0)],
                                       BlockStats.from_arrays(part, f"s{i}_") if i < k else BlockStats.of(
                                           np.zeros((0, 1))))
                    outs = {key[4:]: part[key] for key in part.files if key.startswith("out_")}
                    if outs:
                        col.out(int(part["start"]), outs)
                    col.forward_rows += int(part["ran"])
                    done_rows += int(part["stop"]) - int(part["start"])
                    done_tasks += 1
                    if progress:
                        progress(done_rows, n, f"shard {done_tasks}/{len(items)} on {workers} Ray workers")
        except Exception as exc:  # noqa: BLE001 - sorted below: our own errors, or Ray's after its retries
            raise _ray_failure(exc) from None
        return col.summary(engine="ray", shards=x.shards, tasks=len(items), workers=workers,
                           seconds=time.perf_counter() - t0,
                           extra={"num_cpus_per_worker": res["num_cpus"], "num_gpus_per_worker": res["num_gpus"]})


def _probe(address: str, timeout: float = 5.0) -> None:
    """Refuse an address nothing listens on before handing it to Ray: Ray's GCS client
    keeps retrying an unreachable head for minutes, logging from C++, before it gives up."""
    import socket

    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise EngineError(f"execution.address: cannot connect to the Ray cluster at {address}: {why} "
                          "(is the head running? `ray start --head` prints its address)") from None


def _shippable(module: Any) -> Any:
    """What the object store carries to the workers: the module itself (pickled by Ray),
    or a TorchScript module saved to bytes (ScriptModules do not pickle)."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        buf = io.BytesIO()
        torch.jit.save(module, buf)
        return buf.getvalue()
    return module


def forward_failed(exc: BaseException) -> ForwardFailed:
    text = str(exc).strip()
    return ForwardFailed(f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": "))


def _ray_failure(exc: BaseException) -> Exception:
    """Our own error raised in a worker is re-raised as itself (the same message a pass on
    this machine gives); anything else (a worker that kept dying, a lost node) fails the pass."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        own = getattr(cur, "cause", None)
        src = own if isinstance(own, BaseException) else cur
        if isinstance(cur, ForwardFailed) or isinstance(src, ForwardFailed):
            return ForwardFailed(str(src.args[0]) if src.args else "")
        if isinstance(src, (DataError, ModelError)):
            cls = DataError if isinstance(src, DataError) else ModelError
            return cls(str(src.args[0]) if src.args else str(src))
        nxt = getattr(cur, "cause", None)
        cur = nxt if isinstance(nxt, BaseException) else (cur.__cause__ or cur.__context__)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return PassFailed(f"the Ray pass failed after its retries ({type(exc).__name__}: {first[:300]})")

