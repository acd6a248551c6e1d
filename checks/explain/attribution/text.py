"""explain.attribution on text and token data: Captum's LayerIntegratedGradients on the
model's token-embedding layer (the approach of Captum's BERT tutorials).

* What is explained: text classification, the predicted (or `target`) class of each
  sampled text; token classification, one entity per sampled sentence (the first entity
  the model predicts), through the logit of its tag at the entity's first sub-token.
* Baseline: the same ids with every token that is not a special token ([CLS], [SEP])
  replaced by the pad token; integrated gradients interpolate the embeddings between the
  two (the attention mask stays the input's). A token's attribution is the sum over the
  embedding dimensions. Captum's convergence delta (completeness) is reported.
* deletion_faithfulness: remove the sample's tokens in attribution order (replaced by
  the pad token, which the model masks out) and compare how fast the explained
  probability falls with removal in random orders; per sample the area between the two
  curves, normalised by the starting probability (> 0: better than random). Special
  tokens, and for an entity its own sub-tokens, are never removed.
* randomization_similarity: the model-parameter randomization test (Adebayo et al.,
  2018): layers re-initialised top down, cascading, the same samples explained again;
  Spearman rank correlation over each sample's real tokens.
* `method: shap_text` (text classification with a Hugging Face tokenizer): SHAP's
  Partition explainer over its Text masker, which splits the text with the model's own
  tokenizer, so its values line up with the ids; the same deletion and randomization
  tests apply.
* Evidence: per-token attributions as highlighted text (`tokens` evidence; the report
  colours each token from its score), word pieces merged into words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from audit.check import Flag, Measurement, Metric, text, tokens
from audit.context import Context, logits_to_proba
from audit.dataset import Dataset
from audit.errors import DataError, SkipCheck
from audit.stats import bootstrap_mean, resample_weights
from audit.tokens import spans, tag_names
from checks.explain.attribution import figures
from checks.explain.attribution.agreement import spearman_rows
from checks.explain.attribution.cost import Phases
from checks.explain.attribution.faithfulness import COMPLETENESS_FLAG, DeletionCurves
from checks.explain.attribution.params import AttributionParams
from checks.explain.attribution.randomization import Cascade, cascade_table, run_cascade

SHOWN = 8  # samples drawn as highlighted text


TEXT_METHODS = ("integrated_gradients", "shap_text")


def check_params(params: AttributionParams, ds: Dataset) -> None:
    if params.method not in TEXT_METHODS:
        raise DataError(f"method '{params.method}' is not available for {ds.kind} data: token ids are not "
                        f"differentiable, so text attributions use integrated gradients on the embedding layer "
                        f"(method: integrated_gradients), or for text classification SHAP's text explainer "
                        f"(method: shap_text)")
    if params.method == "shap_text":
        if ds.kind != "text":
            raise DataError("shap_text explains text classification; for token classification use "
                            "integrated_gradients (the attribution of one entity's prediction)")
        if (ds.meta.get("tokenizer") or {}).get("type") != "hf" or ds.meta.get("texts") is None:
            raise DataError(f"shap_text needs the raw texts and a Hugging Face tokenizer (SHAP's Text masker "
                            f"splits the text with it); dataset '{ds.name}' has "
                            f"{'no raw texts' if ds.meta.get('texts') is None else 'a word tokenizer'}: use "
                            f"integrated_gradients")
    if params.compare_with:
        raise DataError(f"compare_with is not available for {ds.kind} data (one method: integrated gradients on "
                        f"the embedding layer)")
    if params.baseline != "zeros":
        raise DataError(f"baseline '{params.baseline}' applies to images and tables; text attributions use the "
                        f"pad-token baseline")


def embedding_layer(module: nn.Module) -> str:
    """The name of the token-embedding layer: the module's `embedding` (our models and the
    Hugging Face wrappers), else `get_input_embeddings()`, else the first nn.Embedding."""
    target = None
    emb = getattr(module, "embedding", None)
    if isinstance(emb, nn.Module):
        target = emb
    elif hasattr(module, "get_input_embeddings"):
        target = module.get_input_embeddings()
    if target is None:
        target = next((m for m in module.modules() if isinstance(m, nn.Embedding)), None)
    for name, m in module.named_modules():
        if m is target and name:
            return name
    raise SkipCheck("the model has no token-embedding layer (nn.Embedding) to attribute to")


class _Explained(nn.Module):
    """(ids, positions) -> (n, K) logits: the sample's, or for token classification the
    sub-token's at `positions`. Wraps the Context's counting wrapper."""

    def __init__(self, counted: nn.Module, per_token: bool) -> None:
        super().__init__()
        self.counted = counted
        self.per_token = per_token

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.counted(ids)
        if self.per_token:
            out = out[torch.arange(out.shape[0], device=out.device), positions]
        if out.ndim == 1:
            out = out[:, None]
        if out.shape[1] == 1:
            out = torch.cat([-out / 2, out / 2], dim=1)
        return out


@dataclass
class Selection:
    rows: np.ndarray        # dataset rows explained
    x: np.ndarray           # (n, L) ids
    target: np.ndarray      # (n,) class / tag explained
    position: np.ndarray    # (n,) sub-token explained (token classification), 0 otherwise
    protect: np.ndarray     # (n, L) positions never removed (specials, padding, the entity itself)
    p0: np.ndarray          # (n,) probability of the target before any removal
    labels: list[str]       # a line per sample for the figure


def _select(ctx: Context, params: AttributionParams, ds: Dataset, key: str) -> Selection:
    pad = int(ds.meta.get("pad_id", (ds.meta.get("tokenizer") or {}).get("pad_id", 0)))
    specials = set(int(v) for v in ds.meta.get("special_ids", [pad])) | {pad}
    rng = ctx.rng(f"{key}:samples")
    if ds.kind == "text":
        n = min(params.n_samples, len(ds))
        rows = np.sort(rng.choice(len(ds), n, replace=False))
        proba = ctx.probabilities(params.data)
        pred = proba.argmax(axis=1)
        if params.target == "predicted":
            target = pred[rows]
        elif params.target == "true":
            target = ds.y[rows]
        else:
            target = np.full(n, int(params.target))
        x = ds.x[rows]
        protect = np.isin(x, list(specials))
        labels = [f"#{i}: explaining '{ds.classes[t]}' (p = {proba[i, t]:.2f}); true '{ds.classes[ds.y[i]]}', "
                  f"predicted '{ds.classes[pred[i]]}'" for i, t in zip(rows, target)]
        return Selection(rows, x, target.astype(np.int64), np.zeros(n, np.int64), protect, proba[rows, target],
                         labels)
    # token classification: one predicted entity per sentence
    pred = ctx.predictions(params.data)
    sub = logits_to_proba(ctx.sub_token_logits(params.data))
    words = ds.meta.get("words") or [[f"w{j}" for j in range(int((r >= 0).sum()))] for r in ds.y]
    candidates = []
    for i in range(len(ds)):
        ents = [e for e in spans(tag_names(pred[i], ds.classes)) if ds.word_starts[i, e[1]] >= 0]
        if ents:
            candidates.append((i, ents[0]))
    if not candidates:
        raise SkipCheck(f"the model predicts no entity in dataset '{ds.name}': there is no entity prediction to "
                        f"explain")
    pick = np.sort(rng.choice(len(candidates), min(params.n_samples, len(candidates)), replace=False))
    rows, target, position, labels = [], [], [], []
    protect = []
    for k in pick:
        i, (typ, a, b) = candidates[int(k)]
        pos = int(ds.word_starts[i, a])
        t = int(pred[i, a]) if params.target == "predicted" else int(ds.y[i, a]) if params.target == "true" \
            else int(params.target)
        rows.append(i)
        target.append(t)
        position.append(pos)
        row = ds.x[i]
        prot = np.isin(row, list(specials))
        nxt = [int(s) for s in ds.word_starts[i] if s > pos]
        prot[pos:(min(nxt) if nxt else pos + 1)] = True  # the explained word's own sub-tokens
        protect.append(prot)
        labels.append(f"#{i}: explaining «{' '.join(words[i][a:b + 1])}» as {ds.classes[t]} "
                      f"(p = {sub[i, pos, t]:.2f}); true {ds.classes[int(ds.y[i, a])]}")
    rows_a = np.asarray(rows)
    pos_a = np.asarray(position, np.int64)
    t_a = np.asarray(target, np.int64)
    return Selection(rows_a, ds.x[rows_a], t_a, pos_a, np.stack(protect), sub[rows_a, pos_a, t_a], labels)


def _attribute(ctx: Context, module: nn.Module, layer: str, sel: Selection, baseline: np.ndarray,
               params: AttributionParams, per_token: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n, L) token attributions and (n,) convergence deltas, in chunks."""
    from captum.attr import LayerIntegratedGradients

    model = _Explained(ctx.counting(module), per_token)
    lig = LayerIntegratedGradients(model, module.get_submodule(layer))
    chunk = params.batch_size or ctx.batch_size
    out, deltas = [], []
    dev = ctx.device
    for s in range(0, len(sel.x), chunk):
        sl = slice(s, s + chunk)
        ids = torch.as_tensor(sel.x[sl], device=dev)
        base = torch.as_tensor(baseline[sl], device=dev)
        pos = torch.as_tensor(sel.position[sl], device=dev)
        attr, delta = lig.attribute(ids, baselines=base, target=torch.as_tensor(sel.target[sl], device=dev),
                                    additional_forward_args=(pos,), n_steps=params.n_steps,
                                    internal_batch_size=ctx.batch_size, return_convergence_delta=True)
        out.append(attr.detach().float().sum(dim=-1).cpu().numpy())
        deltas.append(delta.detach().float().cpu().numpy())
    return np.concatenate(out), np.concatenate(deltas)


