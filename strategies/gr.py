"""Generative replay: teacher samples, re-noised, trained to predict the noise actually added."""
from cldiff_bench.teacher import LAMBDA_HELP, TEACHER_ACCEL_OPTIONS, TEACHER_ETA, TEACHER_STEPS, TeacherStrategy
from cldiff_bench.strategy import Option


class GenerativeReplay(TeacherStrategy):
    name = "gr"
    description = "generative replay: teacher samples as inputs, the added noise as target"
    draws_teacher_samples = True
    teacher_target = False  # the sampled noise is the target
    options = {"lambda": Option(1.0, LAMBDA_HELP, minimum=0.0), "teacher_steps": TEACHER_STEPS,
               "teacher_eta": TEACHER_ETA, **TEACHER_ACCEL_OPTIONS}

    def replay_inputs(self, batch, x_t, t):
        return self.renoised_teacher_samples(batch)

    def replay_target(self, x_r, t_r, noise_r):
        return self.regression_target(self.replay_x0, noise_r, t_r)
