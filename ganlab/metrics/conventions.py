"""The sample counts published evaluations use, and where a protocol departs from them.

A number measured at other counts is not comparable with a paper's: FID falls with more fakes
and more real images (its bias is ~1/n, `ganlab.metrics.fid_infinity`), the Inception Score
rises with larger splits, and a mode count depends on how many samples could land on a mode.
`departures` lists, in words, every setting of a protocol that is not the papers' one; the
protocol records them (`Protocol.departures`) and the report can show them.

- FID: at least 10,000 fakes and 10,000 real images (Heusel et al. 2017 found FID unreliable
  below 10,000; 50,000 is common since);
- Inception Score: 50,000 samples in 10 splits of 5,000 (Salimans et al. 2016);
- KID: subsets of 1,000 (Bińkowski et al. 2018);
- modes on 2-D mixtures: 2,500 samples (VEEGAN, PacGAN); on Stacked MNIST: 26,000 (PacGAN).
"""

FID_SAMPLES = 10_000
IS_SAMPLES, IS_SPLITS = 50_000, 10
KID_SUBSET = 1_000
MIXTURE_SAMPLES = 2_500
STACKED_SAMPLES = 26_000


def departures(
    *,
    is_2d: bool,
    stacked: bool,
    n_fake: int,
    n_real: int,
    kid_subset: int,
    is_splits: int | None,
) -> tuple[str, ...]:
    """Every setting of a protocol that papers do not use, in words; () where none.
    `is_splits` None: no Inception Score. 2-D data: only the mode count's sample size (FID on
    raw 2-D points has no published convention)."""
    if is_2d:
        return () if n_fake == MIXTURE_SAMPLES else (
            f"modes from {n_fake} samples (VEEGAN/PacGAN: {MIXTURE_SAMPLES})",)  # fmt: skip
    found = []
    if n_fake < FID_SAMPLES:
        found.append(f"FID from {n_fake} fakes (papers: at least {FID_SAMPLES})")
    if n_real < FID_SAMPLES:
        found.append(f"FID against {n_real} real images (papers: at least {FID_SAMPLES})")
    if kid_subset < KID_SUBSET:
        found.append(f"KID subsets of {kid_subset} (Bińkowski et al.: {KID_SUBSET})")
    if is_splits is not None and (n_fake < IS_SAMPLES or is_splits != IS_SPLITS):
        found.append(f"IS from {n_fake} samples in {is_splits} splits (papers: {IS_SAMPLES} "
                     f"in {IS_SPLITS})")  # fmt: skip
    if stacked and n_fake != STACKED_SAMPLES:
        found.append(f"modes from {n_fake} samples (PacGAN Stacked MNIST: {STACKED_SAMPLES})")
    return tuple(found)
