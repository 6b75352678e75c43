"""The diffusion core a strategy receives: the student U-Net, the schedule, samplers, teachers and the cost meter.

Strategies never build networks or samplers themselves; they ask the core, so every strategy trains and samples
through exactly the same code, and every network evaluation is counted.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .cost import CostMeter
from .diffusion import NoiseSchedule, UNet, UNetConfig
from .diffusion.samplers import DEFAULT_SAMPLER, Sampler, SamplerSpec, get_sampler
from .diffusion.seeding import derive_seed
from .optimisation import WeightAverage
from .preparation import CompiledForwards, prepare_for_role

SEED_PURPOSE_INIT = 0x1A17
PRECISIONS = ("fp32", "bf16")
CHANNELS_LAST = ("off", "inference", "all")


@dataclass(frozen=True)
class SpeedOptions:
    """How the U-Nets run; none of these changes what is computed beyond floating-point rounding.

    channels_last: the memory format of the U-Nets' weights (convolutions then produce NHWC activations).
        "inference" (default) uses it for sampling (teachers, evaluation), where oneDNN's bfloat16 convolutions
        are about 1.25x faster with it on a CPU; training stays NCHW, where NHWC measured slower on a CPU.
    compile: torch.compile the U-Nets; on a GPU with mode "reduce-overhead", which replays CUDA graphs for the
        fixed-shape sampling and training steps. Off by default: compiling takes minutes on a CPU.
    threads: how many threads this run's tensor operations use. Runs side by side on one machine should split
        its cores (e.g. two runs with --threads 1 on two cores): threads that outnumber the cores spin against
        each other and every run slows down several times.
    replay_ahead: teacher strategies draw the replay samples of this many iterations in one teacher batch and use
        them in turn. Every sample is still determined by its own iteration's seeds and used once, so only the
        batching changes. 1 (default) draws per iteration: on a CPU a larger batch is not reliably faster per
        image; a GPU underused at the training batch size may gain (`benchmarks/perf.py` measures both sizes).
    """
    channels_last: str = "inference"
    compile: bool = False
    replay_ahead: int = 1
    threads: int | None = None  # torch's intra-op threads; None: torch's default (one per core)

    def __post_init__(self):
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            from .errors import UserError
            raise UserError(f"--threads must be a whole number >= 1, got {self.threads!r}")
        if self.channels_last not in CHANNELS_LAST:
            from .errors import unknown_name
            raise unknown_name("channels-last mode", self.channels_last, CHANNELS_LAST)
        if not isinstance(self.replay_ahead, int) or self.replay_ahead < 1:
            from .errors import UserError
            raise UserError(f"--replay-ahead must be a whole number >= 1, got {self.replay_ahead!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def host_to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`x` (on the CPU) on `device`. To a GPU through pinned memory and without blocking: a plain copy from pageable
    memory first waits for everything queued on the GPU, which would stall the host once per copy."""
    device = torch.device(device)
    if device.type != "cuda" or x.device.type != "cpu":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def is_channels_last(model: nn.Module) -> bool:
    # Only a kernel with several input channels and taps tells the two layouts apart.
    weight = next((m.weight for m in model.modules()
                   if isinstance(m, nn.Conv2d) and m.in_channels > 1 and m.weight[0, 0].numel() > 1), None)
    return weight is not None and not weight.is_contiguous()


def cpu_supports_bf16() -> bool:
    """Native bfloat16 dot products (AVX512-BF16 or AMX); elsewhere bfloat16 is emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision asked for (a profile's or --precision); never picked by the hardware, so one command gives the
    same kind of numbers on every machine. bf16 where the hardware only emulates it is allowed, but slow."""
    if requested not in PRECISIONS:
        from .errors import UserError
        raise UserError(f"--precision must be fp32 or bf16, got {requested!r}")
    if requested == "bf16":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()
        if not native:
            import sys
            print(f"cldiff-bench: warning: bf16 was asked for, but this {device.type.upper()} has no native bfloat16 "
                  f"arithmetic: it is emulated, and slower than fp32", file=sys.stderr)
    return requested


