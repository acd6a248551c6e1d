"""example.mean_confidence: the mean top-class probability, as a third party writes a check."""

from __future__ import annotations

import numpy as np

from audit.check import Check, Measurement, Params, chart, higher, table
from audit.registry import register_check
from audit.stats import bootstrap_mean


@register_check
class MeanConfidence(Check):
    name = "example.mean_confidence"
    area = "evaluation"
    summary = "Mean top-class probability of the model on the dataset."
    metrics = {"mean_confidence": higher("Mean of the largest class probability per sample.", bounds=(0.0, 1.0))}
    Params = Params

    def run(self, ctx, params: Params) -> Measurement:
        top = ctx.probabilities(params.data).max(axis=1)
        metric = bootstrap_mean(top, confidence=params.confidence, rng=ctx.rng(f"{self.name}:{params.data}"))
        hist, edges = np.histogram(top, bins=5, range=(0.0, 1.0))
        return Measurement(
            metrics={"mean_confidence": metric},
            evidence=[table("Confidence histogram", ["bin", "count"],
                            [[f"{edges[i]:.1f}-{edges[i + 1]:.1f}", int(hist[i])] for i in range(5)]),
                      chart("bar", "Confidence histogram",
                            {"labels": [f"{edges[i]:.1f}" for i in range(5)], "values": hist.tolist(),
                             "title": "Top-class probability", "ylabel": "samples"})])
