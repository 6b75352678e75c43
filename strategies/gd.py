"""Generative distillation (Masip et al., CoLLAs 2024): generative replay's inputs, the teacher's prediction as
target, which keeps the student from inheriting (and compounding) the sampling error of the teacher's samples."""
from cldiff_bench.teacher import LAMBDA_HELP
from cldiff_bench.strategy import Option

from .gr import GenerativeReplay


class GenerativeDistillation(GenerativeReplay):
    """Exactly `gr` but for the target of the replayed inputs (and the study's lambda)."""
    name = "gd"
    description = "generative distillation: teacher samples as inputs, the teacher's noise prediction as target"
    teacher_target = True
    options = {**GenerativeReplay.options, "lambda": Option(0.75, LAMBDA_HELP, minimum=0.0)}

    def replay_target(self, x_r, t_r, noise_r):
        return self.teacher_prediction(x_r, t_r)
