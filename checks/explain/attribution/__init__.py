"""explain.attribution: Captum / SHAP attributions, and tests of the attributions themselves.

Every tool can draw a saliency map; this check also asks whether the map means anything:

* deletion_faithfulness (`faithfulness`): remove features (image patches, tabular feature
  groups) in attribution order, replacing them by the baseline, and compare how fast the
  target-class probability falls with removal in random order. Per sample: the area between
  the two curves, each normalised by the sample's starting probability. Positive = better
  than random. Integrated gradients also get a completeness check (a flag when n_steps is
  too small).
* randomization_similarity (`randomization`): the model-parameter randomization test
  (Adebayo et al., 2018, "Sanity Checks for Saliency Maps"). Layers are re-initialised from
  the top down, cascading; at each step the same samples are explained again and compared
  with the trained model's attributions by Spearman rank correlation. The metric is the
  similarity once every layer is re-initialised; the cascade is evidence. High = the map
  does not depend on what was learned.
* sensitive_attribution_share (`sensitive`; tabular, `sensitive` given): share of the total
  absolute attribution mass on the sensitive features.
* method_agreement (`agreement`; `compare_with` given): Spearman correlation of the two
  methods' global importances (mean |attribution| per feature).

Every metric is a mean of per-sample values, or a function of them, with a weight-bootstrap
CI over the explained samples. Attributions are computed by Captum and SHAP
(`checks.explain.explainers`) on the model as the Context counts it; an explainer function
can be injected (`Attribution(explainer=...)`) to test the tests.

Text and token data (`text`): Captum's LayerIntegratedGradients on the token-embedding
layer, deletion by removing the top tokens, the same randomization test, and per-token
attributions as highlighted text; for token classification, one entity's prediction.

Modules: `check` (the Check: parameters rules and the run), `params`, `inputs` (explained
samples, targets, baselines, explainer set-up), `units` (pixels, feature groups, deletion
patches), `faithfulness`, `randomization`, `sensitive`, `agreement`, `figures` (chart
evidence), `cost` (the cost table).
"""

from checks.explain.attribution.check import Attribution
from checks.explain.attribution.params import AttributionParams

__all__ = ["Attribution", "AttributionParams"]