def _attribute_shap(ctx: Context, module: nn.Module, ds: Dataset, sel: Selection, params: AttributionParams,
                    key: str) -> np.ndarray:
    """(n, L) SHAP values of the explained class per token: SHAP's Partition explainer over
    its Text masker, which splits each text with the model's own tokenizer (the same
    sub-tokens as the ids, special tokens included); every masked text is re-encoded and
    run through the Context (counted)."""
    import shap

    tok = ctx.tokenizer(params.data)
    texts = [ds.meta["texts"][int(i)] for i in sel.rows]

    def predict(batch: Any) -> np.ndarray:
        x = tok.encode_texts([str(t) for t in batch]).x
        return logits_to_proba(ctx.run_model(module, x, what="SHAP text explainer", precision="float32"))

    seed = int(ctx.rng(f"{key}:shap").integers(2**31))
    explainer = shap.Explainer(predict, shap.maskers.Text(tok.tok), algorithm="partition", seed=seed)
    values = explainer(texts, max_evals=params.n_evals or 200, batch_size=params.batch_size or ctx.batch_size,
                       silent=True)
    out = np.zeros(sel.x.shape, np.float64)
    for i in range(len(texts)):
        v = np.asarray(values.values[i])[:, int(sel.target[i])]
        m = min(len(v), out.shape[1])  # a text longer than the model's length: its first tokens
        out[i, :m] = v[:m]
    return out


