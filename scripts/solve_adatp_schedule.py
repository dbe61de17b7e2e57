"""Solve AdaTP's schedule for a target % of vanilla FLOPs, from the full-size model configs (docs/flops.md §1, §5).

AdaTP's token counts per layer are fixed by its setting (``AdaTP.expected_video_tokens``), so its paper-convention
FLOPs are known before any run. For a stage structure (``--prune-layers``) and a nominal progressive fraction ``--p``,
this finds the ``retention`` whose FLOPs round to the target at 2 decimals (FLOPs grow monotonically with retention, so
a bisection over the final token count), trying p on a 0.01 grid around the nominal value when no retention lands
exactly (one token more or less can step over a 0.01% window). It prints the schedule and the preset YAML.

    python scripts/solve_adatp_schedule.py --published                 # the three published AdaTP points
    python scripts/solve_adatp_schedule.py --model llava_ov_7b --target 27.30 --prune-layers 0 2 --p 0.5

Published targets (AdaTP arXiv 2505.20100 headline results, report/reference/adatp_headline.csv): 27.30% and 36.63%
of vanilla FLOPs on LLaVA-OneVision-7B, 26.43% on LLaVA-OneVision-0.5B. They are targets, not results.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass

from adatp_bench.core.layout import VideoLayout
from adatp_bench.flops import paper_tflops
from adatp_bench.models.full_size import load_full_size_config, video_path
from adatp_bench.pruning.adatp import AdaTP

#: (preset name, full-size model, target % of vanilla FLOPs) — AdaTP headline results (report/reference/).
PUBLISHED: tuple[tuple[str, str, float], ...] = (
    ("adatp_ov7b_f27", "llava_ov_7b", 27.30),
    ("adatp_ov7b_f36", "llava_ov_7b", 36.63),
    ("adatp_ov05b_f26", "llava_ov_0.5b", 26.43),
)
RETENTION_DECIMALS = 6  # 1/6272 ≈ 1.6e-4: six decimals pin the token count
P_SEARCH = 10  # try p ± 0.01 … ± 0.10 around the nominal value


def full_size_layout(model: str) -> VideoLayout:
    """The unpruned video layout of a full-size model (32×196 + 1 newline for OV; 64×13×14 for LLaVA-Video)."""
    vp = video_path(model)
    newline = "per_video" if vp.newline_layout == "one_token" else "per_row"
    side = vp.pooled_grid
    video_len = VideoLayout(0, vp.frames, side, side, newline, 0).video_len
    return VideoLayout(0, vp.frames, side, side, newline, seq_len=video_len)


def paper_tokens_per_layer(method: AdaTP, model: str) -> list[int]:
    """Video tokens per decoder layer in the paper convention: LLaVA-OV's single trailing newline is excluded, the
    per-row newlines of LLaVA-Video are included (docs/flops.md §3)."""
    layout = full_size_layout(model)
    num_layers = load_full_size_config(model).text_config.num_hidden_layers
    counts = method.expected_video_tokens(layout, num_layers)
    return [n - 1 for n in counts] if layout.newline_layout == "per_video" else counts


def flops_percent(method: AdaTP, model: str) -> float:
    """Paper-convention TFLOPs of ``method`` as % of the same model's vanilla TFLOPs."""
    cfg = load_full_size_config(model)
    vanilla = paper_tokens_per_layer(AdaTP(retention=1.0), model)
    return 100 * paper_tflops(cfg, paper_tokens_per_layer(method, model)) / paper_tflops(cfg, vanilla)


