"""The model card (model_card.md): what was trained, on what, how well, and how to use it."""

from __future__ import annotations

from typing import Any


def render_card(metrics: dict[str, Any], top: dict[str, list[str]]) -> str:
    """Markdown model card built from `metrics` (as in metrics.json) and top features."""
    data, rows, nltk = metrics["data"], metrics["rows"], metrics["nltk"]
    lines = [
        "# Model card: text classifier",
        "",
        f"Trained by trainhook's trainer {metrics['trainer_version']}: TF-IDF features (word "
        "n-grams of NLTK-normalised tokens plus character n-grams) and a linear classifier.",
        "",
    ]
    if data["fallback"]:
        lines += [
            "> **WARNING: trained on GENERATED SAMPLE DATA.** No data file was found among "
            f"{', '.join(data['candidates'])}; this model knows nothing about your data.",
            "",
        ]
    if nltk["degraded"]:
        missing = "; ".join(f"{k}: {v}" for k, v in nltk["missing"].items())
        lines += [f"> NLTK data missing, fallbacks used: {missing}", ""]
    lines += [
        "## Data",
        "",
        f"- File: `{data['file']}` (sha256 `{data['sha256'][:16]}…`)",
        f"- Rows read: {rows['read']}, used: {rows['used']}, "
        f"train: {rows['train']}, validation: {rows['validation']}",
        f"- {_shipped(metrics)}",
        f"- Classifier: {_classifier(metrics)}",
    ]
    dropped = ", ".join(f"{k}: {v}" for k, v in sorted(rows["dropped"].items())) or "none"
    lines.append(f"- Rows dropped: {dropped}; sampled out: {rows['sampled_out']}")
    lines += [
        "",
        "## Validation results",
        "",
        f"Stratified hold-out of {rows['validation']} rows "
        f"({metrics['params']['validation_fraction']:.0%}, seed {metrics['params']['seed']}), "
        f"scored by a model fitted on the other {rows['train']} rows only.",
        "",
        f"- Accuracy: {metrics['accuracy']:.4f}",
        f"- Macro-F1: {metrics['macro_f1']:.4f}",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label, m in metrics["per_class"].items():
        lines.append(
            f"| {label} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | "
            f"{m['support']} |"
        )
    cm = metrics["confusion_matrix"]
    lines += ["", "Confusion matrix (rows: true label, columns: predicted):", ""]
    lines.append("| true \\ predicted | " + " | ".join(cm["labels"]) + " |")
    lines.append("|---" * (len(cm["labels"]) + 1) + "|")
    for label, row in zip(cm["labels"], cm["matrix"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    if top:
        lines += ["", "## Strongest features per class", ""]
        for label, names in top.items():
            shown = ", ".join(f"`{n}`" for n in names)
            lines.append(f"- {label}: {shown}")
    lines += [
        "",
        "## Parameters",
        "",
        "```json",
        *_json_lines(metrics["params"]),
        "```",
        "",
        "## Use",
        "",
        "Needs the `trainhook_runtime` package importable (builders ship it beside the model "
        "as `trainhook_runtime/`) and the library versions `model_manifest.json` lists "
        "(scikit-learn with the same major.minor). `load_model` checks them before unpickling:",
        "",
        "```python",
        "from trainhook_runtime import load_model",
        "loaded = load_model('.')  # reads model_manifest.json, then both pickles",
        "loaded.predict(['@airline thanks, great flight!'])",
        "# the contract: loaded.model.predict(loaded.vectorizer.transform(texts)), i.e.",
        "# model.predict(vectorizer.transform(texts)) with model.joblib and vectorizer.joblib",
        "```",
        "",
        "## Limitations",
        "",
        "A bag-of-n-grams model: it sees words and spelling, not meaning. Sarcasm, long-range "
        "negation and topics absent from the training data are handled poorly. Validation "
        "figures come from one hold-out split of the same data and will be optimistic for "
        "data that drifts.",
        "",
        "Library versions: "
        + ", ".join(f"{k} {v}" for k, v in sorted(metrics["versions"].items())),
        "",
    ]
    return "\n".join(lines)


def _shipped(metrics: dict[str, Any]) -> str:
    rows = metrics["rows"]
    if metrics["params"].get("refit") and rows["shipped_model"] != rows["train"]:
        return (
            f"Shipped model: refitted on all {rows['shipped_model']} used rows (train and "
            "validation, `refit = true`) after the validation figures below were taken; "
            "nothing was held out from it"
        )
    return (
        f"Shipped model: the one scored below, fitted on the {rows['shipped_model']} train "
        "rows (`refit = false`)"
    )


_CLASSIFIERS = {
    "linear_svc": "linear SVM, LinearSVC (liblinear)",
    "sgd": "linear SVM (smoothed hinge loss), SGDClassifier on float32 features",
    "logistic_regression": "logistic regression",
}


def _classifier(metrics: dict[str, Any]) -> str:
    name = metrics.get("classifier", metrics["params"]["classifier"])
    text = _CLASSIFIERS.get(name, name)
    if metrics["params"]["classifier"] == "auto":
        text += (
            ' (`classifier = "auto"`: liblinear up to 10 M non-zero features, SGD above, '
            "where liblinear's copy of the matrix would double the memory)"
        )
    return text


def _json_lines(params: dict[str, Any]) -> list[str]:
    import json

    return json.dumps(params, indent=2, sort_keys=True).splitlines()