def _deletion(ctx: Context, params: AttributionParams, sel: Selection, scores: np.ndarray, pad: int,
              per_token: bool, key: str) -> DeletionCurves:
    n, length = sel.x.shape
    steps = params.deletion_steps
    frac = np.linspace(0.0, 1.0, steps + 1)
    r = ctx.rng(f"{key}:deletion")
    orders = []
    for o in range(1 + params.deletion_random_orders):
        ranks = np.zeros((n, length), np.int64)
        for i in range(n):
            cand = np.flatnonzero(~sel.protect[i])
            order = cand[np.argsort(-scores[i, cand], kind="stable")] if o == 0 else r.permutation(cand)
            rank = np.full(length, length + 1, np.int64)
            rank[order] = np.arange(len(order))
            ranks[i] = rank
        orders.append(ranks)
    m = (~sel.protect).sum(axis=1)  # removable tokens per sample
    counts = np.round(frac[None, :] * m[:, None]).astype(np.int64)  # (n, steps + 1)
    batch = []
    for ranks in orders:
        removed = ranks[:, None, :] < counts[:, 1:, None]  # (n, steps, L)
        batch.append(np.where(removed, pad, sel.x[:, None, :]))
    ids = np.stack(batch).reshape(-1, length)
    logits = ctx.infer(ids, what="Deletion curves")
    if per_token:
        pos = np.broadcast_to(sel.position[None, :, None], (len(orders), n, steps)).ravel()
        logits = logits[np.arange(len(ids)), pos]
    proba = logits_to_proba(logits if logits.shape[1] > 1 else logits)
    t = np.broadcast_to(sel.target[None, :, None], (len(orders), n, steps)).ravel()
    curves = np.ones((len(orders), n, steps + 1))
    curves[:, :, 1:] = proba[np.arange(len(t)), t].reshape(len(orders), n, steps) / np.maximum(sel.p0, 1e-12)[None, :, None]
    area = np.trapezoid(curves, frac, axis=-1)
    per_sample = area[1:].mean(axis=0) - area[0]
    bands = {}
    rb = ctx.rng(f"{key}:ci:deletion-curves")
    for label, c in (("attribution order", curves[0]), ("random order", curves[1:].mean(axis=0))):
        draws = np.concatenate([w @ c / n for w in resample_weights(n, 1000, rb)])
        bands[label] = (c.mean(axis=0), np.quantile(draws, (1 - params.confidence) / 2, axis=0),
                        np.quantile(draws, 1 - (1 - params.confidence) / 2, axis=0))
    return DeletionCurves(per_sample, frac, bands, "tokens", n)


