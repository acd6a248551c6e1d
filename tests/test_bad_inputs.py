"""Every bad input, resource bomb and output fault is one message and exit 2 (3 where a
check or the suite itself broke, 130 for Ctrl-C), never a traceback, and each has a valid
twin that runs.

One table: each row builds its bad case in a fresh folder (files, sometimes a
monkeypatch), runs the CLI in-process, and checks the exit code, that the output is one
line naming the problem, and that there is no traceback; then it builds the row's twin
(the same thing done right) and checks that it runs (exit 0, 1 or 4). The model is a
4-feature linear layer saved as safetensors with a factory module, the data a few dozen
rows, so the whole table runs in well under a minute.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from audit.cli import main
from tests.tiny import (FACTORY_MODULE, Workspace, base_spec, drop_workspace, make_workspace, png,
                        png_header_only, xy)

ROOT = Path(__file__).resolve().parent.parent
@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    w = make_workspace(tmp_path_factory.mktemp("tiny-ws"))
    spec = w.root / "spec.yaml"
    spec.write_text(yaml.safe_dump(base_spec(w)))
    assert main(["run", str(spec), "--out", str(w.results.parent), "-q", "--format", "json"]) == 0
    other = json.loads(w.results.read_text())
    other["provenance"]["started_at"] = "2001-01-01T00:00:00+00:00"
    w.results_other.write_text(json.dumps(other))
    yield w
    drop_workspace(w)


# ---------------------------------------------------------------------------------------------- one case
class T:
    """What a row's builder gets: its own folder, the workspace and a monkeypatch."""

    def __init__(self, tmp: Path, ws: Workspace, mp: pytest.MonkeyPatch) -> None:
        self.tmp, self.ws, self.mp = tmp, ws, mp

    def spec(self, change: Callable[[dict[str, Any]], Any] | None = None, name: str = "spec.yaml") -> Path:
        d = base_spec(self.ws)
        if change:
            change(d)
        p = self.tmp / name
        p.write_text(yaml.safe_dump(d, sort_keys=False))
        return p

    def run(self, spec: Path, *extra: str, out: Path | None = None) -> list[str]:
        return ["run", str(spec), "--out", str(out or self.tmp / "out"), "-q", "--format", "json", *extra]

    def data(self, path: Path, **fields: Any) -> list[str]:
        """A run of the base spec with its test data at `path`."""
        return self.run(self.spec(lambda d: d["data"].__setitem__("test", {"path": str(path), **fields})))

    def model(self, path: Path | None = None, **model: Any) -> list[str]:
        def change(d: dict[str, Any]) -> None:
            if path is not None:
                d["model"]["path"] = str(path)
            d["model"].update(model)
        return self.run(self.spec(change))

    def mode(self, mode: str) -> list[str]:
        return self.model(factory_kwargs={"mode": mode})

    def file(self, name: str, data: bytes | str) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p

    def npz(self, name: str = "bad.npz", **arrays: Any) -> Path:
        p = self.tmp / name
        np.savez(p, **arrays)
        return p

    def results(self, change: Callable[[dict[str, Any]], Any] | None = None, raw: bytes | None = None,
                name: str = "results.json") -> Path:
        p = self.tmp / name
        if raw is not None:
            p.write_bytes(raw)
            return p
        d = json.loads(self.ws.results.read_text())
        if change:
            change(d)
        p.write_text(json.dumps(d))
        return p

    def render(self, results: Path, *extra: str) -> list[str]:
        return ["render", str(results), "--out", str(self.tmp / "rendered"), "-q", "--format", "json", *extra]

    def old_report(self, folder: Path, results: Path | None = None) -> Path:
        """`folder` holding another audit's complete report (json only, enough to count)."""
        assert main(["render", str(results or self.ws.results_other), "--out", str(folder), "-q",
                     "--format", "json"]) == 0
        return folder

    def readonly(self, folder: Path) -> Path:
        """A folder nobody may write in. As root, permissions do not bind, so the file
        system calls that create entries in it are made to fail the same way."""
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o555)
        _READONLY.append(folder)
        if os.geteuid() == 0:
            def deny(real: Callable[..., Any]) -> Callable[..., Any]:
                def call(path: Any, *args: Any, **kwargs: Any) -> Any:
                    p = Path(os.fsdecode(path)).absolute()
                    if p.parent == folder.absolute() or folder.absolute() in p.parents:
                        raise PermissionError(errno.EACCES, "Permission denied", str(p))
                    return real(path, *args, **kwargs)
                return call
            self.mp.setattr(os, "mkdir", deny(os.mkdir))
            self.mp.setattr(os, "open", deny(os.open))
        return folder


