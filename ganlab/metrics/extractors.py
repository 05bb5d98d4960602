"""Feature extractors of the evaluation protocol, by name: `raw`, `classifier`, `inception`.

`EXTRACTORS[name](data, device)` returns an `Extractor`: a callable from samples in the model's
range to `Features`, with a `name` and a `weights` hash ("" for `raw`) that go into the protocol,
so numbers from different weights never mix silently, and `has_probs`, whether it also gives
class probabilities.
"""

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from ganlab.data import Data
from ganlab.metrics.classifier import ClassifierExtractor, load_classifier
from ganlab.metrics.features import Features
from ganlab.metrics.inception import InceptionExtractor, weights_path
from ganlab.registry import lookup, register


class Extractor(Protocol):
    name: str
    weights: str
    has_probs: bool  # whether `Features.probs` is given (IS and class modes need it)

    def __call__(self, x: Tensor) -> Features: ...


EXTRACTORS: dict[str, Callable[[Data, str], Extractor]] = {}
"""name -> factory(data, device) -> Extractor."""


def load_extractor(data: Data, device: str = "cpu") -> Extractor:
    """The extractor the protocol prescribes for `data` (`data.extractor`)."""
    return lookup(EXTRACTORS, data.extractor, "feature extractor")(data, device)


class RawExtractor:
    """The samples themselves, flattened, in float64: the features of 2-D data."""

    name = "raw"
    weights = ""
    has_probs = False

    def __call__(self, x: Tensor) -> Features:
        return Features(x.reshape(len(x), -1).to(torch.float64))


@register(EXTRACTORS, "raw")
def raw(data: Data, device: str = "cpu") -> Extractor:
    return RawExtractor()


@register(EXTRACTORS, "classifier")
def classifier(data: Data, device: str = "cpu") -> Extractor:
    return ClassifierExtractor(load_classifier(data), data.stacked, device)


@register(EXTRACTORS, "inception")
def inception(data: Data, device: str = "cpu") -> Extractor:
    return InceptionExtractor(weights_path(), device)
