"""How an evaluation describes itself in the result file: its settings, what each metric is, the solver and the
evaluation classifier behind them, and what its FID feature extractor adds."""
from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import torch_fidelity

from ..errors import UserError
from .classifier import CLASSIFIER_CODE_VERSION
from .instruments import EvaluationClassifier
from .metrics import KLD_EPSILON
from .solver import KD_SCALE_T2

if TYPE_CHECKING:
    from ..registry.specs import ExtractorSpec


def describe_evaluation(settings, classifier: EvaluationClassifier, extractor_spec: ExtractorSpec) -> dict:
    s = settings
    out = {"extractor": s.extractor, "torch_fidelity_version": torch_fidelity.__version__,
           "num_generated": s.num_generated, "num_real": "all seen test images" if s.num_real is None
           else s.num_real, "fid_steps": s.fid_steps, "settings": s.to_dict(),
           "fid": "torch-fidelity fid_statistics_to_metric on float64 statistics; generated images rounded "
                  "to uint8, grayscale repeated to 3 channels, against the test images of all seen classes",
           "kld": f"KL(p_true || p_gen) in nats; {KLD_EPSILON:g} added to both histograms, both renormalised",
           "ard": "total variation 0.5 * sum |p_true - p_gen| of the unsmoothed histograms",
           "solver": {"arch": s.solver_arch, "kd_direction": s.kd_direction, "kd_temperature": s.kd_temperature,
                      "kd_scaled_by_t_squared": KD_SCALE_T2, "optimizer": "Adam, fresh per task"}}
    # Where a weights file lives is not part of what was computed; its name (and the version's hash) is.
    for name in ("inception_weights", "classifier_weights", "ruler_file"):
        if getattr(s, name):
            out["settings"][name] = pathlib.Path(getattr(s, name)).name
    out["evaluation_classifier"] = classifier.record()
    out["evaluation_classifier_code_version"] = CLASSIFIER_CODE_VERSION
    extra = extractor_spec.describe(s)
    clash = sorted(set(extra) & set(out))
    if clash:
        raise UserError(f"FID feature extractor {s.extractor!r} describes {', '.join(clash)}, which the suite "
                        f"records itself; name its provenance differently")
    out.update(extra)
    return out
