"""Published reference rows (FastVID Tables 1–2, AdaTP headline results) matched to our table rows.

These are numbers printed in the papers, copied into ``report/reference/`` with their source. They are returned only
for display in columns labelled "published"; nothing here is ever used as, or mixed into, a measured value.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pandas as pd

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
MODEL_TITLES = {
    "llava_ov_7b": "LLaVA-OneVision-7B",
    "llava_ov_0.5b": "LLaVA-OneVision-0.5B",
    "llava_video_7b": "LLaVA-Video-7B-Qwen2",
}
# Our method names → the names the papers print (the port semantics each of our methods follows).
METHOD_TITLES = {
    "vanilla": "Vanilla",
    "fastv": "FastV",
    "visionzip": "VisionZip*",  # FastVID's post-pooling port, dominant:contextual 54:10
    "visionzip_pre": "VisionZip",  # FastVID's plain port
    "dycoke": "DyCoke",
    "fastvid": "FastVID",
    "prunevid_stage1": "PruneVID*",
    "prunevid": "PruneVID",
    "adatp": "AdaTP",
}
TOKENS_PER_FRAME = {"llava_ov_7b": 196, "llava_ov_0.5b": 196, "llava_video_7b": 169}


@functools.cache
def _fastvid_tables() -> pd.DataFrame:
    frames = []
    for name, table in (
        ("fastvid_table1_llava_ov_7b.csv", "FastVID Table 1"),
        ("fastvid_table2_llava_video_7b.csv", "FastVID Table 2"),
    ):
        df = pd.read_csv(REFERENCE_DIR / name)
        df["table"] = table
        if "flops_pct_derived" not in df:
            vanilla = float(df.loc[df.method == "Vanilla", "tflops_incl_newlines"].iloc[0])
            df["flops_pct_derived"] = 100 * df["tflops_incl_newlines"] / vanilla
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@functools.cache
def _adatp_headline() -> pd.DataFrame:
    return pd.read_csv(REFERENCE_DIR / "adatp_headline.csv")


def printed_retention(model: str, setting: str) -> str:
    """FastVID prints pre-LLM budgets as int(tpf·r)/tpf, e.g. 20% → "19.9%" on OV (39/196), 25% → "24.9%" (42/169)."""
    if "/" in setting or not setting.endswith("%") or setting == "100%":
        return setting
    tpf = TOKENS_PER_FRAME.get(model)
    if tpf is None:
        return setting
    pct = int(tpf * float(setting[:-1]) / 100) / tpf * 100
    return f"{pct:.1f}%".replace(".0%", "%")


def published_row(model: str, method: str, setting: str) -> dict[str, object] | None:
    """The published average (VideoMME/MLVU/LVB), % FLOPs and source for a matching row, or None."""
    title, name = MODEL_TITLES.get(model), METHOD_TITLES.get(method)
    if title is None or name is None:
        return None
    if method == "adatp" or (method == "vanilla" and model == "llava_ov_0.5b"):
        df = _adatp_headline()
        hit = df[(df.model == title) & (df.method == name)]
        if method == "adatp":  # rows are the FLOPs operating points, labelled "27.30% FLOPs"
            match = re.match(r"([0-9.]+)% FLOPs$", setting)
            hit = hit[(hit.flops_pct - float(match.group(1))).abs() < 1e-6] if match else hit.iloc[0:0]
        if len(hit) != 1:
            return None
        row = hit.iloc[0]
        return {
            "avg": float(row.avg),
            "flops_pct": float(row.flops_pct),
            "source": "AdaTP headline (arXiv 2505.20100; values from the project specification)",
        }
    df = _fastvid_tables()
    hit = df[(df.model == title) & (df.method == name) & (df.retention == printed_retention(model, setting))]
    if len(hit) != 1:
        return None
    row = hit.iloc[0]
    return {
        "avg": float(row.avg3_lvb_mlvu_vmme_derived),
        "flops_pct": float(row.flops_pct_derived),
        "source": f"{row.table} (arXiv 2503.11187v2), mean of LVB/MLVU/VideoMME",
    }
