"""Generative distillation (Masip et al., CoLLAs 2024): generative replay's inputs, the teacher's prediction as
target, which keeps the student from inheriting (and compounding) the sampling error of the teacher's samples."""
from cldiff_bench.replay import LAMBDA_HELP, TEACHER_ETA, TEACHER_STEPS, TeacherStrategy
from cldiff_bench.strategy import Option


class GenerativeDistillation(TeacherStrategy):
    name = "gd"
    description = "generative distillation: teacher samples as inputs, the teacher's noise prediction as target"
    options = {"lambda": Option(0.75, LAMBDA_HELP, minimum=0.0), "teacher_steps": TEACHER_STEPS,
               "teacher_eta": TEACHER_ETA}

    def replay_inputs(self, batch, x_t, t):
        return self.renoised_teacher_samples(batch)

    def replay_target(self, x_r, t_r, noise_r):
        return self.teacher_prediction(x_r, t_r)
