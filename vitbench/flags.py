"""The CLI's parts that commands share: flags made from the options declared in vitbench.config (and a few of the
CLI's own), and errors as one line on stderr with exit code 2. Torch-free, so `vitbench --help` answers at once."""

from __future__ import annotations

import contextlib
import functools
import sys
from dataclasses import fields
from inspect import Parameter, signature
from typing import Annotated, get_type_hints

import typer

from vitbench import names
from vitbench.config import DECLARED, MODEL_OPTIONS, Options
from vitbench.errors import Interrupted, VitbenchError, check_number
from vitbench.names import choices


def fail(message: str, code: int = 2) -> None:
    from vitbench.secrets import mask_secrets  # no password reaches a terminal or a log

    typer.echo(f"error: {mask_secrets(message)}", err=True)
    raise typer.Exit(code)


WRITTEN: list[str] = []  # files a command has written its results to (bench --out), for an interrupt's message


def cli_errors(fn):
    """VitbenchError -> 'error: ...' and exit 2; Ctrl-C -> exit 130 (the run is already KILLED)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VitbenchError as e:
            fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
        except Exception as e:
            if (why := store_error(e)) is None:
                raise
            fail(why)
        except KeyboardInterrupt as e:
            from vitbench.distributed import lead
            from vitbench.tracking import ENDED

            if not lead() or isinstance(e, Interrupted):  # rank 0 / the pool already said what was ended
                raise typer.Exit(130) from None

            killed = [rid for rid, status in ENDED.items() if status == "KILLED"]
            typer.echo(f"interrupted: run {killed[-1]} was ended KILLED and a checkpoint written" if killed
                       else f"interrupted before its MLflow run started: the results are in {', '.join(WRITTEN)}"
                       if WRITTEN else "interrupted before any run started: nothing was recorded", err=True)
            raise typer.Exit(130) from None

    return wrapper


def store_error(e: Exception) -> str | None:
    """One line for a tracking store that failed mid-command (a server that stopped answering, a lost database),
    None for anything else: a bug keeps its traceback."""
    if "mlflow" not in sys.modules:
        return None
    import requests
    from mlflow.exceptions import MlflowException

    if not isinstance(e, (MlflowException, requests.RequestException, ConnectionError, TimeoutError)):
        return None
    import mlflow

    text = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return f"the tracking store {mlflow.get_tracking_uri()} failed: {type(e).__name__}: {text}"


def check_mlflow_names(**names: str | None) -> None:
    """An experiment or run name given is not empty and fits MLflow's SQL stores (a longer one fails there,
    mid-command, after a run exists)."""
    from vitbench.mlflow_ui import NAME_LENGTH

    for option, name in names.items():
        flag = "--" + option.replace("_", "-")
        if name is not None and not name.strip():
            raise VitbenchError(f"{flag} is empty; give a name, or leave the option out for the default")
        if name is not None and len(name) > NAME_LENGTH:
            raise VitbenchError(f"{flag} has {len(name)} characters; MLflow keeps {NAME_LENGTH} at most")


def settings(pairs: list[str]) -> dict:
    """``["epochs=1", "lr=1e-3"]`` -> {"epochs": 1, "lr": 0.001}: each value as a suite file's YAML reads it, a
    number written as one a number."""
    import yaml

    out = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key.strip():
            raise VitbenchError(f"--set takes KEY=VALUE, got {pair!r}")
        value = yaml.safe_load(text) if text.strip() else None
        with contextlib.suppress(TypeError, ValueError):
            value = float(value) if isinstance(value, str) and not value.isalpha() else value
        out[key.strip()] = value
    return out


def split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def int_list(value: str | None, name: str = "sizes") -> list[int]:
    """``"64,256"`` -> [64, 256], each a positive size; anything else a one-line error."""
    try:
        sizes = [int(v) for v in split_list(value) or []]
    except ValueError:
        raise VitbenchError(f"{name} must be comma-separated integers, got {value!r}") from None
    for v in sizes:
        check_number(name, v, 1)
    return sizes


PANELS = ("Arguments", "Model", "Training", "Hardware", "Tracking", "Options")  # `--help`'s sections, in order


class Panels(typer.core.TyperCommand):
    """A command whose plain help (wrapped to the terminal, never cut) lists its options by panel."""

    def format_options(self, ctx, formatter) -> None:
        panels: dict[str, list] = {}
        for param in self.get_params(ctx):
            if (record := param.get_help_record(ctx)) is not None:
                argument = param.param_type_name == "argument"
                panels.setdefault("Arguments" if argument else param.rich_help_panel or "Options", []).append(record)
        for name in sorted(panels, key=PANELS.index):
            with formatter.section(name):
                formatter.write_dl(panels[name])


TYPES = {"str": str, "int": int, "float": float, "bool": bool}
COMPLETIONS = {"dataset": (*names.DATASETS, "synthetic", "imagefolder:")}  # beyond the declared choices


def completer(values: tuple[str, ...], listed: bool = False):
    """Shell completion of a flag's values (`vitbench --install-completion`); ``listed``: a comma-separated list,
    its last item completed. From vitbench.names, so completing imports no torch."""
    def complete(incomplete: str) -> list[str]:
        done, _, last = incomplete.rpartition(",") if listed else ("", "", incomplete)
        return [f"{done},{v}" if done else v for v in values if v.startswith(last)]

    return complete


def flag(name: str):
    """The flag of an option declared in vitbench.config: its help with its choices and default."""
    f = next(f for f in fields(Options) if f.name == name)
    m, kind = f.metadata, TYPES[f.type.split(" | ")[0]]
    default = DECLARED[name].default if name in DECLARED else None
    shown = m["shown"] or (("on" if default else "off") if kind is bool else default)
    text = "; ".join(t for t in (choices(m["choices"]), m["help"]) if t)
    text += f" [{shown}]" if shown is not None and f.default is None else ""
    long = "--" + name.replace("_", "-")
    decls = [f"{long}/--no-{long[2:]}" if kind is bool else long, *([m["short"]] if m["short"] else [])]
    values = COMPLETIONS.get(name, m["choices"])
    panel = m["panel"] or ("Model" if name in MODEL_OPTIONS or name == "preset" else "Training")
    return Annotated[kind | None, typer.Option(*decls, help=text, rich_help_panel=panel,
                                               autocompletion=completer(values) if values else None)]


def declared_flags() -> list[Parameter]:
    """`run`'s and `sweep`'s flags for the options: one per declared option that is a flag."""
    return [Parameter(f.name, Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=flag(f.name))
            for f in fields(Options) if f.metadata["flag"]]


Device, DataDir, CudaGraph = flag("device"), flag("data_dir"), flag("cuda_graph")
PosEmbed, Pool, Dim, Depth, Heads = flag("pos_embed"), flag("pool"), flag("dim"), flag("depth"), flag("heads")
MlpDim, PatchSize = flag("mlp_dim"), flag("patch_size")


def implementations(part: str, impls: tuple[str, ...]):
    """A bench flag that lists several implementations of a part (every combination is measured)."""
    return Annotated[str | None, typer.Option(help=f"{part} implementations, comma-separated: {', '.join(impls)}",
                                              rich_help_panel="Model", autocompletion=completer(impls, listed=True))]


Attentions = implementations("attention", names.ATTENTION)
Patchifies = implementations("patchify", names.PATCHIFY)
Mlps = implementations("MLP", names.MLP)
TRACKING = "Tracking"  # --help's panel of where runs are recorded
TrackingUri = Annotated[str | None, typer.Option(help="MLflow tracking URI (else $MLFLOW_TRACKING_URI, "
                                                         "else sqlite:///mlflow.db)", rich_help_panel=TRACKING)]
Experiment = Annotated[str | None, typer.Option(help="MLflow experiment [vitbench-<dataset>]",
                                                rich_help_panel=TRACKING)]
SweepExperiment = Annotated[str | None, typer.Option(help="MLflow experiment [vitbench-sweep-<dataset>]",
                                                     rich_help_panel=TRACKING)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar and no periodic progress lines")]
ProgressInterval = Annotated[float, typer.Option(help="seconds between progress lines when output is not a "
                                                      "terminal (a log file, CI, nohup)")]
LiveEvery = Annotated[str, typer.Option(help="step-level metrics to MLflow (live/train_loss, live/train_acc, "
                                             "live/train_images_per_sec): every '10s', every '200' steps, or 'off'",
                                        rich_help_panel=TRACKING)]


# bench's own
Detail = Annotated[bool, typer.Option(help="also time the training step's forward, backward and optimizer update "
                                           "apart, uncaptured, a sync after each (timm's --detail): train_fwd_time, "
                                           "train_bwd_time, train_opt_time")]
Retry = Annotated[bool, typer.Option("--retry/--no-retry", help="on CUDA out-of-memory, retry the cell at a smaller "
                                                                "batch, as timm's benchmark.py does; --no-retry "
                                                                "fails the cell")]
Profile = Annotated[int, typer.Option(help="also profile this many more steps of each cell's timed step "
                                           "(torch.profiler): a Perfetto trace and the step's time by kind of kernel "
                                           "(matmul, attention, normalisation, elementwise/activation, copies/layout, "
                                           "optimizer, other) as the cell's artifacts and metrics "
                                           "(train_prof_matmul_ms, ...)")]
Peers = Annotated[str | None, typer.Option(help=f"also measure peer libraries' ViT at the same dimensions: "
                                                f"{', '.join(names.PEERS)}; or timm:MODEL, any model "
                                                "timm.create_model builds (e.g. timm:resnet50)")]


def display(quiet: bool, interval: float):
    from vitbench.progress import Display

    check_number("--progress-interval", interval, 0.0, low_open=True)
    return Display("off" if quiet else "auto", interval, log=typer.echo)

def flags(command) -> list[Parameter]:
    """A command's parameters but ``options``, their annotations resolved (what Typer makes flags of)."""
    hints = get_type_hints(command, localns={"Options": object}, include_extras=True)  # Options: never a flag
    return [p.replace(annotation=hints[p.name]) for p in signature(command).parameters.values() if p.name != "options"]


def with_options(command):
    """Gives ``command`` the flags of the declared options -- Typer reads the combined signature -- and calls it with
    ``options``, the Options they make."""
    shared = declared_flags()
    params = [*shared, *flags(command)]

    @functools.wraps(command)
    def wrapper(**kwargs):
        return command(options=Options(**{p.name: kwargs.pop(p.name) for p in shared}), **kwargs)

    wrapper.__signature__ = signature(command).replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