_READONLY: list[Path] = []  # given back their write permission after each case


def wrong_type(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set the field at a dotted path (`checks.0.status`) of a results document."""
    def change(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(last) if isinstance(node, list) else last] = value
    return change


def _corrupt_npz(t: T) -> Path:
    """An npz whose deflate stream for x is garbage (zlib.error when decompressed)."""
    x, y = xy(60, 0)
    p = t.tmp / "corrupt.npz"
    np.savez_compressed(p, x=x, y=y)
    b = bytearray(p.read_bytes())
    info = zipfile.ZipFile(p).getinfo("x.npy")
    n, e = struct.unpack("<HH", b[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + n + e
    b[start + 10:start + 40] = b"\xff" * 30
    p.write_bytes(bytes(b))
    return p


def _valid_npz(t: T) -> Path:
    x, y = xy(60, 0)
    p = t.tmp / "ok.npz"
    np.savez_compressed(p, x=x, y=y)
    return p


def _image_folder(t: T, first: np.ndarray | bytes | None = None, name: str = "imgs") -> Path:
    root = t.tmp / name
    for i in range(6):
        png(root / "0" / f"{i + 1}.png", np.zeros((2, 2)))
        png(root / "1" / f"{i + 1}.png", np.array([[255, 255], [0, 0]]))
    if isinstance(first, bytes):
        (root / "0" / "0.png").write_bytes(first)
    elif first is not None:
        png(root / "0" / "0.png", first)
    return root


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        node[int(last) if isinstance(node, list) else last] = value
    return change


def _train_spec(t: T, save: Path) -> Path:
    def change(d: dict[str, Any]) -> None:
        d["model"] = {"train": {"architecture": "ft_transformer", "epochs": 1, "batch_size": 32,
                                "options": {"d_token": 8, "n_layers": 1, "n_heads": 1}},
                      "save": str(save)}
        d["data"]["train"] = {"path": str(t.ws.train_npz)}
    return t.spec(change)


def _markup_out(t: T) -> list[str]:
    (t.tmp / "[bold]x[").mkdir()
    (t.tmp / "[bold]x[/bold]").write_text("a file, not a folder")  # a folder "[bold]x[", a file "bold]"
    return t.run(t.spec(), out=t.tmp / "[bold]x[/bold]")


def _boom_check(t: T) -> list[str]:
    from audit.registry import registry

    def boom(self: Any, ctx: Any, params: Any) -> Any:
        raise ZeroDivisionError("planted bug in [/bold] a check")

    t.mp.setattr(registry.get("performance.classification"), "run", boom)
    return t.run(t.spec())


def _boom_suite(t: T) -> list[str]:
    import audit.runner

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise LookupError("planted internal bug")

    t.mp.setattr(audit.runner, "run_audit", boom)
    return t.run(t.spec())


def _interrupt(t: T) -> list[str]:
    import audit.runner

    def stop(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    t.mp.setattr(audit.runner, "run_audit", stop)
    return t.run(t.spec())


def _disk_full(t: T) -> list[str]:
    import audit.outputs

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    t.mp.setattr(audit.outputs, "_write_file", full)
    return t.run(t.spec())


def _pixels_limit(t: T) -> list[str]:
    from PIL import Image

    # stands for a 9500x9500 first image: over PIL's pixel limit (a warning in PIL, and
    # every other image would be resized to it), here with a lowered limit to stay cheap
    t.mp.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    return t.data(_image_folder(t, np.zeros((120, 120))))


def _pixels_twin(t: T) -> list[str]:
    from PIL import Image

    t.mp.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    return t.data(_image_folder(t, np.zeros((2, 2))))


def _dup(d: dict[str, Any]) -> None:
    d["checks"].append(dict(d["checks"][0]))


# ---------------------------------------------------------------------------------------------- the table
@dataclass
class Case:
    id: str
    bad: Callable[[T], list[str]]
    code: int
    message: str
    twin: Callable[[T], list[str]]
    twin_code: int = 0


valid_run: Callable[[T], list[str]] = lambda t: t.run(t.spec())  # noqa: E731
valid_validate: Callable[[T], list[str]] = lambda t: ["validate", str(t.spec())]  # noqa: E731
valid_render: Callable[[T], list[str]] = lambda t: t.render(t.results())  # noqa: E731
valid_diff: Callable[[T], list[str]] = lambda t: ["diff", str(t.ws.results), str(t.results())]  # noqa: E731

CASES: list[Case] = [
    # ---- the spec file --------------------------------------------------------------------------------
    Case("spec-missing", lambda t: ["validate", str(t.tmp / "nope.yaml")], 2, "spec file not found", valid_validate),
    Case("spec-is-folder", lambda t: ["run", str(t.tmp), "-q"], 2, "is a folder, not a spec file", valid_run),
    Case("spec-not-utf8", lambda t: ["validate", str(t.file("s.yaml", b"name: caf\xe9 audit\n"))], 2,
         "not UTF-8 text (invalid byte 0xe9", valid_validate),
    Case("spec-utf16-bom", lambda t: ["validate", str(t.file("s.yaml", "name: x\n".encode("utf-16")))], 2,
         "not UTF-8 text", valid_validate),
    Case("spec-too-large", lambda t: ["validate", str(t.file("s.yaml", "# " + "x" * (1024 * 1024 + 10) + "\n"))],
         2, "larger than 1,048,576 bytes", valid_validate),
    Case("spec-billion-laughs", lambda t: ["validate", str(t.file("s.yaml", "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
         + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))))],
         2, "expands to more than 100,000 YAML nodes", valid_validate),
    Case("spec-recursive-alias", lambda t: ["validate", str(t.file("s.yaml", "a: &a [1, *a]\n"))], 2,
         "alias refers to a node that contains it", valid_validate),
    Case("spec-deep-nesting", lambda t: ["validate", str(t.file("s.yaml", "[" * 50_000))], 2, "invalid YAML",
         valid_validate),
    Case("spec-bad-syntax", lambda t: ["validate", str(t.file("s.yaml", "name: [unclosed\n"))], 2, "invalid YAML",
         valid_validate),
    Case("spec-duplicate-key", lambda t: ["validate", str(t.file("s.yaml", "name: a\nname: b\n"))], 2,
         "duplicate key 'name'", valid_validate),
    Case("spec-top-list", lambda t: ["validate", str(t.file("s.yaml", "- a\n- b\n"))], 2, "must be a YAML mapping",
         valid_validate),
    Case("spec-empty", lambda t: ["validate", str(t.file("s.yaml", ""))], 2, "must be a YAML mapping", valid_validate),
    Case("spec-unknown-key", lambda t: ["validate", str(t.spec(_set("sede", 1)))], 2, "unknown key 'sede'",
         valid_validate),
    Case("spec-unknown-check", lambda t: ["validate", str(t.spec(_set("checks.0.check", "performance.clasification")))],
         2, "Did you mean 'performance.classification'?", valid_validate),
    Case("spec-unknown-metric", lambda t: ["validate", str(t.spec(_set("checks.0.thresholds", {"acc": {"min": 0.5}})))],
         2, "unknown metric 'acc'", valid_validate),
    Case("spec-impossible-threshold",
         lambda t: ["validate", str(t.spec(_set("checks.0.thresholds", {"accuracy": {"min": 1.5}})))],
         2, "would never pass", valid_validate),
    Case("spec-unknown-param", lambda t: ["validate", str(t.spec(_set("checks.0.n_bootstrapp", 5)))], 2,
         "unknown parameter 'n_bootstrapp'", valid_validate),
    Case("spec-duplicate-check-id", lambda t: ["validate", str(t.spec(_dup))], 2, "duplicate check id 'heldout'",
         valid_validate),
    Case("spec-device-gpu", lambda t: ["validate", str(t.spec(_set("device", "gpu")))], 2, "device",
         valid_validate),
    Case("spec-device-mps", lambda t: t.run(t.spec(_set("device", "mps"))), 2, "'mps' requested but Apple MPS",
         valid_run),
    Case("cli-device-gpu", lambda t: t.run(t.spec(), "--device", "gpu"), 2, "unknown device 'gpu'",
         lambda t: t.run(t.spec(), "--device", "cpu")),
    Case("cli-device-cuda-9", lambda t: t.run(t.spec(), "--device", "cuda:9"), 2, "cuda:9",
         lambda t: t.run(t.spec(), "--device", "auto")),
    Case("cli-unknown-format", lambda t: t.run(t.spec(), "--format", "docx"), 2, "unknown format(s): docx",
         lambda t: t.run(t.spec(), "--format", "json,html")),
    Case("cli-unknown-command", lambda t: ["audti", "x"], 2, "invalid choice: 'audti'", lambda t: ["checks"]),
    Case("spec-markup-in-name", lambda t: t.run(t.spec(lambda d: (d.update(name="[/bold] audit [red]"),
                                                                   d["data"]["test"].update(path="[/bold].npz")))),
         2, "[/bold].npz", lambda t: t.run(t.spec(_set("name", "[/bold] audit [red]")))),
    # ---- data -----------------------------------------------------------------------------------------
    Case("npz-missing", lambda t: t.data(t.tmp / "nowhere.npz"), 2, "data file not found", valid_run),
    Case("npz-bad-deflate", lambda t: t.data(_corrupt_npz(t)), 2, "cannot read the npz file",
         lambda t: t.data(_valid_npz(t))),
    Case("npz-random-bytes", lambda t: t.data(t.file("r.npz", os.urandom(3000))), 2, "cannot read the npz file",
         lambda t: t.data(_valid_npz(t))),
    Case("npz-no-y", lambda t: t.data(t.npz(x=xy(20, 0)[0])), 2, "has no array 'y'",
         lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(20, 0)[1]))),
    Case("npz-nan", lambda t: t.data(t.npz(x=np.where(np.eye(20, 4) > 0, np.nan, xy(20, 0)[0]), y=xy(20, 0)[1])),
         2, "NaN values in x", lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(20, 0)[1]))),
    Case("npz-inf", lambda t: t.data(t.npz(x=np.where(np.eye(20, 4) > 0, np.inf, xy(20, 0)[0]), y=xy(20, 0)[1])),
         2, "infinite values in x", lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(20, 0)[1]))),
    Case("npz-2d-labels", lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(20, 0)[1][:, None])), 2, "must be 1-D",
         lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(20, 0)[1]))),
    Case("npz-length-mismatch", lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(19, 0)[1])), 2,
         "x has 20 rows but y has 19", lambda t: t.data(t.npz(x=xy(19, 0)[0], y=xy(19, 0)[1]))),
    Case("npz-negative-label", lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(20, 0)[1] - 1)), 2,
         "negative class indices", lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(20, 0)[1]))),
    Case("npz-empty", lambda t: t.data(t.npz(x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))), 2,
         "empty", lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(20, 0)[1]))),
    Case("npz-string-x", lambda t: t.data(t.npz(x=np.array([["a"] * 4] * 20), y=xy(20, 0)[1])), 2,
         "x must be numeric", lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(20, 0)[1]))),
    Case("npz-5d-x", lambda t: t.data(t.npz(x=np.zeros((20, 1, 1, 1, 4), np.float32), y=xy(20, 0)[1])), 2,
         "x has shape", lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(20, 0)[1]))),
    Case("npz-wrong-width", lambda t: t.data(t.npz(x=np.zeros((20, 5), np.float32), y=xy(20, 0)[1])), 2,
         "cannot take dataset 'test'", lambda t: t.data(t.npz(x=xy(20, 0)[0], y=xy(20, 0)[1]))),
    Case("csv-header-only", lambda t: t.data(t.file("h.csv", "a,b,c,d,label\n")), 2, "empty",
         lambda t: t.data(t.ws.test_csv)),
    Case("csv-no-label", lambda t: t.data(t.ws.test_csv, label="target"), 2, "label column 'target' not found",
         lambda t: t.data(t.ws.test_csv, label="label")),
    Case("csv-text-feature", lambda t: t.data(t.file("s.csv", "a,b,c,d,label\n1,2,x,4,0\n1,2,3,4,1\n")), 2,
         "non-numeric feature column(s) 'c'", lambda t: t.data(t.ws.test_csv)),
    Case("csv-missing-values", lambda t: t.data(t.file("s.csv", "a,b,c,d,label\n1,,3,4,0\n1,2,3,4,1\n")), 2,
         "NaN values in column 'b'", lambda t: t.data(t.ws.test_csv)),
    Case("csv-garbage", lambda t: t.data(t.file("g.csv", b"\x00\xff\xfe" * 50)), 2, "", lambda t: t.data(t.ws.test_csv)),
    Case("data-unsupported-type", lambda t: t.data(t.file("d.txt", "1 2 3")), 2, "unsupported data file type '.txt'",
         lambda t: t.data(t.ws.test_csv)),
    Case("png-decompression-bomb", lambda t: t.data(_image_folder(t, png_header_only(40_000, 40_000))), 2, "pixels",
         lambda t: t.data(_image_folder(t))),
    Case("png-over-pixel-limit", _pixels_limit, 2, "pixels", _pixels_twin),
    Case("png-not-an-image", lambda t: t.data(_image_folder(t, b"this is not a png")), 2, "cannot read image",
         lambda t: t.data(_image_folder(t))),
    Case("png-truncated", lambda t: t.data(_image_folder(t, png_header_only(8, 8)[:40])), 2, "cannot read image",
         lambda t: t.data(_image_folder(t))),
    Case("images-no-classes", lambda t: t.data(t.file("flat/a.png", b"").parent), 2, "no class sub-folders",
         lambda t: t.data(_image_folder(t))),
    # ---- the model ------------------------------------------------------------------------------------
    Case("model-missing", lambda t: t.model(t.tmp / "nope.safetensors"), 2, "model file not found", valid_run),
    Case("model-folder", lambda t: t.model(t.tmp), 2, "is a folder, not a model file", valid_run),
    Case("model-unsupported-type", lambda t: t.model(t.file("m.onnx", b"x")), 2, "unsupported model file type",
         valid_run),
    Case("pt-random-bytes", lambda t: t.model(t.file("m.pt", np.random.default_rng(1).bytes(4000))), 2,
         "not a PyTorch state_dict, checkpoint or TorchScript archive", valid_run),
    Case("pt-truncated", lambda t: t.model(t.file("m.pt", _pt_bytes(t)[:300])), 2, "cannot read",
         lambda t: t.model(t.file("ok.pt", _pt_bytes(t)))),
    Case("pt-empty", lambda t: t.model(t.file("m.pt", b"")), 2, "cannot read",
         lambda t: t.model(t.file("ok.pt", _pt_bytes(t)))),
    Case("pt-zeroed", lambda t: t.model(t.file("m.pt", b"\0" * 4096)), 2, "cannot read",
         lambda t: t.model(t.file("ok.pt", _pt_bytes(t)))),
    Case("pt-full-pickle", lambda t: t.model(_pickled_module(t)), 2, "is a full pickle (it holds",
         lambda t: t.model(t.file("ok.pt", _pt_bytes(t)))),
    Case("safetensors-random", lambda t: t.model(t.file("m.safetensors", os.urandom(500))), 2, "cannot read",
         valid_run),
    Case("safetensors-zeroed", lambda t: t.model(t.file("m.safetensors", b"\0" * 500)), 2, "cannot read", valid_run),
    Case("safetensors-no-factory", lambda t: t.model(factory=None), 2, "give `factory", valid_run),
    Case("factory-module-missing", lambda t: t.model(factory="no_such_module_xyz:build"), 2,
         "cannot import factory module", valid_run),
    Case("factory-raises", lambda t: t.model(factory=f"{FACTORY_MODULE}:broken"), 2, "factory exploded", valid_run),
    Case("factory-not-module", lambda t: t.model(factory=f"{FACTORY_MODULE}:not_a_module"), 2,
         "not a torch.nn.Module", valid_run),
    Case("weights-shape-mismatch", lambda t: t.model(factory=f"{FACTORY_MODULE}:wide"), 2, "shape mismatch",
         valid_run),
    Case("weights-missing-keys", lambda t: t.model(t.file("k.safetensors", _st_bytes({"other": torch.zeros(2)}))),
         2, "do not fit the model", valid_run),
    Case("forward-dict-without-logits", lambda t: t.mode("dict_nologits"), 2, "not a tensor of logits",
         lambda t: t.mode("dict")),
    Case("forward-tuple-of-str", lambda t: t.mode("tuple_bad"), 2, "not a tensor of logits",
         lambda t: t.mode("tuple")),
    Case("forward-raises-zerodivision", lambda t: t.mode("zero"), 2, "the model raised ZeroDivisionError",
         lambda t: t.mode("tensor")),
    Case("forward-raises-runtime", lambda t: t.mode("raise_runtime"), 2, "boom in forward",
         lambda t: t.mode("tensor")),
    Case("forward-nan", lambda t: t.mode("nan"), 2, "NaN or infinite outputs", lambda t: t.mode("tensor")),
    Case("forward-three-classes", lambda t: t.mode("three"), 2, "outputs 3 values per sample",
         lambda t: t.mode("tensor")),
    # ---- output folders -------------------------------------------------------------------------------
    Case("out-is-file", lambda t: t.run(t.spec(), out=t.file("out.txt", "x")), 2, "is a file, not a folder",
         valid_run),
    Case("out-readonly", lambda t: t.run(t.spec(), out=t.readonly(t.tmp / "ro") / "out"), 2, "Permission denied",
         valid_run),
    Case("out-holds-other-audit", lambda t: t.run(t.spec(), out=t.old_report(t.tmp / "out")), 2,
         "already holds the audit 'tiny audit' of 2001-01-01", lambda t: t.run(t.spec(), "--force",
                                                                              out=t.old_report(t.tmp / "out"))),
    Case("out-holds-other-files", lambda t: t.run(t.spec(), "--force", out=t.file("mine/notes.txt", "x").parent), 2,
         "holds files that are not part of a report (notes.txt)", valid_run),
    Case("out-is-cwd", lambda t: (t.mp.chdir(t.file("cwd/x", "").parent), t.run(t.spec(), "--force", out=Path(".")))[1],
         2, "current folder", valid_run),
    Case("out-disk-full", _disk_full, 2, "No space left on device", valid_run),
    Case("out-markup-path", _markup_out, 2, "[bold]x[/bold] is a file", valid_run),
    Case("demo-holds-other-audit", lambda t: ["demo", "--out", str(t.old_report(t.tmp / "d")), "-q"], 2,
         "already holds", lambda t: ["render", str(t.ws.results), "--out", str(t.old_report(t.tmp / "d")), "--force",
                                     "-q", "--format", "json"]),
    Case("train-save-readonly", lambda t: ["train", str(_train_spec(t, t.readonly(t.tmp / "ro") / "m.safetensors")),
                                           "-q"], 2, "cannot save the trained model", lambda t: [
        "train", str(_train_spec(t, t.tmp / "models" / "m.safetensors")), "-q"]),
    Case("train-save-is-folder", lambda t: ["train", str(_train_spec(t, t.file("m.safetensors/x", "").parent)), "-q"],
         2, "it is a folder", lambda t: ["train", str(_train_spec(t, t.tmp / "m.safetensors")), "-q"]),
    # ---- results.json: render and diff ----------------------------------------------------------------
    Case("render-missing", lambda t: t.render(t.tmp / "nope.json"), 2, "results file not found", valid_render),
    Case("render-folder", lambda t: t.render(t.tmp), 2, "is a folder", valid_render),
    Case("render-not-utf8", lambda t: t.render(t.results(raw=b'{"schema": "audit-results/1", "name": "\xff"}')), 2,
         "not UTF-8", valid_render),
    Case("render-truncated", lambda t: t.render(t.results(raw=t.ws.results.read_bytes()[:500])), 2, "not valid JSON",
         valid_render),
    Case("render-list-top", lambda t: t.render(t.results(raw=b"[1, 2]")), 2, "top level must be a mapping",
         valid_render),
    Case("render-wrong-schema", lambda t: t.render(t.results(wrong_type("schema", "other/2"))), 2,
         "not an audit results file", valid_render),
    Case("render-checks-mapping", lambda t: t.render(t.results(wrong_type("checks", {"a": 1}))), 2,
         "checks: expected a list, got a mapping", valid_render),
    Case("render-check-not-mapping", lambda t: t.render(t.results(wrong_type("checks.0", "heldout"))), 2,
         "checks[0]: expected a mapping", valid_render),
    Case("render-bad-status", lambda t: t.render(t.results(wrong_type("checks.0.status", "passed"))), 2,
         "checks[0].status: expected one of", valid_render),
    Case("render-metric-string", lambda t: t.render(t.results(wrong_type("checks.0.metrics.accuracy", "high"))), 2,
         "checks[0].metrics.accuracy", valid_render),
    Case("render-ci-length", lambda t: t.render(t.results(wrong_type("checks.0.metrics.accuracy.ci", [0.1]))), 2,
         "checks[0].metrics.accuracy.ci: expected 2 items", valid_render),
    Case("render-threshold-limit", lambda t: t.render(t.results(wrong_type("checks.0.thresholds.0.limit", "0.5"))), 2,
         "checks[0].thresholds[0].limit: expected a number", valid_render),
    Case("render-evidence-list", lambda t: t.render(t.results(wrong_type("checks.0.evidence", {"type": "table"}))), 2,
         "checks[0].evidence: expected a list", valid_render),
    Case("render-provenance-list", lambda t: t.render(t.results(wrong_type("provenance", [1]))), 2,
         "provenance: expected a mapping", valid_render),
    Case("render-verdict-unknown", lambda t: t.render(t.results(wrong_type("verdict", "fine"))), 2,
         "verdict: expected one of", valid_render),
    Case("render-nan-constant", lambda t: t.render(t.results(raw=t.ws.results.read_bytes().replace(
        b'"duration_s": ', b'"duration_s": NaN, "x": ', 1))), 2, "NaN is not a JSON number", valid_render),
    Case("render-default-out-other-audit", lambda t: (t.mp.chdir(t.tmp), t.old_report(t.tmp / "audit-report"),
                                                      ["render", str(t.ws.results), "-q", "--format", "json"])[2],
         2, "audit-report already holds the audit", lambda t: (
             t.mp.chdir(t.tmp), t.old_report(t.tmp / "audit-report", t.ws.results),
             ["render", str(t.ws.results), "-q", "--format", "json"])[2]),
    Case("diff-malformed-new", lambda t: ["diff", str(t.ws.results), str(t.results(wrong_type("checks.0.id", 7)))], 2,
         "checks[0].id: expected a string", valid_diff),
    Case("diff-not-utf8-old", lambda t: ["diff", str(t.results(raw=b"\xff\xfe{}")), str(t.ws.results)], 2,
         "not UTF-8", valid_diff),
    Case("diff-missing", lambda t: ["diff", str(t.ws.results), str(t.tmp / "none.json")], 2, "not found", valid_diff),
    # ---- breaks inside the suite, and Ctrl-C ----------------------------------------------------------
    Case("check-raises", _boom_check, 3, "1 check raised an error: heldout (ZeroDivisionError: planted bug in [/bold]",
         valid_run),
    Case("suite-internal-error", _boom_suite, 3, "unexpected LookupError: planted internal bug", valid_run),
    Case("ctrl-c", _interrupt, 130, "interrupted", valid_run),
]


def _pt_bytes(t: T) -> bytes:
    import io

    from safetensors.torch import load_file

    buf = io.BytesIO()
    torch.save(load_file(str(t.ws.model)), buf)
    return buf.getvalue()


def _st_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def _pickled_module(t: T) -> Path:
    p = t.tmp / "full.pt"
    torch.save(torch.nn.Linear(4, 2), p)
    return p


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def _params() -> list[Any]:
    return [pytest.param(c, id=c.id)
            for c in CASES]


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tempfile, "tempdir", str(tmp_path))  # crash logs of exit-3 cases land here
            code, out = run_cli(case.bad(T(tmp_path / "bad", ws, _mkdir(mp, tmp_path / "bad"))), capsys)
        _check_one_message(case, code, out)
        with pytest.MonkeyPatch.context() as mp:
            twin_code, twin_out = run_cli(case.twin(T(tmp_path / "twin", ws, _mkdir(mp, tmp_path / "twin"))),
                                          capsys)
        assert twin_code in (0, 1, 4), f"the valid twin of {case.id} did not run ({twin_code}): {twin_out}"
        assert twin_code == case.twin_code, twin_out
        assert "Traceback" not in twin_out
    finally:
        while _READONLY:
            os.chmod(_READONLY.pop(), 0o755)


def _mkdir(mp: pytest.MonkeyPatch, folder: Path) -> pytest.MonkeyPatch:
    folder.mkdir(parents=True, exist_ok=True)
    return mp


def _check_one_message(case: Case, code: int, out: str) -> None:
    lines = [line for line in out.splitlines() if line.strip()]
    assert "Traceback" not in out, out
    assert code == case.code, f"{case.id}: exit {code}, expected {case.code}: {out}"
    assert len(lines) == 1, f"{case.id}: expected one line, got {len(lines)}: {out}"
    assert lines[0].startswith("error: ") or (case.code == 130 and lines[0] == "interrupted"), lines[0]
    assert case.message in lines[0], f"{case.id}: {case.message!r} not in {lines[0]!r}"


# ---------------------------------------------------------------------------------------------- subprocess
def _cli(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "audit.cli", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, **kwargs)


def test_ctrl_c_is_130_with_one_line(ws: Workspace, tmp_path: Path) -> None:
    """A real SIGINT in the middle of the model's forward pass."""
    marker = tmp_path / "started"
    d = base_spec(ws)
    d["model"]["factory_kwargs"] = {"mode": "sleep"}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(d))
    env = {"TINY_MARKER": str(marker), "PYTHONPATH": f"{ROOT}{os.pathsep}{ws.root}"}
    proc = _cli("run", str(spec), "--out", str(tmp_path / "out"), "-q", env=env)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted" and out == ""
    assert not (tmp_path / "out").exists(), "nothing half-written"
    # the twin: the same spec with a model that returns
    d["model"]["factory_kwargs"] = {"mode": "tensor"}
    spec.write_text(yaml.safe_dump(d))
    twin = _cli("run", str(spec), "--out", str(tmp_path / "out"), "-q", "--format", "json", env=env)
    assert twin.wait(timeout=120) == 0, twin.communicate()


