"""Tokens per second of the audit's text paths against a bare Hugging Face loop over the
same batches, on the `ner-bert` fixture and the generated `ner` test split.

* inference: the Context's counted, batched pass (`ctx.run_model`, the one every check
  shares: ids, the pad-derived attention mask inside the wrapper, one host transfer)
  against `model(input_ids, attention_mask)` under inference mode on the same id batches;
* robustness.text: the whole check (perturbing, re-encoding with the model's tokenizer,
  the counted passes, re-aligning the words, entity counts, bootstrap) against a bare
  loop that makes the same perturbed sentences (same seeded streams), tokenizes them
  (`is_split_into_words`) and runs the model on them in the same batches, reading each
  word's first sub-token; also against the tokenize + forward part alone.

Tokens are real sub-tokens (padding excluded). Prints the median of `--repeats` runs and
the ratio audit / bare (the target is within 1.1x).

    python benchmarks/bench_text.py [--repeats 3] [--n 500] [--batch 256] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch


def _spec(n: int, batch: int, device: str) -> dict:
    return {"name": "bench", "seed": 0, "device": device, "model": {"fixture": "ner-bert", "batch_size": batch},
            "data": {"test": {"fixture": "ner", "split": "test"}},
            "checks": [{"id": "rob", "check": "robustness.text", "n_samples": n}]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("AUDIT_CACHE_DIR", os.path.join(tempfile.gettempdir(), "audit-bench-cache"))

    from audit.perturb import PERTURBATIONS, entity_inventory, perturb_words
    from audit.runner import Runner
    from audit.spec import parse_spec
    from audit.tokens import tag_names

    spec = parse_spec(_spec(args.n, args.batch, args.device))
    runner = Runner(spec)
    runner.prepare()
    ctx = runner.ctx
    ds = ctx.dataset("test")
    module = ctx.model.module  # the HFTokenClassifier wrapper
    hf = module.model
    pad = module.pad_token_id
    dev = ctx.device
    x = ds.x
    n_tokens = int((x != pad).sum())
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def audit_inference() -> None:
        ctx.run_model(None, x, batch_size=args.batch)

    def bare_inference() -> None:
        outs = []
        with torch.inference_mode():
            for s in range(0, len(x), args.batch):
                ids = torch.as_tensor(x[s:s + args.batch], device=dev)
                outs.append(hf(input_ids=ids, attention_mask=(ids != pad).long()).logits)
            torch.cat(outs).cpu()

    def timed(fn) -> float:
        times = []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    audit_inference()
    bare_inference()  # warm-up
    t_a, t_b = timed(audit_inference), timed(bare_inference)
    print(f"inference over {len(x)} sentences, {n_tokens} sub-tokens, batch {args.batch}, {dev}, "
          f"{torch.get_num_threads()} threads")
    print(f"  audit (ctx.run_model)   {n_tokens / t_a:>10,.0f} tokens/s  ({t_a:.3f} s)")
    print(f"  bare Hugging Face loop  {n_tokens / t_b:>10,.0f} tokens/s  ({t_b:.3f} s)")
    print(f"  ratio audit / bare      {t_a / t_b:.3f}x")

    # ---- robustness.text ----------------------------------------------------------------------
    entry = spec.checks[0]
    from checks.robustness.text import TextRobustness

    params = entry.typed_params
    names = [p for p in PERTURBATIONS if p != "whitespace"]
    key = f"robustness.text:{params.data}"
    n = min(params.n_samples, len(ds))
    idx = np.sort(ctx.rng(f"{key}:samples").choice(len(ds), n, replace=False))
    words = [list(ds.meta["words"][i]) for i in idx]
    gold = [tag_names(ds.y[i], ds.classes) for i in idx]
    inventory = entity_inventory(ds.meta["words"], [tag_names(r, ds.classes) for r in ds.y])
    perturbed = {}
    for name in names:  # the same perturbed sentences the check makes (same seeded streams)
        rng = ctx.rng(f"{key}:{name}")
        edits = [perturb_words(name, w, g, rng, params.rate, inventory) for w, g in zip(words, gold)]
        perturbed[name] = [e.words for e in edits if e is not None]
    names = [name for name in names if perturbed[name]]  # perturbations that changed some sentence
    tok = ctx.tokenizer("test").tok
    lim = int(ctx.tokenizer("test").to_json()["max_len"])
    rob_tokens = sum(len(r) for name in names
                     for r in tok(perturbed[name], is_split_into_words=True, truncation=True,
                                  max_length=lim)["input_ids"])

    def audit_robustness() -> None:
        ctx._memo.pop(("tokenizer", "test"), None)  # nothing cached between runs but the clean pass
        TextRobustness().run(ctx, params)

    def make_perturbed() -> dict[str, list[list[str]]]:
        out = {}
        for name in names:
            rng = ctx.rng(f"{key}:{name}")
            edits = [perturb_words(name, w, g, rng, params.rate, inventory) for w, g in zip(words, gold)]
            out[name] = [e.words for e in edits if e is not None]
        return out

    def bare_robustness(generate: bool = True) -> None:
        sentences = make_perturbed() if generate else perturbed
        with torch.inference_mode():
            for name in names:
                sents = sentences[name]
                for s in range(0, len(sents), args.batch):
                    batch = sents[s:s + args.batch]
                    enc = tok(batch, is_split_into_words=True, truncation=True, max_length=lim, padding=True,
                              return_tensors="pt")
                    logits = hf(input_ids=enc["input_ids"].to(dev),
                                attention_mask=enc["attention_mask"].to(dev)).logits.argmax(-1).cpu()
                    for k in range(len(batch)):  # each word's first sub-token
                        seen = set()
                        for pos, w in enumerate(enc.word_ids(k)):
                            if w is not None and w not in seen:
                                seen.add(w)
                                int(logits[k, pos])

    audit_robustness()
    bare_robustness()
    t_ra, t_rb = timed(audit_robustness), timed(bare_robustness)
    t_rb0 = timed(lambda: bare_robustness(generate=False))
    print(f"robustness.text: {n} sentences x {len(names)} perturbations, {rob_tokens} perturbed sub-tokens")
    print(f"  audit (the check)       {rob_tokens / t_ra:>10,.0f} tokens/s  ({t_ra:.3f} s)")
    print(f"  bare loop (perturb + tokenize + forward)  {rob_tokens / t_rb:>10,.0f} tokens/s  ({t_rb:.3f} s)")
    print(f"  bare loop (tokenize + forward only)       {rob_tokens / t_rb0:>10,.0f} tokens/s  ({t_rb0:.3f} s)")
    print(f"  ratio audit / bare      {t_ra / t_rb:.3f}x  (vs tokenize + forward only: {t_ra / t_rb0:.3f}x)")


if __name__ == "__main__":
    main()
