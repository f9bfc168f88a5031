"""Graph input/output names shared by export, runtime and Triton configs."""

INPUT_NAME = "input"
LOGITS_NAME = "logits"
FEATURE_NAMES = ["stage1", "stage2", "stage3", "stage4"]


def output_names_for(model) -> list[str]:
    return FEATURE_NAMES if getattr(model, "features_only", False) else [LOGITS_NAME]