@dataclass(frozen=True)
class Solution:
    model: str
    target: float
    method: AdaTP
    percent: float

    def describe(self) -> str:
        cfg = load_full_size_config(self.model)
        counts = paper_tokens_per_layer(self.method, self.model)
        runs = " + ".join(f"{len(list(g))}×{n}" for n, g in itertools.groupby(counts))
        n = full_size_layout(self.model).num_grid_tokens
        return "\n".join(
            [
                f"model {self.model}: target {self.target:.2f}% of vanilla FLOPs",
                f"  retention={self.method.retention}  p={self.method.p}  "
                f"prune_layers={list(self.method.prune_layers)}",
                f"  stage budgets (grid tokens of {n}): {self.method.stage_budgets(n)}",
                f"  paper video tokens per layer: {runs}",
                f"  {paper_tflops(cfg, counts):.4f} TFLOPs = {self.percent:.4f}% of vanilla → {self.percent:.2f}%",
            ]
        )

    def yaml(self, name: str) -> str:
        return (
            f"# AdaTP at {self.target:.2f}% of vanilla FLOPs on {self.model}: a published operating point (AdaTP, "
            "arXiv 2505.20100;\n# report/reference/adatp_headline.csv), a target, not a result. Schedule solved by "
            "scripts/solve_adatp_schedule.py;\n"
            f"# docs/flops.md convention: {self.percent:.4f}% of vanilla. Every other key comes from adatp.yaml.\n"
            "defaults:\n  - adatp\n  - _self_\n\n"
            f"retention: {self.method.retention}\np: {self.method.p}\nprune_layers: {list(self.method.prune_layers)}\n"
        )


def _retention(final_tokens: int, n: int) -> float:
    return round(final_tokens / n, RETENTION_DECIMALS)


def _hit(model: str, target: float, prune_layers: list[int], p: float) -> tuple[float, AdaTP] | None:
    """The final token count closest to ``target`` for this p, if one rounds to it: (|error|, method)."""
    n = full_size_layout(model).num_grid_tokens

    def method(final: int) -> AdaTP:
        return AdaTP(retention=_retention(final, n), p=p, prune_layers=tuple(prune_layers))

    lo, hi = 1, n  # bisection: the smallest final count whose FLOPs reach the lower edge of the 0.01% window
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if flops_percent(method(mid), model) < target - 0.005 else (lo, mid)
    hits = []
    for final in range(max(1, lo - 2), min(n, lo + 3)):
        pct = flops_percent(method(final), model)
        if round(pct, 2) == round(target, 2):
            hits.append((abs(pct - target), final))
    return (min(hits)[0], method(min(hits)[1])) if hits else None


def solve(model: str, target: float, prune_layers: list[int], p: float = 0.5) -> Solution:
    """The retention whose FLOPs round to ``target``, with p as close to the nominal value as possible (at equal
    distance, the p whose FLOPs are closest to the target)."""
    for step in range(P_SEARCH + 1):
        tries = {round(p - step / 100, 2), round(p + step / 100, 2)}
        hits = [hit for q in sorted(tries) if 0 < q <= 1 and (hit := _hit(model, target, prune_layers, q))]
        if hits:
            method = min(hits, key=lambda h: h[0])[1]
            return Solution(model, target, method, flops_percent(method, model))
    raise SystemExit(
        f"no schedule with prune_layers={prune_layers} and p within ±{P_SEARCH / 100} of {p} hits {target:.2f}% "
        f"on {model}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llava_ov_7b", choices=["llava_ov_7b", "llava_ov_0.5b", "llava_video_7b"])
    parser.add_argument("--target", type=float, help="%% of vanilla FLOPs, e.g. 27.30")
    parser.add_argument("--prune-layers", type=int, nargs="+", default=list(AdaTP().prune_layers))
    parser.add_argument("--p", type=float, default=AdaTP().p, help="nominal progressive fraction")
    parser.add_argument("--published", action="store_true", help="solve the three published AdaTP points")
    args = parser.parse_args()
    if args.published:
        for name, model, target in PUBLISHED:
            sol = solve(model, target, args.prune_layers, args.p)
            print(sol.describe())
            print(f"--- conf/method/{name}.yaml ---\n{sol.yaml(name)}")
        return
    if args.target is None:
        parser.error("give --target or --published")
    sol = solve(args.model, args.target, args.prune_layers, args.p)
    print(sol.describe())
    print(f"--- YAML ---\n{sol.yaml('adatp_custom')}")


if __name__ == "__main__":
    main()