def test_diff_into_closed_pipe_is_quiet(ws: Workspace, tmp_path: Path) -> None:
    """`audit diff ... | head -1`: the reader goes away; no traceback, no 'Exception ignored'."""
    other = json.loads(ws.results.read_text())
    for i in range(300):  # enough lines that the pipe closes while diff still writes
        other["provenance"].setdefault("versions", {})[f"lib{i}"] = str(i)
    new = tmp_path / "new.json"
    new.write_text(json.dumps(other))
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "audit.cli", "diff", str(ws.results), str(new)], cwd=ROOT,
                            stdout=w, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(w)
    with os.fdopen(r) as reader:
        first = reader.readline()
    _, err = proc.communicate(timeout=120)
    assert first.startswith("old verdict:")
    assert proc.returncode in (0, 141), err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err, err


def test_markup_in_user_text_prints_literally(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rich markup in a spec name, a check id, a dataset name and the output path is shown as
    written (not parsed: `[/bold]` used to crash the console)."""
    d = base_spec(ws)
    d["name"] = "[/bold] [red]release[/]"
    d["data"] = {"[b]test[/b]": {"path": str(ws.test_npz)}}
    d["checks"][0]["data"] = "[b]test[/b]"
    d["checks"][0]["clause"] = "[/] clause"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(d))
    out = tmp_path / "[/bold]out"
    code = main(["run", str(spec), "--out", str(out), "--format", "json"])
    text = capsys.readouterr().err
    assert code == 0, text
    assert "[/bold] [red]release[/]" in text and "[/bold]out" in text and "Traceback" not in text
    # a check error with markup in it, printed by the progress line and the exit-3 line
    from audit.registry import registry

    def boom(self: Any, ctx: Any, params: Any) -> Any:
        raise ValueError("bad [/bold] value [red]")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry.get("performance.classification"), "run", boom)
        code = main(["run", str(spec), "--out", str(out), "--format", "json", "--force"])
    text = capsys.readouterr().err
    assert code == 3 and "Traceback" not in text
    assert "ValueError: bad [/bold] value [red]" in text.splitlines()[1]
    assert text.strip().splitlines()[-1].startswith("error: 1 check raised an error: heldout (ValueError: bad [/bold]")


# ---------------------------------------------------------------------------------------------- tampering
def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


def _swap_type(v: Any) -> Any:
    """A value of another JSON type than `v`."""
    if isinstance(v, dict):
        return [v]
    if isinstance(v, list):
        return {"0": v}
    if isinstance(v, str):
        return 7
    if v is None:
        return {}
    return "x"


def _tampered(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    d = json.loads(json.dumps(doc))
    node = d
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return d


def test_tampered_results_render_or_are_refused(ws: Workspace, tmp_path: Path) -> None:
    """Every field of a real results.json set to another JSON type, or to null: loading it
    is refused with one message naming the field, or the report renders; never an
    exception from inside the renderer. (Chart evidence is left out: a figure that cannot
    be drawn is already shown in its place.)"""
    from audit.errors import AuditInputError
    from audit.results import load_results
    from reports import render_html

    doc = json.loads(ws.results.read_text())
    for c in doc["checks"]:
        c["evidence"] = [e for e in c["evidence"] if e.get("type") != "chart"]
    path = tmp_path / "results.json"
    tried, refused, rendered = 0, 0, []
    for where in list(_paths(doc))[1:]:
        for value in (_swap_type(_get(doc, where)), None):
            path.write_text(json.dumps(_tampered(doc, where, value)))
            tried += 1
            try:
                loaded = load_results(path)
            except AuditInputError as exc:
                refused += 1
                assert "\n" not in str(exc)
                continue
            rendered.append((where, loaded))
    # rendering is the slow part (~0.2 s): a deterministic sample of the accepted documents,
    # denser in the top three levels
    shallow = [r for r in rendered if len(r[0]) <= 3]
    deep = [r for r in rendered if len(r[0]) > 3]
    for where, loaded in shallow[::2] + deep[::max(1, len(deep) // 25)]:
        try:
            render_html(loaded)
        except Exception as exc:  # noqa: BLE001 - the assertion names the field
            raise AssertionError(f"{'.'.join(map(str, where))}: the renderer raised {exc!r}") from exc
    assert tried > 400 and refused > 100, (tried, refused)


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc
