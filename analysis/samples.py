"""Samples of the best and worst configurations, from the samples each seed saved at its last
evaluation: 2-D points drawn over the real modes, or image grids as PNG data URIs."""

import base64
import html
import struct
import zlib
from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis._style import base_layout, color, empty_figure
from analysis.aggregate import format_value


class SeedSamples(NamedTuple):
    seed: int
    status: str
    values: np.ndarray  # (N, 2) points or (N, C, H, W) images in [-1, 1]


class SampleSet(NamedTuple):
    config_id: str
    group: str  # "best" or "worst"
    rank: int
    label: str  # the most important parameters' values
    objective: float
    div_rate: float
    dataset: str
    kind: str  # "points" or "images"
    seeds: list[SeedSamples]
    step: int  # the evaluation the samples were drawn at (the trial's last)
    statuses: str  # the configuration's seeds by status, e.g. "3 pruned"

    @property
    def title(self) -> str:
        """`best #1 · step 1,500 · 3 pruned`: what every panel of the set is titled with."""
        return f"{self.group} #{self.rank} · step {self.step:,} · {self.statuses}"


class SamplesInfo(NamedTuple):
    sets: list[SampleSet]  # best first, then worst
    real: dict[str, np.ndarray]  # dataset -> real samples, same layout as the fakes


def sample_kind(shape: tuple[int, ...]) -> str:
    """ "points" for (N, 2), "images" for (N, C, H, W)."""
    if len(shape) == 2 and shape[1] == 2:
        return "points"
    if len(shape) == 4:
        return "images"
    raise ValueError(f"samples of shape {shape} are neither 2-D points nor images")


def _array(row: pd.Series) -> np.ndarray:
    shape = tuple(int(s) for s in row["shape"])
    return np.asarray(row["values"], dtype=np.float32).reshape(shape)


def shown_configs(
    stats: pd.DataFrame, with_samples: set[str], per_group: int = 3
) -> dict[str, pd.DataFrame]:
    """The ranked configurations (`stats` rows, best first) whose samples the report shows: the
    `per_group` best and worst of those in `with_samples`."""
    have = stats[stats.index.isin(with_samples)]
    best = have.head(per_group)
    return {"best": best, "worst": have.iloc[len(best) :].tail(per_group)}


def get_samples_info(
    samples: pd.DataFrame,
    trials: pd.DataFrame,
    stats: pd.DataFrame,
    params: list[str],
    per_group: int = 3,
    max_seeds: int = 4,
) -> SamplesInfo:
    """The `per_group` best and worst ranked configurations that saved samples, with up to
    `max_seeds` seeds each, and the real samples of their datasets."""
    fake = samples[samples["source"] == "fake"]
    status = trials.set_index(["trial_id", "seed"])["status"]
    sets = []
    for group, chosen in shown_configs(stats, set(fake["config_id"]), per_group).items():
        for config_id, row in chosen.iterrows():
            rows = fake[fake["config_id"] == config_id].sort_values(["trial_id", "seed"])
            seeds = [
                SeedSamples(
                    int(r["seed"]), str(status.get((r["trial_id"], r["seed"]), "?")), _array(r)
                )
                for _, r in rows.head(max_seeds).iterrows()
            ]
            sets.append(
                SampleSet(
                    config_id,
                    group,
                    int(row["rank"]),
                    _params_label(row, params),
                    float(row["objective"]),
                    float(row["div_rate"]),
                    str(rows["dataset"].iloc[0]),
                    sample_kind(seeds[0].values.shape),
                    seeds,
                    int(rows["step"].max()),
                    str(row["statuses"]),
                )
            )
    real = {}
    for _, r in samples[samples["source"] == "real"].iterrows():
        real.setdefault(str(r["dataset"]), _array(r))
    return SamplesInfo(sets, real)


def _params_label(row: pd.Series, params: list[str], limit: int = 3) -> str:
    return ", ".join(f"{p}={format_value(row[p])}" for p in params[:limit])


