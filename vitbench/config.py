"""Every option a run can be given, declared once: a field of ``TrainConfig`` or ``ViTConfig`` with its help,
choices, range, whether it is a flag of `run` and `sweep` and whether a sweep may search it. The CLI's flags, their
help and defaults, ``Options`` (every source of options: flags, recipes, suite cells, sweep trials) and the sweep's
searchable set are made from these declarations. Torch-free, so ``vitbench --help`` answers at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, make_dataclass, replace

from vitbench import names
from vitbench.errors import VitbenchError, check_field_types, check_number

PARTS, SIZES = "the variant's", "the preset's"


def option(default, help: str = "", *, choices: tuple = (), low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, shown: str | None = None, flag: bool = True,
           short: str | None = None, search: bool = False, registry: bool = False, panel: str = ""):
    """A config field and what the CLI, validation and sweeps know of it. ``shown``: the default as the help says it
    (else the default itself); ``flag``: a flag of `run` and `sweep` (else only recipes, suites and trials set it);
    ``registry``: the choices are a registry's keys, checked against the live registry (vitbench.models); ``panel``:
    where `--help` lists it (else Model for ViTConfig's fields, Training for TrainConfig's)."""
    return field(default=default, metadata=dict(help=help, choices=choices, low=low, high=high, low_open=low_open,
                                                 high_open=high_open, shown=shown, flag=flag, short=short,
                                                 search=search, registry=registry, panel=panel))


def check(config) -> None:
    """Each field of its declared type, among its choices, in its range: one line naming it otherwise."""
    check_field_types(config)
    for f in fields(config):
        value, m = getattr(config, f.name), f.metadata
        if value is None or not m:
            continue
        if m["choices"] and not m["registry"] and value not in m["choices"]:
            raise VitbenchError(f"unknown {f.name} {value!r}; valid: {', '.join(m['choices'])}")
        check_number(f.name, value, m["low"], m["high"], m["low_open"], m["high_open"])


@dataclass(frozen=True)
class TrainConfig:
    # Defaults: best of a 24-trial sweep of sdpa on MNIST, 5 epochs, scored on a held-out 10% of the training set
    # (results/logs/defaults_sweep.txt), rounded. Never tuned on the test set.
    variant: str = option("sdpa", "what `vitbench variants` lists", choices=names.VARIANTS, short="-v", registry=True,
                          panel="Model")
    dataset: str = option("mnist", names.choices(names.DATASETS + names.DATASET_FORMS), short="-d")
    epochs: int = option(5, "epochs", low=1, search=True)
    batch_size: int = option(64, "training batch size", low=1, search=True)
    lr: float = option(2.1e-3, "peak learning rate, reached after the warm-up", low=0.0, low_open=True, search=True)
    weight_decay: float = option(0.06, "AdamW weight decay (not on biases, norms, positions, CLS)", low=0.0,
                                 search=True)
    warmup_epochs: float = option(0.6, "linear LR warm-up from 0, epochs", low=0.0, search=True)
    label_smoothing: float = option(0.14, "label smoothing", low=0.0, high=1.0, high_open=True, search=True)
    ema: float = option(0.0, "evaluate and keep an exponential moving average of the weights, this decay per step, "
                        "e.g. 0.999", low=0.0, high=1.0, high_open=True, shown="0: off", search=True)
    augment: str = option("auto", "training augmentation (crop's shifts, +-10 degrees, zoom 0.9-1.1)",
                          choices=("auto", *names.AUGMENTS), shown="auto: crop-flip for CIFAR, none for the digits",
                          search=True)
    grad_clip: float = option(1.0, "max global gradient norm (0: off)", low=0.0)
    optimizer: str = option("adamw", choices=("adamw", "adam"), search=True)
    scheduler: str = option("cosine", "step: x0.1 at 1/2 and 3/4 of training", choices=("cosine", "step", "constant"),
                            search=True)
    precision: str = option("fp32", "bf16 / fp16 autocast (fp16 with a gradient scaler); fp8: Linear layers through "
                            "torchao's float8 training, on GPUs with FP8 tensor cores", choices=names.PRECISIONS,
                            search=True, panel="Hardware")
    compile: bool = option(False, "torch.compile the model", panel="Hardware")
    compile_mode: str = option("default", "torch.compile's mode (the two that capture CUDA graphs of their own turn "
                               "vitbench's whole-step graph off)", choices=names.COMPILE_MODES, panel="Hardware")
    cuda_graph: bool | None = option(None, "capture the whole training step in a CUDA graph",
                                     shown="on where it applies: CUDA, not the naive parts", panel="Hardware")
    seed: int = option(0, "seed: weights, data order, augmentation", low=0)
    device: str = option("auto", "auto | cuda | cuda:N | cpu", panel="Hardware")
    loader: str = option("auto", "gpu: device-resident; dataloader: torch's DataLoader",
                         choices=("auto", "gpu", "dataloader"), shown="auto: gpu on CUDA", panel="Hardware")
    val_split: float = option(0.0, "evaluate on this fraction held out of the training set instead of the official "
                              "test set", low=0.0, high=1.0, high_open=True)
    max_steps: int | None = option(None, "stop after N optimizer steps (the schedule is unchanged)", low=1)
    time_budget: float | None = option(None, "seconds of training: the run ends there", low=0.0, low_open=True)
    budget_mode: str = option("fit", "with --time-budget: fit: the schedule (warm-up, decay to its end) planned for "
                              "the steps that fit in the budget, measured on the first steps; cut: the schedule of "
                              "--epochs, cut where the budget ends", choices=("fit", "cut"))
    target_acc: float | None = option(None, "stop once the evaluation set's accuracy reaches this, checked ten times an "
                                      "epoch, the checks' time not counted as training: time_to_target records when",
                                      low=0.0, high=1.0, low_open=True)
    profile: int = option(0, "after training, profile this many more steps of the timed step (torch.profiler): "
                          "its trace and its time by kind of kernel, logged with the run; the weights put back after",
                          low=0, high=1000, panel="Hardware")
    eval_batch_size: int = option(1000, low=1, flag=False)
    num_workers: int = option(0, "DataLoader workers", low=0, high=256, panel="Hardware")
    data_dir: str | None = option(None, "dataset root", shown="$VITBENCH_DATA, else ./data")

    def __post_init__(self) -> None:
        check(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class ViTConfig:
    # the parts: implementations of one function each, at other costs
    attention: str = option("sdpa", choices=names.ATTENTION, shown=PARTS, search=True, registry=True)
    patchify: str = option("conv", choices=names.PATCHIFY, shown=PARTS, search=True, registry=True)
    mlp: str = option("torch", choices=names.MLP, shown=PARTS, search=True, registry=True)
    pos_embed: str = option("learned", choices=names.POS_EMBED, shown=PARTS, search=True)
    pool: str = option("cls", "cls: classify the CLS token; mean: average the patch tokens", choices=names.POOL,
                       shown=PARTS, search=True)
    norm: str = option("pre", "pre: LayerNorm before attention/MLP; post: after the residual add", choices=names.NORM,
                       shown=PARTS, search=True)
    image_size: int = option(28, low=1, flag=False)  # pixels, square images
    in_chans: int = option(1, low=1, flag=False)
    num_classes: int = option(10, low=1, flag=False)
    patch_size: int = option(7, "patch size in pixels, dividing the image size", low=1, shown=SIZES, search=True)
    dim: int = option(64, "token width", low=1, shown=SIZES, search=True)
    depth: int = option(4, "transformer blocks", low=1, shown=SIZES, search=True)
    heads: int = option(4, "attention heads, dividing dim", low=1, shown=SIZES, search=True)
    mlp_dim: int = option(128, "MLP hidden width", low=1, shown=SIZES, search=True)
    dropout: float = option(0.0, "dropout on attention weights, projections and the MLP", low=0.0, high=1.0,
                            high_open=True, search=True)
    patch_drop: float = option(0.0, "training only: drop this fraction of each image's patch tokens at random "
                               "(PatchDropout)", low=0.0, high=1.0, high_open=True, search=True)
    qkv_bias: bool = option(True, flag=False)

    def __post_init__(self) -> None:
        check(self)
        if self.image_size % self.patch_size:
            valid = ", ".join(str(p) for p in range(1, self.image_size + 1) if self.image_size % p == 0)
            raise VitbenchError(f"patch size {self.patch_size} does not divide image size {self.image_size}; "
                                f"valid patch sizes: {valid}")
        if self.dim % self.heads:
            raise VitbenchError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.pos_embed == "sincos2d" and self.dim % 4:
            raise VitbenchError(f"pos_embed 'sincos2d' needs dim divisible by 4, got dim {self.dim}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def kept_patches(self) -> int:
        """The patch tokens a training forward keeps (all of them in evaluation)."""
        return self.num_patches - int(self.num_patches * self.patch_drop)

    @property
    def tokens(self) -> int:
        """The sequence length the attention sees: the patches, and the CLS token with CLS pooling."""
        return self.num_patches + (self.pool == "cls")

    def to_dict(self) -> dict:
        return asdict(self)


class _Options:
    """Everything one run can be given (None: not given, the configs' defaults apply). ``variant``, ``dataset``:
    what is trained on what; ``preset``: the size (the dataset's own when None); the rest are TrainConfig's and
    ViTConfig's fields of the same names."""

    def __post_init__(self) -> None:
        check_field_types(self)  # a YAML file's `batch_size: "eight"`: one line naming it

    @classmethod
    def read(cls, values: Mapping, where: str, settable: tuple[str, ...] | None = None):
        """Options from a mapping (a recipe's, a suite cell's, a sweep trial's): unknown names and wrong types
        are one line naming ``where``; ``settable`` limits which names it may give."""
        check_names(values, where, settable)
        try:
            return cls(**values)
        except VitbenchError as e:
            raise VitbenchError(f"{where}: {e}") from None

    def given(self) -> dict:
        """The options that were given (not None), by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def then(self, later):
        """These options with every option ``later`` gives on top (a recipe, then the command line's flags)."""
        return replace(self, **later.given())


PRESET = dict(help=f"size preset: {names.choices(names.PRESETS)}", shown="the dataset's; an image folder's from its "
              "images")


def declare(train: type = TrainConfig, model: type = ViTConfig) -> None:
    """``Options``, the option names and the searchable set, made from the configs' fields: here, and again where a
    subclass adds a field (tests/system/test_options.py)."""
    global TrainConfig, ViTConfig, TRAIN_OPTIONS, MODEL_OPTIONS, DECLARED, Options, OPTION_NAMES, SEARCHABLE
    TrainConfig, ViTConfig = train, model
    TRAIN_OPTIONS = tuple(f.name for f in fields(train) if f.name not in ("variant", "dataset"))
    MODEL_OPTIONS = tuple(f.name for f in fields(model))
    DECLARED = {f.name: f for f in (*fields(train), *fields(model))}
    def unset(n: str) -> tuple:  # the field as an option: None, not given
        return n, DECLARED[n].type.removesuffix(" | None") + " | None", option(None, **DECLARED[n].metadata)

    Options = make_dataclass("Options", [unset("variant"), unset("dataset"), ("preset", "str | None", option(None, **PRESET)),
                                         *map(unset, TRAIN_OPTIONS + MODEL_OPTIONS)], bases=(_Options,), frozen=True)
    Options.__module__ = __name__  # pickled to a suite's workers
    OPTION_NAMES = tuple(f.name for f in fields(Options))
    SEARCHABLE = tuple(n for n in TRAIN_OPTIONS + MODEL_OPTIONS if DECLARED[n].metadata["search"])


declare()


def check_names(values: Mapping, where: str, settable: tuple[str, ...] | None = None) -> None:
    """Every name in ``values`` is an option (of ``settable``, default all): else one line naming ``where``."""
    settable = settable or OPTION_NAMES
    if bad := [k for k in values if k not in settable]:
        raise VitbenchError(f"{where}: {bad[0]!r} is not an option; valid: {', '.join(settable)}")
