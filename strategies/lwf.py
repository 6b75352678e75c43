"""LwF-style distillation: the student matches the teacher's prediction on the current task's noisy batch."""
from cldiff_bench.teacher import LAMBDA_HELP, TeacherStrategy
from cldiff_bench.strategy import Option


class LearningWithoutForgetting(TeacherStrategy):
    name = "lwf"
    description = "LwF distillation: the teacher's prediction on the current noisy batch as extra target"
    extra_inputs = False  # distils on the real batch itself
    options = {"lambda": Option(1.25, LAMBDA_HELP, minimum=0.0)}

    def replay_inputs(self, batch, x_t, t):
        return None  # no extra inputs: distil on the real batch at the same t

    def replay_target(self, x_r, t_r, noise_r):
        return self.teacher_prediction(x_r, t_r)
