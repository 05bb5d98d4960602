"""Population Based Training's lineage: each trial a row over the steps it trained, and an arrow
at every exploit from the row of the trial it cloned to its own, at the cloned checkpoint's step.
"""

import json
from typing import NamedTuple

import pandas as pd
import plotly.graph_objects as go

from analysis._style import base_layout, color


class LineageInfo(NamedTuple):
    trials: list[str]  # one row each, top to bottom
    spans: pd.DataFrame  # trial_id, first, last: the steps of its evaluations
    exploits: pd.DataFrame  # trial_id, from_trial, step, changed (text "lr_d 1e-4 → 1.2e-4")


def get_lineage_info(trials: pd.DataFrame, metrics: pd.DataFrame) -> LineageInfo | None:
    """The run's exploits (the trials table's `exploits`); None where it has none."""
    if "exploits" not in trials:  # tables written before PBT was
        return None
    per_trial = trials.groupby("trial_id", sort=True)["exploits"].first().fillna("")
    events = [
        {"trial_id": trial_id, "from_trial": event["from_trial"], "step": event["step"],
         "changed": _changes(event["changed"])}
        for trial_id, text in per_trial.items() if text
        for event in json.loads(text)
    ]  # fmt: skip
    if not events:
        return None
    spans = metrics.groupby("trial_id")["step"].agg(first="min", last="max").reset_index()
    return LineageInfo(list(per_trial.index), spans, pd.DataFrame(events))


def _changes(changed: dict) -> str:
    parts = [f"{name} {old:.4g} → {new:.4g}" for name, (old, new) in changed.items()]
    return ", ".join(parts) or "no value changed"


def plot_lineage(info: LineageInfo) -> go.Figure:
    """Grey bars: the steps each trial trained; arrows: its exploits, from the source's row."""
    row = {trial_id: i for i, trial_id in enumerate(info.trials)}
    fig = go.Figure()
    for span in info.spans.itertuples():
        y = row.get(span.trial_id)
        if y is not None:
            fig.add_trace(go.Scatter(x=[span.first, span.last], y=[y, y], mode="lines",
                                     line={"color": "lightgrey", "width": 6},
                                     hoverinfo="skip", showlegend=False))  # fmt: skip
    for i, event in enumerate(info.exploits.itertuples()):
        source, target = row.get(event.from_trial), row[event.trial_id]
        if source is None:
            continue
        fig.add_annotation(x=event.step, y=target, ax=event.step, ay=source, axref="x",
                           ayref="y", showarrow=True, arrowhead=2, arrowwidth=1.5,
                           arrowcolor=color(i), text="")  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=info.exploits["step"],
            y=[row[t] for t in info.exploits["trial_id"]],
            mode="markers",
            marker={"size": 8, "color": "black"},
            text=[
                f"{e.trial_id} cloned {e.from_trial} at step {e.step}<br>{e.changed}"
                for e in info.exploits.itertuples()
            ],
            hovertemplate="%{text}<extra></extra>",
            showlegend=False,
        )
    )
    fig.update_yaxes(tickvals=list(row.values()), ticktext=list(row), title_text="trial",
                     autorange="reversed")  # fmt: skip
    fig.update_xaxes(title_text="step")
    return base_layout(fig, "exploits: each trial's clones of another", 160 + 28 * len(row))