class DiffusionCore:
    def __init__(self, config: UNetConfig, image_shape: tuple[int, int, int], device: torch.device,
                 meter: CostMeter | None = None, init_seed: int = 0, precision: str = "fp32",
                 speed: SpeedOptions | None = None, ema_decay: float | None = None,
                 samplers: dict[str, SamplerSpec] | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.speed = speed or SpeedOptions()
        self.config = config
        self.image_shape = tuple(image_shape)
        self.device = torch.device(device)
        self.meter = meter or CostMeter(self.device)
        self._compiled = CompiledForwards(self.device)  # the U-Nets' forwards, one per role, where speed.compile asks
        # Initialise from a keyed generator so the weights depend on the seed alone, not on earlier global draws.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(init_seed, SEED_PURPOSE_INIT))
            self.model = UNet(config)
        self.model.to(self.device)
        self._prepare(self.model, training=True)
        self.meter.watch(self.model, "student")
        # Sampling weights: an exponential moving average of the trained ones where the budget asks for it. The
        # teacher, the saved task models and the metrics all use them; training continues from the raw weights.
        self.ema_decay = ema_decay
        self.ema: WeightAverage | None = None
        if ema_decay is not None:
            self.reset_ema()
        self.schedule = NoiseSchedule(device=self.device)
        # The samplers `generate` may be asked for by name (default: the built-in ones; a registry's with plugins').
        self.samplers = samplers
        self._samplers: dict[tuple[str, int, float], Sampler] = {}

    def _prepare(self, model: nn.Module, training: bool) -> None:
        prepare_for_role(model, training, self.speed, self.precision, self._compiled)

    # --- sampling weights ----------------------------------------------------------------------------------------
    def reset_ema(self) -> None:
        """Start the average afresh from the current weights (at the start, and after loading other weights)."""
        if self.ema_decay is None:
            return
        self.ema = WeightAverage(self.model, UNet(self.config).to(self.device), self.ema_decay)

    def sampling_state_dict(self) -> dict:
        """The weights that are sampled, kept as a task's model and copied into teachers."""
        return (self.ema.weights if self.ema is not None else self.model).state_dict()

    def ema_state(self) -> dict | None:
        return None if self.ema is None else self.ema.state_dict()

    def load_ema_state(self, state: dict | None) -> None:
        if self.ema is None:
            return
        if state is None:
            raise ValueError("this run averages its weights (EMA) but the checkpoint holds no average")
        self.ema.load_state_dict(state)

    def autocast(self):
        """The U-Net's mixed precision: bfloat16 matmuls and convolutions under autocast; the schedule, the sampler
        arithmetic, the losses and the optimizer stay in float32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def sampler(self, steps: int, eta: float = 0.0, name: str = DEFAULT_SAMPLER) -> Sampler:
        """The sampler registered as `name` (DDIM by default), built once per (name, steps, eta) and reused: their
        grids live on the device."""
        key = (name, int(steps), float(eta))
        if key not in self._samplers:
            self._samplers[key] = get_sampler(name, self.samplers).build(self.schedule, int(steps), float(eta))
        return self._samplers[key]

    def make_teacher(self, state_dict: dict | None = None) -> nn.Module:
        """A frozen copy of the current sampling weights (or of `state_dict`): eval mode, no gradients, its forwards
        counted as teacher NFEs. Call it under `autocast()`: with bf16 precision its weights are bfloat16."""
        return self.frozen_copy(state_dict, role="teacher")

    def frozen_copy(self, state_dict: dict | None = None, role: str | None = "teacher",
                    config: UNetConfig | None = None) -> nn.Module:
        """The sampling weights (or `state_dict`) frozen for sampling, in the inference memory format and weight
        precision; its forwards are counted as `role` (as evaluation NFEs inside the evaluation phase; None: not
        counted). `config`: of another model than the core's own of the same architecture (a distilled teacher's
        prediction type)."""
        copy = UNet(config or self.config).to(self.device)
        copy.load_state_dict(state_dict if state_dict is not None else self.sampling_state_dict())
        copy.eval().requires_grad_(False)
        self._prepare(copy, training=False)
        if role is not None:
            self.meter.watch(copy, role)
        return copy

    @torch.no_grad()
    def generate(self, model: nn.Module, seeds: list[int], steps: int, eta: float = 0.0,
                 sampler: str = DEFAULT_SAMPLER) -> torch.Tensor:
        """Samples in [-1, 1] (DDIM unless another registered `sampler` is named), image i determined by seeds[i];
        the model's output read as its configuration's prediction type. Fastest from a `frozen_copy`."""
        prediction = getattr(getattr(model, "config", None), "prediction", "epsilon")
        was_training = model.training
        model.eval()
        try:
            with self.autocast():
                images = self.sampler(steps, eta, sampler).sample(model, seeds, self.image_shape, device=self.device,
                                                                  prediction=prediction)
        finally:
            model.train(was_training)
        self.meter.add_generated(len(seeds))
        return images

    def training_targets(self, x0: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, t, noise) for the epsilon-prediction loss: t ~ U{0..T-1}, noise ~ N(0, I), from generator g.

        Drawn on the CPU (g is a CPU generator, so every device trains on the same draws) and copied without
        blocking: the host draws the next iteration's while the GPU still computes this one's."""
        n = x0.shape[0]
        t = host_to_device(torch.randint(0, self.num_timesteps, (n,), generator=g), self.device)
        noise = host_to_device(torch.randn(x0.shape, generator=g), self.device)
        return self.schedule.add_noise(x0, noise, t), t, noise
