"""Parameters of explain.attribution (validated at spec load)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from audit.check import Params

Method = Literal["integrated_gradients", "saliency", "deeplift", "gradient_shap", "occlusion",
                 "shap_gradient", "shap_deep", "shap_kernel", "shap_permutation",
                 # text classification with a Hugging Face tokenizer: SHAP's Partition explainer
                 # over its Text masker (checks.explain.attribution.text)
                 "shap_text"]


class AttributionParams(Params):
    method: Method = "integrated_gradients"
    n_samples: int = Field(64, ge=2, le=100_000, description="explained samples (seeded random subset)")
    baseline: Literal["zeros", "mean", "blurred"] = "zeros"
    target: Literal["predicted", "true"] | int = "predicted"
    compare_with: Method | None = None
    sensitive: list[str] = Field(default_factory=list)
    batch_size: int | None = Field(None, ge=1, description="explained samples per chunk (default: model batch size)")
    n_steps: int = Field(32, ge=2, le=4096, description="IG steps; GradientSHAP / SHAP Gradient samples")
    n_background: int = Field(20, ge=1, le=2000, description="background rows (k-means centroids for Kernel/Permutation)")
    n_evals: int | None = Field(None, ge=8, description="model evaluations per sample (Kernel/Permutation SHAP)")
    occlusion_window: int | None = Field(None, ge=1, description="image occlusion patch side")
    blur_sigma: float | None = Field(None, gt=0, description="Gaussian sigma of the blurred baseline (pixels)")
    deletion_steps: int = Field(16, ge=2, le=512)
    deletion_patch: int | None = Field(None, ge=1, description="image patch side removed per deletion unit")
    deletion_random_orders: int = Field(2, ge=1, le=64)
    randomization: bool = True
    randomization_steps: int = Field(4, ge=1, le=256, description="cascade points evaluated (top layer ... all layers)")
    randomization_abs: bool = Field(False, description="rank |attribution| instead of signed attribution")
    implementation: Literal["fast", "library"] = Field(
        "fast", description="fast: integrated_gradients and shap_gradient batched in plain torch (the same "
                            "algorithm and points as Captum / SHAP, held equal to them); "
                            "library: call Captum / SHAP")

    @field_validator("sensitive", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v
