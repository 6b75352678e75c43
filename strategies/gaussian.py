"""Gaussian distillation: pure Gaussian noise fed as if it were x_t' at random t'; target = the teacher's output."""
import torch

from cldiff_bench.teacher import LAMBDA_HELP, TeacherStrategy
from cldiff_bench.strategy import PURPOSE_REPLAY_NOISE, Option


class GaussianDistillation(TeacherStrategy):
    name = "gaussian"
    description = "Gaussian distillation: pure noise as inputs, the teacher's prediction as target"
    options = {"lambda": Option(8.0, LAMBDA_HELP, minimum=0.0)}

    def replay_inputs(self, batch, x_t, t):
        g = batch.generator(PURPOSE_REPLAY_NOISE)
        t_r = torch.randint(0, self.core.num_timesteps, (len(x_t),), generator=g).to(x_t.device)
        x_r = torch.randn(x_t.shape, generator=g).to(x_t.device)
        return x_r, t_r, None

    def replay_target(self, x_r, t_r, noise_r):
        return self.teacher_prediction(x_r, t_r)
