"""Are the competition's labels left-right symmetric? Decided on data, never assumed.

A model trained without mirrored images (the best trial's) classifies the trials' validation
images, plain and mirrored. It is out of its depth on mirrored images either way (on the demo:
0.853 plain, 0.664 mirrored), but where the mirror keeps the label most of its skill above chance
survives (fashion: 75%), and where the mirror turns the image into no class or another one, most
is lost (scikit-learn's handwritten digits, lenet5_wide / resnet9s: 37% / 32% survive). The
decision adds the mirror to the final fit's augmentation and to its test-time views, or keeps it
out of both. A model that did not train with mirrored images (a trial's, a ``--refit``'s) is
mirrored at test time only where averaging its plain and mirrored predictions measured better on
the validation rows (:func:`pipeline.tune.decide.test_mirror`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.records import FlipDecision

# share of the skill (accuracy above chance) that must survive the mirror
MIN_RETAINED = 0.6
# a model that barely beats chance cannot tell: no mirror then
MIN_SKILL = 0.2


@dataclass(frozen=True)
class FlipTask:
    """Measure the mirror with a saved model on the trials' validation rows (a runner's task)."""

    model_path: str
    search_rows: int | None

    def run(self, env, report=None) -> FlipDecision:
        from pipeline.predict import load_model

        _, _, x_val, y_val = env.splits(self.search_rows).search
        return decide_flip(load_model(self.model_path), x_val, y_val, env.ds.num_classes)


def decide_flip(model, x_val: np.ndarray, y_val: np.ndarray, num_classes: int) -> FlipDecision:
    """Measure the accuracy on mirrored images against the plain one (see above)."""
    from pipeline.predict import view_probas

    plain, mirrored = view_probas(model, x_val, [(0, 0, False), (0, 0, True)])
    acc = float((plain.argmax(1) == y_val).mean())
    acc_m = float((mirrored.argmax(1) == y_val).mean())
    averaged = float(((plain + mirrored).argmax(1) == y_val).mean())
    return FlipDecision(is_invariant(acc, acc_m, num_classes), acc, acc_m, len(y_val), "measured",
                        averaged)  # fmt: skip


def is_invariant(accuracy: float, mirrored: float, num_classes: int) -> bool:
    chance = 1.0 / num_classes
    skill = accuracy - chance
    return skill >= MIN_SKILL and mirrored - chance >= MIN_RETAINED * skill


def forced(flag: str) -> FlipDecision:
    return FlipDecision(flag == "on", float("nan"), float("nan"), 0, f"--flip {flag}")
