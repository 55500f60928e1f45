"""Zero-shot evaluation of MedP-CLIP checkpoints: image and region classification, retrieval (application)."""

from medpclip.evaluate.zero_shot import (
    COLUMNS,
    EVAL_EXEMPT,
    EVAL_OPTIONS,
    TASKS,
    EvalResult,
    MetricRow,
    evaluate,
)

__all__ = ["COLUMNS", "EVAL_EXEMPT", "EVAL_OPTIONS", "TASKS", "EvalResult", "MetricRow", "evaluate"]