def plot_sample_points(info: SamplesInfo) -> go.Figure:
    """2-D samples: one panel per configuration (best on top, worst below), each seed in its
    own colour over the real data in grey."""
    sets = [s for s in info.sets if s.kind == "points"]
    if not sets:
        return empty_figure("No 2-D samples were saved.")
    best = [s for s in sets if s.group == "best"]
    worst = [s for s in sets if s.group == "worst"]
    cols = max(len(best), len(worst))
    grid = [best, worst] if worst else [best]
    titles = [
        f"{s.title}<br>{s.label}" if s else ""
        for row in grid
        for s in row + [None] * (cols - len(row))
    ]
    fig = make_subplots(
        rows=len(grid),
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.04,
        vertical_spacing=0.14,
    )
    legend_done: set[str] = set()
    for r, row in enumerate(grid, start=1):
        for c, sample_set in enumerate(row, start=1):
            real = info.real.get(sample_set.dataset)
            if real is not None:
                fig.add_trace(
                    _points(
                        real, "real data", "rgba(120,120,120,0.3)", 7, "real" not in legend_done
                    ),
                    row=r,
                    col=c,
                )
                legend_done.add("real")
            for i, seed in enumerate(sample_set.seeds):
                name = f"seed {seed.seed}"
                hover = f"{name}: {seed.status}"
                trace = _points(
                    seed.values, name, color(i), 5, name not in legend_done, name, hover
                )
                fig.add_trace(trace, row=r, col=c)
                legend_done.add(name)
            axis = "" if (r - 1) * cols + c == 1 else str((r - 1) * cols + c)
            fig.update_yaxes(scaleanchor=f"x{axis}", scaleratio=1, row=r, col=c)
    fig.update_annotations(font_size=10)
    return base_layout(fig, "samples at each trial's last evaluation", 330 * len(grid) + 80)


def _points(
    values: np.ndarray,
    name: str,
    marker: str,
    size: int,
    legend: bool,
    group: str = "real",
    hover: str | None = None,
) -> go.Scatter:
    finite = values[np.isfinite(values).all(axis=1)]
    return go.Scatter(
        x=finite[:, 0],
        y=finite[:, 1],
        mode="markers",
        name=name,
        legendgroup=group,
        showlegend=legend,
        marker={"color": marker, "size": size},
        **({"hovertemplate": f"{hover}<extra></extra>"} if hover else {"hoverinfo": "skip"}),
    )


def image_grid(images: np.ndarray, columns: int = 8, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] tiled into one uint8 picture, (H', W') grey or
    (H', W', 3) RGB; a channel count other than 1 or 3 shows the first channel."""
    n, channels, h, w = images.shape
    x = np.nan_to_num(images, nan=-1.0)
    x = np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    x = x.transpose(0, 2, 3, 1) if channels == 3 else x[:, :1].transpose(0, 2, 3, 1)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    depth = x.shape[-1]
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, depth), 255, np.uint8)
    for k in range(n):
        top, left = pad + (k // columns) * (h + pad), pad + (k % columns) * (w + pad)
        canvas[top : top + h, left : left + w] = x[k]
    return canvas[..., 0] if depth == 1 else canvas


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode uint8 (H, W) grey or (H, W, 3) RGB pixels as PNG (zlib, no dependency)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = pixels.shape[:2]
    color_type = 0 if pixels.ndim == 2 else 2
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))  # filter 0 on every row

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def png_data_uri(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def sample_grids_html(info: SamplesInfo, scale: int = 3, max_images: int = 64) -> str:
    """Image samples as HTML: per configuration a row of grids, one per seed, the real data
    first for reference. Pixels are scaled up by the browser without smoothing."""
    sets = [s for s in info.sets if s.kind == "images"]
    if not sets:
        return ""
    parts = []
    for dataset in dict.fromkeys(s.dataset for s in sets):
        if dataset in info.real:
            real = [("real", info.real[dataset][:max_images])]
            parts.append(_grid_row(f"real data ({dataset})", "", real, scale))
    for s in sets:
        title = f"{s.title} · {s.label}"
        detail = (
            f"objective {format_value(s.objective)} at step {s.step:,} · diverged "
            f"{format_value(100 * s.div_rate)} % of seeds · config {s.config_id}"
        )
        grids = [
            (f"seed {x.seed} · {x.status} · step {s.step:,}", x.values[:max_images])
            for x in s.seeds
        ]
        parts.append(_grid_row(title, detail, grids, scale))
    return "\n".join(parts)


def _grid_row(title: str, detail: str, grids: list[tuple[str, np.ndarray]], scale: int) -> str:
    figures = []
    for caption, images in grids:
        pixels = image_grid(images)
        h, w = pixels.shape[:2]
        figures.append(
            f'<figure class="grid"><img class="sample-grid" alt="{html.escape(caption)}" '
            f'width="{w * scale}" height="{h * scale}" src="{png_data_uri(pixels)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return (
        f'<div class="sample-row"><h3>{html.escape(title)}</h3>'
        f'<p class="detail">{html.escape(detail)}</p><div class="grids">{"".join(figures)}'
        "</div></div>"
    )
