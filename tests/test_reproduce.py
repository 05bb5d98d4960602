"""benchmarks/reproduce.py: grouping seeds by the recipe's factor, the table, the direction."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from ganlab import spec

ROOT = Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location("reproduce", ROOT / "benchmarks" / "reproduce.py")
reproduce = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(reproduce)


def _frame(modes_by_pack, hq=0.9, kl=None):
    kl = kl or {pack: 0.5 / pack for pack in modes_by_pack}  # packing lowers KL by default
    rows = []
    for pack, modes in modes_by_pack.items():
        for seed, m in enumerate(modes):
            dead = m is None
            rows.append({"pack": pack, "seed": seed, "status": "diverged" if dead else "completed",
                         "final_modes": m, "final_hq": None if dead else hq,
                         "final_kl_modes": None if dead else kl[pack]})  # fmt: skip
    return pd.DataFrame(rows)


def test_groups_keep_every_seed_and_count_divergence():
    published = reproduce.PUBLISHED["grid25_packing"]
    rows = reproduce.group_rows(_frame({1: [17, 18, None], 2: [24, 25, 23]}), "pack",
                                published.metrics)  # fmt: skip
    assert rows[0]["seeds"] == 3 and rows[0]["diverged"] == 1
    assert rows[0]["modes"] == [17, 18]
    table = reproduce.format_table(rows, published)
    assert "17.5 ± 0.71, median 17.5 [17 18]" in table
    assert "90 ± 0 %, median 90 [90 90]" in table
    assert "17.3 ± 0.8" in table and "23.8 ± 0.7" in table


@pytest.mark.parametrize(
    "modes,hq,kl,holds",
    [({1: [17, 18], 2: [24, 25], 4: [25, 25]}, 0.9, None, True),
     ({1: [17, 18], 2: [17, 17], 4: [25, 25]}, 0.9, None, False),  # pack 2 no more modes
     ({1: [17, 18], 2: [24, 25], 4: [25, 25]}, 0.5, None, False),  # unpacked hq below 80 %
     ({1: [23, 23, 17], 2: [25, 23, 23], 4: [25, 25, 25]}, 0.9, None, False)],  # median tie
)  # fmt: skip
def test_packing_direction(modes, hq, kl, holds):
    published = reproduce.PUBLISHED["grid25_packing"]
    rows = reproduce.group_rows(_frame(modes, hq, kl), "pack", published.metrics)
    assert reproduce.packing_helps(rows) is holds


def test_grid_points_of_the_shipped_recipe_have_five_seeds_per_pack():
    recipe = spec.load(ROOT / "sweeps" / "grid25_packing.yaml")
    points = reproduce.grid_points(recipe)
    packs = pd.Series([p["pack"] for p in points])
    assert sorted(packs.unique()) == [1, 2, 3, 4]
    assert (packs.value_counts() * len(recipe.seeds) >= 5).all()


def test_best_per_level_keeps_each_levels_best_configuration():
    frame = pd.DataFrame(
        {"config_id": list("aabbc"), "loss": list("xxxxy"), "objective": [3, 3, 5, 5, 1.0]}
    )
    best = reproduce.best_per_level(frame, "loss", "max")
    assert sorted(best["config_id"]) == ["b", "b", "c"]


@pytest.mark.parametrize("loss,searched", [("hinge", ["lr_d", "lr_g"]),
                                           ("wasserstein", ["lr_d", "lr_g", "clip"])])  # fmt: skip
def test_each_loss_gets_a_search_of_its_own(tmp_path, loss, searched):
    """Lucic et al.'s protocol: every loss tuned with the same budget, its own fields only."""
    import yaml

    raw = spec.read_file(ROOT / "sweeps" / "quickstart.yaml")
    variant = reproduce.level_sweep(raw, "loss", loss, 6)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(variant, sort_keys=False))
    recipe = spec.load(path)
    assert [p.name for p in recipe.search] == searched
    assert all(not p.when for p in recipe.search)
    assert recipe.num_samples == 6 and recipe.name == f"quickstart-loss-{loss}"
    assert recipe.trial_config({}).loss == loss
    assert recipe.seeds == spec.load(ROOT / "sweeps" / "quickstart.yaml").seeds


@pytest.mark.parametrize(
    "modes,hq,holds",
    [({"a": [8, 8, 7], "b": [8, 8, 8], "c": [5, 6, 8]}, 0.9, True),  # 2 of 3 losses
     ({"a": [8, 8, 7], "b": [8, 7, 7], "c": [5, 6, 8]}, 0.9, False),  # 1 of 3
     ({"a": [8, 8, 8], "b": [8, 8, 8], "c": [8, 8, 8]}, 0.7, False),  # low quality
     ({"a": [8, 8], "b": [8, 8], "c": [], "d": []}, 0.9, False)],  # half is not most
)  # fmt: skip
def test_most_losses_find_every_mode(modes, hq, holds):
    rows = [{"loss": loss, "modes": m, "hq": [hq] * len(m)} for loss, m in modes.items()]
    assert reproduce.most_find_every_mode(rows) is holds


@pytest.mark.parametrize(
    "fids,holds",
    [({"a": [10, 14], "b": [13, 20], "c": [30, 40]}, True),  # best's worst 14 >= 13
     ({"a": [10, 12], "b": [13, 20], "c": [30, 40]}, False),  # a beats b on every seed
     ({"a": [10, 12], "b": []}, False)],  # b diverged: nothing to overlap
)  # fmt: skip
def test_no_loss_dominates(fids, holds):
    rows = [{"loss": loss, "fid": f} for loss, f in fids.items()]
    assert reproduce.none_dominates(rows) is holds
