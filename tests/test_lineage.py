"""The report's PBT lineage: exploits read from the trials table, drawn as arrows."""

import json

import pandas as pd

from analysis import lineage


def tables(exploits: dict[str, str]):
    trials = pd.DataFrame({"trial_id": list(exploits), "exploits": list(exploits.values())})
    metrics = pd.DataFrame(
        {"trial_id": [t for t in exploits for _ in range(3)], "step": [0, 20, 40] * len(exploits)}
    )
    return trials, metrics


def test_a_run_without_exploits_has_no_lineage():
    assert lineage.get_lineage_info(*tables({"a": "", "b": ""})) is None
    assert lineage.get_lineage_info(pd.DataFrame({"trial_id": ["a"]}), pd.DataFrame()) is None


def test_each_exploit_is_an_arrow_from_its_source_at_the_cloned_step():
    event = {"step": 20, "from_trial": "a", "changed": {"lr_d": [1e-4, 1.2e-4]}}
    info = lineage.get_lineage_info(*tables({"a": "", "b": json.dumps([event])}))
    assert info.trials == ["a", "b"]
    assert info.exploits.to_dict("records") == [
        {"trial_id": "b", "from_trial": "a", "step": 20, "changed": "lr_d 0.0001 → 0.00012"}
    ]
    assert info.spans.set_index("trial_id").loc["b"].tolist() == [0, 40]
    fig = lineage.plot_lineage(info)
    (arrow,) = fig.layout.annotations
    assert (arrow.x, arrow.ax, arrow.y, arrow.ay) == (20, 20, 1, 0)  # from a's row to b's