def _masked_spearman(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> np.ndarray:
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        k = keep[i]
        if k.sum() >= 2:
            out[i] = spearman_rows(a[i:i + 1, k], b[i:i + 1, k])[0]
    return out


def _cascade(ctx: Context, params: AttributionParams, sel: Selection, scores: np.ndarray,
             attribute: Any, key: str) -> Cascade:
    keep = ~sel.protect
    ref = np.abs(scores) if params.randomization_abs else scores

    def similarity(model: nn.Module) -> np.ndarray:
        ur = attribute(model)
        return _masked_spearman(ref, np.abs(ur) if params.randomization_abs else ur, keep)

    return run_cascade(ctx, params, key, similarity)


def _highlight_rows(ds: Dataset, sel: Selection, scores: np.ndarray) -> list[dict[str, Any]]:
    vocab = ds.meta.get("id_to_token") or (ds.meta.get("tokenizer") or {}).get("vocab")
    pad = int(ds.meta.get("pad_id", 0))
    specials = set(int(v) for v in ds.meta.get("special_ids", [pad])) | {pad}
    rows = []
    for k in range(min(SHOWN, len(sel.x))):
        words: list[str] = []
        vals: list[float] = []
        focus = None
        for p, (tid, v) in enumerate(zip(sel.x[k], scores[k])):
            tid = int(tid)
            if tid in specials:
                continue
            if ds.kind == "tokens" and p == sel.position[k]:
                focus = len(words)
            piece = str(vocab[tid]) if vocab is not None and 0 <= tid < len(vocab) else str(tid)
            if piece.startswith("##") and words:
                words[-1] += piece[2:]
                vals[-1] += float(v)
            else:
                words.append(piece)
                vals.append(float(v))
        row: dict[str, Any] = {"tokens": words, "scores": [float(f"{v:.4g}") for v in vals], "label": sel.labels[k]}
        if focus is not None:
            row["focus"] = focus
        rows.append(row)
    return rows


def run_text(ctx: Context, params: AttributionParams, ds: Dataset, name: str) -> Measurement:
    check_params(params, ds)
    key = f"{name}:{params.data}"
    per_token = ds.kind == "tokens"
    module = ctx.model.module
    layer = embedding_layer(module)
    sel = _select(ctx, params, ds, key)
    pad = int(ds.meta.get("pad_id", (ds.meta.get("tokenizer") or {}).get("pad_id", 0)))
    specials = np.isin(sel.x, list(set(int(v) for v in ds.meta.get("special_ids", [pad])) | {pad}))
    baseline = np.where(specials, sel.x, pad).astype(np.int64)
    phases = Phases(ctx, len(sel.rows))
    shap_text = params.method == "shap_text"

    def attribute(m: nn.Module) -> np.ndarray:
        if shap_text:
            return _attribute_shap(ctx, m, ds, sel, params, key)
        return _attribute(ctx, m, layer, sel, baseline, params, per_token)[0]

    deltas = None
    if shap_text:
        with phases("attribution: SHAP text explainer (Partition, Text masker)"):
            scores = _attribute_shap(ctx, module, ds, sel, params, key)
    else:
        with phases("attribution: integrated gradients (embedding layer)"):
            scores, deltas = _attribute(ctx, module, layer, sel, baseline, params, per_token)
    if not np.isfinite(scores).all():
        raise DataError(f"integrated gradients produced non-finite attributions on dataset '{ds.name}'")
    scores = np.where(np.isin(sel.x, [pad]) & ~specials, 0.0, scores)
    metrics: dict[str, Metric] = {}
    flags: list[Flag] = []
    with phases("deletion curves"):
        curves = _deletion(ctx, params, sel, scores, pad, per_token, key)
    ok = np.isfinite(curves.per_sample)
    metrics["deletion_faithfulness"] = bootstrap_mean(curves.per_sample[ok], confidence=params.confidence,
                                                      rng=ctx.rng(f"{key}:ci:deletion"))
    randomization: list[dict[str, Any]] = []
    if params.randomization:
        with phases("randomization cascade"):
            c = _cascade(ctx, params, sel, scores, attribute, key)
        if c.metric is not None:
            metrics["randomization_similarity"] = c.metric
            randomization.append(figures.cascade_chart(c))
        randomization.append(cascade_table(c, params))
    if deltas is not None:  # completeness: Captum's convergence delta against the logit difference
        total = np.abs(scores.sum(axis=1)) + np.abs(deltas)
        med = float(np.nanmedian(np.abs(deltas) / np.maximum(total, 1e-12)))
        note = (f"Integrated-gradients completeness (Captum's convergence delta): median |delta| is {100 * med:.2f}% "
                f"of the attribution mass, with n_steps={params.n_steps}.")
        if med > COMPLETENESS_FLAG:
            flags.append(Flag("ig_not_converged", f"median completeness gap {100 * med:.1f}% > "
                                                  f"{100 * COMPLETENESS_FLAG:.0f}%: raise n_steps"))
    else:
        note = (f"SHAP's Partition explainer over its Text masker (the model's tokenizer), "
                f"max_evals={params.n_evals or 200} per text; masked tokens are the tokenizer's mask token.")
    what = ("one predicted entity per sentence: the logit of its tag at its first sub-token"
            if per_token else f"the {params.target} class of each text")
    how = ("SHAP values (Partition explainer, Text masker)" if shap_text else
           f"Integrated gradients on the embedding layer ({layer})")
    base = "" if shap_text else "; baseline: the pad token at every non-special position"
    highlight = tokens(
        "Token attributions", _highlight_rows(ds, sel, scores),
        caption=f"{how} towards {what}{base}. Warm colours push towards the explained "
                f"{'tag' if per_token else 'class'}, cool colours away; scaled per row by its largest |attribution|"
                + (" among the context tokens (the explained entity is outlined: its own attribution is usually the "
                   "largest)" if per_token else "") + "; word pieces merged into words.")
    evidence: list[dict[str, Any]] = [highlight, figures.deletion_chart(curves, params.confidence), *randomization]
    evidence.append(phases.table(f"{len(sel.rows)} samples of '{ds.name}' explained ({what}), on {ctx.device}."))
    evidence.append(text("Notes", note + (" Deletion removes tokens (replaced by the pad token, masked out); special "
                                          "tokens" + (" and the explained word's own sub-tokens" if per_token else "")
                                          + " are never removed.")))
    return Measurement(metrics=metrics, evidence=evidence, flags=flags)

