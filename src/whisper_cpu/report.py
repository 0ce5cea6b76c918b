"""Tables derived from the raw result rows: medians, same-run speedups, and the published comparison."""

from pathlib import Path

import pandas as pd

from . import UserError
from .results import RESULTS

PUBLISHED = RESULTS / "published.csv"
KEYS = ["run_id", "model", "method", "device", "beam_size", "audio_id"]


def load_timings(path: Path) -> pd.DataFrame:
    if not Path(path).exists():
        raise UserError(f"no timings at {path}: run `make bench` first")
    return pd.read_csv(path)


def latest_run(timings: pd.DataFrame) -> str:
    return timings["run_id"].iloc[-1]


def summary(timings: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: medians over repeats, speedup against fp32 on the CPU of the same run."""
    table = (
        timings.groupby(KEYS, sort=False)
        .agg(
            system=("system", "first"), audio_s=("audio_s", "first"), repeats=("wall_s", "size"),
            load_s=("load_s", "first"), wall_s=("wall_s", "median"), encoder_s=("encoder_s", "median"),
            decoder_s=("decoder_s", "median"), window_tokens=("window_tokens", "median"),
            contended=("contended", "sum"),
        )
        .reset_index()
    )
    base = table[(table.method == "fp32") & (table.device == "cpu")].set_index(["run_id", "model", "beam_size", "audio_id"])
    fp32 = table.set_index(["run_id", "model", "beam_size", "audio_id"]).index.map(base["wall_s"].to_dict())
    table["speedup_vs_fp32"] = (pd.Series(fp32, index=table.index, dtype=float) / table.wall_s).round(2)
    table["x_realtime"] = (table.audio_s / table.wall_s).round(2)
    table["decoder_ms_per_token"] = (1000 * table.decoder_s / table.window_tokens).round(2)
    return table


def latest_accuracy(path: Path | None) -> pd.DataFrame:
    """The newest accuracy row per model x method x language (empty when nothing was scored yet)."""
    if path is None or not Path(path).exists():
        return pd.DataFrame(columns=["model", "method", "language", "wer", "wer_delta", "ci_low", "ci_high"])
    table = pd.read_csv(path)
    return table.drop_duplicates(["model", "method", "language", "beam_size"], keep="last")


def with_wer(table: pd.DataFrame, accuracy: pd.DataFrame, language: str = "en") -> pd.DataFrame:
    """Add English WER and its delta against fp32 (95% CI) beside each timing row."""
    scores = accuracy[accuracy.language == language].copy()
    for column in ("wer_delta", "ci_low", "ci_high"):
        if column not in scores:
            scores[column] = float("nan")
    scores["wer_delta_ci"] = [
        f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" if pd.notna(d) else "" for d, lo, hi in zip(scores.wer_delta, scores.ci_low, scores.ci_high)
    ]
    scores["wer_pct"] = (100 * scores.wer).round(2)
    keys = ["model", "method"] + (["beam_size"] if "beam_size" in scores and "beam_size" in table else [])
    return table.merge(scores[keys + ["wer_pct", "wer_delta_ci"]], on=keys, how="left")


def published(path: Path = PUBLISHED) -> pd.DataFrame:
    return pd.read_csv(path)


def compare(timings: pd.DataFrame, reference: pd.DataFrame, run_id: str | None = None, accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our qint8 speedup over nn.Linear fp32 (the original's own comparison) beside the published one.

    Published sizes are matched by size: our tiny.en is the English-only tiny, same architecture and cost.
    """
    run_id = run_id or latest_run(timings)
    ours = summary(timings[(timings.run_id == run_id) & (timings.device == "cpu")])
    ours = ours[ours.beam_size == 1] if (ours.beam_size == 1).any() else ours
    ours = with_wer(ours, accuracy if accuracy is not None else latest_accuracy(None))
    cpu = reference[reference.device == "cpu"]
    rows = []
    for model in ours.model.unique():
        size = model.split(".")[0]
        mine = ours[ours.model == model].set_index("method")
        median = mine["wall_s"]
        pub = cpu[cpu.model == size].set_index("dtype")["inference_time_s"]
        audio_s = ours[ours.model == model].audio_s.iloc[0]
        rows.append({
            "model": model, "published_model": size if len(pub) else "",
            "fp32_s": median.get("fp32"), "fp32_nn_s": median.get("fp32-nn"), "qint8_s": median.get("qint8"),
            "qint8_speedup": _ratio(median.get("fp32-nn"), median.get("qint8")),
            "published_fp32_s": pub.get("fp32"), "published_qint8_s": pub.get("qint8"),
            "published_qint8_speedup": _ratio(pub.get("fp32"), pub.get("qint8")),
            "qint8_x_realtime": _ratio(audio_s, median.get("qint8")),
            "published_qint8_x_realtime": _ratio(30.0, pub.get("qint8")),
            "fp32_wer_pct": mine["wer_pct"].get("fp32"), "qint8_wer_pct": mine["wer_pct"].get("qint8"),
            "qint8_wer_delta_ci": mine["wer_delta_ci"].get("qint8"),
        })
    return pd.DataFrame(rows)


def _ratio(a, b):
    return round(a / b, 2) if a is not None and b is not None and pd.notna(a) and pd.notna(b) else None
