"""The in-memory shape of a labelled dataset, whatever it was loaded from."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

TEXT, LABEL = "text", "label"


@dataclass
class Splits:
    """Train/validation(/test) frames with columns `text` (str) and `label` (int id into `label_names`).

    Label ids follow the notebook: `label_names` is the sorted set of the training labels.
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame | None
    label_names: list[str]
    notes: list[str] = field(default_factory=list)
    """What loading did that the user should know: rows dropped, a validation split made, ..."""

    @property
    def evaluation_split(self) -> tuple[str, pd.DataFrame]:
        """The split final results are reported on: test if there is one, else validation."""
        return ("test", self.test) if self.test is not None else ("validation", self.validation)
