"""Accelerate training loops of TRACE: stage 1 (masked reconstruction) and stage 2 (contrastive alignment).

Both loops share one design, chosen so that runs are reproducible and resumable:
- data order is fixed by the seed: the epoch-e permutation is `randperm(n, seed + e)`; each micro-step takes
  the next `per_device_batch * num_processes` indices and process r its r-th slice. A 1-process run with the
  same global batch sees the same samples in the same step, and a resumed run needs no "skip batches" logic;
- per-step randomness (patch masks, dropout) is reseeded from (seed, micro-step, rank) before every micro-step,
  so a resumed run continues exactly where the unbroken run would be;
- the scheduler is stepped once per optimiser step (it is not `prepare`d, because Accelerate's wrapper would step
  it `num_processes` times per step);
- checkpoints hold no pickle: weights and optimiser tensors are safetensors, everything else (step, scheduler, RNG,
  grad scaler, recipe) JSON, written and read here rather than by `accelerator.save_state` / `load_state`, whose
  `.pkl` / `.bin` files are unpickled on load and so could run code planted in a checkpoint folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import DistributedType, gather_object

from modeling_trace.configuration_trace import TraceConfig
from modeling_trace.data_collator import TraceDataCollator, align_dataset_channels
from modeling_trace.modeling_trace import TraceForPretraining, TraceModel, trace_contrastive_loss
from modeling_trace.presets import load_preset

from .distributed import gather_embeddings_for_loss, gather_no_grad
from .optimization import cache_accelerate_package_checks, create_optimizer, create_scheduler
from .recipes import AlignRecipe, PretrainRecipe, TrainingRecipe, check_resume_recipe, load_recipe_file, save_recipe
from .text_cache import build_text_embedding_cache, text_embedding_batch, update_tensor_digest

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
CHECKPOINT_FORMAT = "trace-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
STATE_FILE = "trainer_state.json"  # written last: a folder without it is an incomplete save and is skipped
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng_state_{rank}.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (an old pickle-based one, or missing / inconsistent files); a
    ValueError so that `trace pretrain/align --resume` reports it in one line."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint whose files cannot be read (a truncated or corrupt safetensors or JSON file, a missing file):
    `--resume` falls back to the previous readable checkpoint (see `resume_checkpoint`)."""


# ---------------------------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------------------------


class JsonlTracker(GeneralTracker):
    """An Accelerate tracker writing one JSON object per `log` call (works without any tracking package)."""

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(logging_dir) / "train_log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run_name = run_name

    @property
    def tracker(self):
        return self.path

    def store_init_configuration(self, values: dict):
        with open(self.path.parent / "run_config.json", "w") as handle:
            json.dump(values, handle, indent=2, default=str)

    def log(self, values: dict, step: int | None = None, **kwargs):
        record = {"step": step, **{k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def read_log(output_dir: str | os.PathLike) -> list[dict]:
    """The records of `train_log.jsonl` in `output_dir`."""
    path = Path(output_dir) / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_log(output_dir: str | os.PathLike, step: int) -> int:
    """Keep only the records of `train_log.jsonl` with `step <= step` (a resumed run logs the later steps again);
    returns how many were dropped. Unreadable lines (e.g. cut by a kill) are dropped too."""
    path = Path(output_dir) / "train_log.jsonl"
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step
        except json.JSONDecodeError:
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


def _trackers(recipe: TrainingRecipe, run_name: str):
    trackers = []
    if recipe.report_to == "none":
        return trackers
    trackers.append(JsonlTracker(run_name, recipe.output_dir))
    if recipe.report_to in ("auto", "tensorboard"):
        try:
            import tensorboard  # noqa: F401
        except ImportError as err:
            if recipe.report_to == "tensorboard":
                raise ImportError("report_to='tensorboard' needs `pip install tensorboard`; or use report_to='jsonl'.") from err
        else:
            trackers.append("tensorboard")
    return trackers


def _flat_config(recipe: TrainingRecipe) -> dict:
    # TensorBoard hparams take scalars only.
    return {
        k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
        for k, v in dataclasses.asdict(recipe).items()
    }


# ---------------------------------------------------------------------------------------------------------------
# Set-up shared by both stages
# ---------------------------------------------------------------------------------------------------------------


def resolve_mixed_precision(mixed_precision: str) -> str:
    """'auto' -> bf16 on a GPU that supports it, else full precision; other values pass through."""
    if mixed_precision != "auto":
        return mixed_precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def use_cpu_processes() -> bool:
    """Whether to run on CPU: asked for (`ACCELERATE_USE_CPU`), or several processes launched by torchrun
    (`accelerate launch --multi_gpu` / a MULTI_GPU config) on a machine without a GPU, which then use gloo.

    accelerate 1.15 starts a single process for `accelerate launch --cpu --num_processes N` (several CPU
    processes only through mpirun), and treats torchrun-launched processes without CUDA as non-distributed unless
    told `cpu=True`; this makes `--multi_gpu --num_processes 2` a real 2-process gloo run on a CPU machine.
    """
    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        return True
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def distributed_state():
    """The process-group state (initialised once per process), created before any data or model is built."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu_processes())


def build_accelerator(recipe: TrainingRecipe, run_name: str) -> Accelerator:
    """The `Accelerator` of a recipe: mixed precision, trackers (`report_to`) and `output_dir` as project folder."""
    from accelerate.utils import ProjectConfiguration

    cache_accelerate_package_checks()
    return Accelerator(
        cpu=use_cpu_processes(),
        mixed_precision=resolve_mixed_precision(recipe.mixed_precision),
        log_with=_trackers(recipe, run_name) or None,
        project_config=ProjectConfiguration(project_dir=recipe.output_dir, logging_dir=recipe.output_dir),
    )


def is_checkpoint_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a saved model folder (has a `config.json`) rather than a preset name or a JSON file."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def build_time_series_config(recipe: TrainingRecipe, **extra) -> TraceConfig:
    """The encoder config of a recipe: a preset name / JSON path plus `model_overrides` and stage values."""
    overrides = {**recipe.model_overrides, **extra}
    return load_preset(recipe.model, **overrides)


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoints/step_<k>` folders that hold `trainer_state.json` (written last, so the save got to its end),
    newest (largest k) first."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    steps = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and (p / STATE_FILE).is_file()]
    return [path for _, path in sorted(steps, reverse=True)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The `checkpoints/step_<k>` folder with the largest k, or None."""
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[0] if checkpoints else None


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the names and bytes of all parameters (to check that every process holds the same weights)."""
    digest = hashlib.sha256()
    update_tensor_digest(digest, model.named_parameters())
    return digest.hexdigest()


@dataclasses.dataclass
class GlobalBatchOrder:
    """Seeded, process-independent data order: which dataset rows process `rank` reads at micro-step `m`."""

    num_samples: int
    per_device_batch_size: int
    num_processes: int
    rank: int
    seed: int

    def __post_init__(self):
        self.global_micro_batch = self.per_device_batch_size * self.num_processes
        self.micro_steps_per_epoch = self.num_samples // self.global_micro_batch
        if self.micro_steps_per_epoch == 0:
            raise ValueError(
                f"The dataset has {self.num_samples} rows, fewer than one global micro-batch "
                f"({self.per_device_batch_size} per process x {self.num_processes} processes); use more data or a "
                "smaller global_batch_size."
            )
        self._epoch, self._order = None, None

    def indices(self, micro_step: int) -> list[int]:
        """Dataset rows of this process at `micro_step` (the epoch's seeded permutation, sliced by rank)."""
        epoch, position = divmod(micro_step, self.micro_steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.num_samples, generator=generator).tolist()
        start = position * self.global_micro_batch + self.rank * self.per_device_batch_size
        return self._order[start : start + self.per_device_batch_size]


def alignment_loss(model: TraceModel, outputs, channel_text_mask: torch.Tensor | None):
    """TRACE's dual-level loss over the embeddings of *all* processes (gathered, local shard keeps its graph).

    Returns `(loss, sample_loss, channel_loss)`, equal on every process to the loss of one process holding the
    combined batch; gradients after DDP averaging equal that process's gradients too (see
    `gather_embeddings_for_loss`).
    """
    config = model.config
    time_series = gather_embeddings_for_loss(outputs.time_series_embeds.float())
    text = gather_embeddings_for_loss(outputs.text_embeds.float())
    channel = channel_text = mask = None
    if outputs.channel_text_embeds is not None and config.channel_loss_weight > 0:
        channel = gather_embeddings_for_loss(outputs.channel_embeds.float())
        channel_text = gather_embeddings_for_loss(outputs.channel_text_embeds.float())
        if channel_text_mask is None:
            channel_text_mask = torch.ones(outputs.channel_embeds.shape[:2], dtype=torch.bool, device=channel.device)
        mask = gather_no_grad(channel_text_mask.bool())
    return trace_contrastive_loss(
        time_series,
        text,
        model.logit_scale,
        channel,
        channel_text,
        mask,
        num_hard_negatives=config.num_hard_negatives,
        channel_loss_weight=config.channel_loss_weight,
    )


def _run_evaluation(model, evaluate) -> dict:
    """`evaluate(model)` in eval mode without gradients and with the global RNG untouched, so a run with evaluation
    trains exactly like one without (dropout and masking draws are not shifted)."""
    rng = torch.get_rng_state()
    model.eval()
    try:
        with torch.no_grad():
            values = {k: float(v) for k, v in evaluate(model).items()}
    finally:
        model.train()
        torch.set_rng_state(rng)
    return values


def embedding_geometry(embeddings: torch.Tensor, prefix: str) -> dict:
    """How spread out unit-norm embeddings are: the mean pairwise cosine and the norm of their mean (both near 1
    when every item is embedded in one shared direction, a collapse; near 0 for isotropic embeddings)."""
    embeddings = embeddings.detach().float()
    n = embeddings.shape[0]
    total = embeddings.sum(0)
    squared = float(total @ total)
    logs = {f"{prefix}_mean_norm": (squared**0.5) / max(n, 1)}
    if n > 1:
        logs[f"{prefix}_mean_cosine"] = (squared - float((embeddings * embeddings).sum())) / (n * (n - 1))
    return logs


def pair_retrieval_mrr(ts_embeds: torch.Tensor, text_embeds: torch.Tensor, k: int = 10) -> dict:
    """Modality matching on a held-out batch, the ranking the loss itself does not measure: MRR@k of each series'
    own text among the batch's texts (`ts_to_text_mrr@k`) and of each text's own series (`text_to_ts_mrr@k`), by
    cosine similarity. A falling held-out loss can hide a flat ranking (and a rising one, a sharper temperature
    over an improving ranking), so alignment convergence is read from these too."""
    from modeling_trace.metrics.trace_retrieval.trace_retrieval import ranking_metrics

    ts = torch.nn.functional.normalize(ts_embeds.detach().float(), dim=-1)
    text = torch.nn.functional.normalize(text_embeds.detach().float(), dim=-1)
    scores = ts @ text.T
    own = torch.arange(scores.shape[0], device=scores.device)[:, None]
    out = {}
    for name, matrix in (("ts_to_text", scores), ("text_to_ts", scores.T)):
        top = matrix.topk(min(k, matrix.shape[1]), dim=1).indices
        relevance = (top == own).cpu().numpy().astype(np.float64)
        metrics = ranking_metrics(relevance, mrr_at=k, precision_at=(), ndcg_at=None, accuracy_at=(), map_at=None)
        out[f"{name}_mrr@{k}"] = metrics[f"mrr@{k}"]
    return out


def _accelerator_generators_in_use() -> bool:
    """Whether a device generator besides the CPU's may draw numbers in this process (CUDA / XPU initialised, or an
    MPS device present); when none may, seeding the CPU generator is all `torch.manual_seed` would do that matters."""
    for name in ("cuda", "xpu"):
        backend = getattr(torch, name, None)
        if backend is not None and backend.is_available() and backend.is_initialized():
            return True
    return torch.backends.mps.is_available()


def _seed_micro_step(seed: int, micro_step: int, rank: int) -> None:
    value = (seed * 1_000_003 + micro_step * 1_009 + rank) % (2**63 - 1)
    if _accelerator_generators_in_use():
        torch.manual_seed(value)
    else:
        # `torch.manual_seed` also queues a lazy seed for each uninitialised device backend (CUDA, XPU, MTIA), each
        # capturing a formatted Python stack: 0.7 ms a step on 2 CPU cores, a tenth of a small model's step
        torch.default_generator.manual_seed(value)


# A training set whose collated series hold at most this many values is collated once, before the first step: every
# step then gathers its rows by index instead of reading Arrow rows and padding them again (measured: 4.5 ms of a
# 9 ms per-step overhead at batch 32 on GunPoint; `python -m benchmarks.loop_overhead`).
PRECOLLATE_MAX_VALUES = 2**26


def collate_once(collator: TraceDataCollator, dataset, columns=("past_values",)) -> dict[str, torch.Tensor] | None:
    """The whole `dataset` (its `columns` only) collated into tensors once, in chunks, or `None` when they would not
    fit (`PRECOLLATE_MAX_VALUES` values of past and future windows) or the dataset is empty. Rows are collated
    independently (fixed context, channels and horizon), so any slice of the result equals the collation of its
    rows."""
    if len(dataset) == 0:
        return None
    steps = collator.context_length + (collator.prediction_length or 0)
    if len(dataset) * steps * collator.num_channels > PRECOLLATE_MAX_VALUES:
        return None
    columns = dataset.select_columns(list(columns))
    chunk = 1024
    parts = [collator(columns.select(range(start, min(start + chunk, len(columns)))).to_list()) for start in range(0, len(columns), chunk)]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def series_batches(collator: TraceDataCollator, dataset):
    """`get_batch(indices) -> {"past_values", "past_observed_mask"}` over `dataset`: slices of tensors collated once
    for the whole dataset when they fit (`collate_once`), else each batch collated from its rows."""
    full = collate_once(collator, dataset)
    if full is None:
        columns = dataset.select_columns(["past_values"])
        return lambda indices: collator([columns[i] for i in indices])

    def get_batch(indices):
        index = torch.as_tensor(indices, dtype=torch.long)
        return {key: value.index_select(0, index) for key, value in full.items()}

    return get_batch


def train_loop(
    recipe: TrainingRecipe,
    accelerator: Accelerator,
    model: torch.nn.Module,
    num_samples: int,
    get_batch,
    compute_loss,
    run_name: str,
    resume: bool = False,
    stop_at_step: int | None = None,
    evaluate=None,
) -> dict:
    """The shared loop. `get_batch(indices) -> dict` of CPU tensors, `compute_loss(model, batch) -> (loss, logs)`.

    `evaluate(model) -> dict`, when given, runs every `recipe.eval_steps` steps and at the end (model in eval mode,
    no gradients); its values are logged with an `eval_` prefix. Returns a summary (`global_step`, `first_loss`,
    `last_loss`, `last_eval`, `seconds`, ...).
    """
    from tqdm.auto import tqdm

    num_processes = accelerator.num_processes
    per_device = recipe.per_device_batch_size(num_processes)
    order = GlobalBatchOrder(num_samples, per_device, num_processes, accelerator.process_index, recipe.seed)
    accumulation = recipe.gradient_accumulation_steps
    steps_per_epoch = max(1, order.micro_steps_per_epoch // accumulation)
    total_steps, warmup = recipe.schedule(steps_per_epoch)

    optimizer = create_optimizer(
        model, recipe.learning_rate, recipe.weight_decay, (recipe.adam_beta1, recipe.adam_beta2), recipe.adam_epsilon
    )
    scheduler = create_scheduler(optimizer, total_steps, warmup, recipe.min_lr_ratio)
    checkpoint = resume_checkpoint(recipe, resume, accelerator.print)  # refuses changed recipe values first
    model, optimizer = accelerator.prepare(model, optimizer)
    # Listed once: walking the module tree at every clipping cost about 2 ms a step (the frozen text tower's
    # parameters included). FSDP's clipping recognises its model only by the full list.
    clip_parameters = list(model.parameters())
    if accelerator.distributed_type != DistributedType.FSDP:
        clip_parameters = [parameter for parameter in clip_parameters if parameter.requires_grad]

    start_step = 0
    if checkpoint is not None:
        start_step = load_checkpoint(checkpoint, accelerator, model, optimizer, scheduler)
        accelerator.print(f"Resumed from {checkpoint} at step {start_step}.")

    if accelerator.is_main_process:
        Path(recipe.output_dir).mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, Path(recipe.output_dir) / "recipe.yaml")
        dropped = truncate_log(recipe.output_dir, start_step)
        if dropped:
            accelerator.print(f"train_log.jsonl: dropped {dropped} record(s) after step {start_step}, logged again now.")
    accelerator.wait_for_everyone()
    accelerator.init_trackers(run_name, config=_flat_config(recipe))
    accelerator.print(
        f"{run_name}: {num_samples} samples, {num_processes} process(es) x {per_device} per device x {accumulation} "
        f"accumulation = global batch {recipe.global_batch_size}; {total_steps} steps ({warmup} warmup); "
        f"mixed precision {accelerator.mixed_precision}."
    )

    progress = tqdm(total=total_steps, initial=start_step, disable=not accelerator.is_local_main_process, desc=run_name)
    model.train()
    first_loss = last_loss = last_eval = None
    window_losses, window_logs = [], {}
    started = time.perf_counter()
    step = start_step
    while step < total_steps:
        step_logs = {}
        step_loss = torch.zeros((), device=accelerator.device)
        for micro in range(accumulation):
            micro_step = step * accumulation + micro
            _seed_micro_step(recipe.seed, micro_step, accelerator.process_index)
            batch = {k: v.to(accelerator.device) for k, v in get_batch(order.indices(micro_step)).items()}
            sync = contextlib.nullcontext() if micro == accumulation - 1 else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    loss, logs = compute_loss(model, batch)
                accelerator.backward(loss / accumulation)
            step_loss += loss.detach().float() / accumulation
            for key, value in logs.items():
                step_logs[key] = step_logs.get(key, 0.0) + float(value) / accumulation
        grad_norm = None
        if recipe.max_grad_norm is not None:
            grad_norm = accelerator.clip_grad_norm_(clip_parameters, recipe.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update(1)

        mean_loss = accelerator.reduce(step_loss, reduction="mean").item()
        if first_loss is None:
            first_loss = mean_loss
        last_loss = mean_loss
        window_losses.append(mean_loss)
        for key, value in step_logs.items():
            window_logs.setdefault(key, []).append(value)
        if step % recipe.logging_steps == 0 or step == total_steps:
            elapsed = time.perf_counter() - started
            record = {
                "loss": sum(window_losses) / len(window_losses),
                "learning_rate": scheduler.get_last_lr()[0],
                "samples_per_second": (step - start_step) * recipe.global_batch_size / max(elapsed, 1e-9),
                **{k: sum(v) / len(v) for k, v in window_logs.items()},
            }
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            if evaluate is not None and recipe.eval_steps and (step % recipe.eval_steps == 0 or step == total_steps):
                last_eval = _run_evaluation(model, evaluate)
                record.update({f"eval_{k}": v for k, v in last_eval.items()})
            accelerator.log(record, step=step)
            progress.set_postfix(loss=f"{record['loss']:.4f}")
            window_losses, window_logs = [], {}
        elif evaluate is not None and recipe.eval_steps and step % recipe.eval_steps == 0:
            last_eval = _run_evaluation(model, evaluate)
            accelerator.log({f"eval_{k}": v for k, v in last_eval.items()}, step=step)
        if recipe.save_steps and (step % recipe.save_steps == 0 or step == total_steps):
            save_checkpoint(accelerator, recipe, step, model, optimizer, scheduler)
        if stop_at_step is not None and step >= stop_at_step and step < total_steps:
            accelerator.print(f"Stopping at step {step} as asked (--stop_at_step); resume with --resume.")
            break
    progress.close()
    seconds = time.perf_counter() - started
    digests = gather_object([weights_digest(accelerator.unwrap_model(model))])
    summary = {
        "run": run_name,
        "global_step": step,
        "total_steps": total_steps,
        "completed": step >= total_steps,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "last_eval": last_eval,
        "seconds": seconds,
        "num_processes": num_processes,
        "weight_digests": digests,
    }
    if accelerator.is_main_process:
        with open(Path(recipe.output_dir) / "summary.json", "w") as handle:
            json.dump(summary, handle, indent=2)
    return {"model": model, "summary": summary}


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: safetensors + JSON only
# ---------------------------------------------------------------------------------------------------------------


def _state_dict_options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def _save_tensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """`safetensors.save_file` of CPU copies; tensors sharing memory (tied weights) are stored once each."""
    from safetensors.torch import save_file

    seen, plain = set(), {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        if tensor.untyped_storage().data_ptr() in seen or not tensor.is_contiguous():
            tensor = tensor.clone().contiguous()
        seen.add(tensor.untyped_storage().data_ptr())
        plain[name] = tensor
    with _disk_errors(path):
        save_file(plain, str(path), metadata=metadata)


class DiskFullError(OSError):
    """A training output could not be written because its disk is full (or over quota)."""


@contextlib.contextmanager
def _disk_errors(path):
    """Say what happened and where when a write fails for lack of space, instead of a bare library message."""
    import errno

    try:
        yield
    except OSError as err:
        text = str(err).lower()
        if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "no space left" in text or "quota" in text:
            free = shutil.disk_usage(Path(path).parent if Path(path).parent.exists() else ".").free
            raise DiskFullError(
                f"Could not write {path}: the disk is full ({free / 2**20:.0f} MiB free there). Free space or set "
                "output_dir to another disk; resume with --resume from the last complete checkpoint."
            ) from err
        raise


def _json_value(value, what: str):
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"Cannot store {what} as JSON in a checkpoint ({err}); it holds a non-JSON value.") from err


def _flatten_optimizer_state(state: dict) -> tuple[dict, dict]:
    """A (full, FQN-keyed) optimiser state dict -> tensors for safetensors + a JSON-able rest."""
    tensors, extras = {}, {}
    for fqn, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{fqn}/{name}"] = value
            else:
                extras.setdefault(str(fqn), {})[name] = value
    rest = {"param_groups": state["param_groups"], "non_tensor_state": extras}
    return tensors, _json_value(rest, "the optimiser state")


def _unflatten_optimizer_state(tensors: dict, rest: dict, optimizer) -> dict:
    state: dict = {}
    for key, tensor in tensors.items():
        fqn, name = key.rsplit("/", 1)
        state.setdefault(fqn, {})[name] = tensor
    for fqn, values in rest["non_tensor_state"].items():
        state.setdefault(fqn, {}).update(values)
    groups = rest["param_groups"]
    # JSON has no tuples: give back the tuple values (AdamW's betas) as the live optimiser holds them
    for saved, live in zip(groups, optimizer.param_groups):
        for key, value in saved.items():
            if isinstance(live.get(key), tuple) and isinstance(value, list):
                saved[key] = tuple(value)
    return {"state": state, "param_groups": groups}


def _rng_state() -> dict:
    import numpy as np

    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    state = {
        "python": [version, list(python_state), gauss_next],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "torch_cpu": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np

    version, python_state, gauss_next = state["python"]
    random.setstate((version, tuple(python_state), gauss_next))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch_cpu"], dtype=torch.uint8))
    if "torch_cuda" in state and torch.cuda.is_available() and len(state["torch_cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["torch_cuda"]])


def save_checkpoint(accelerator: Accelerator, recipe: TrainingRecipe, step: int, model, optimizer, scheduler) -> Path:
    """Write `checkpoints/step_<step>/`: `model.safetensors`, `optimizer.safetensors` (tensors; param groups as JSON
    metadata), `rng_state_<rank>.json` per process and, last, `trainer_state.json` (format, step, scheduler, grad
    scaler, recipe). No file is a pickle; full (unsharded) state dicts, gathered on the main process under FSDP."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    folder = Path(recipe.output_dir) / "checkpoints" / f"step_{step:06d}"
    inner_optimizer = getattr(optimizer, "optimizer", optimizer)  # AcceleratedOptimizer -> torch optimizer
    options = _state_dict_options(cpu_offload=True)
    # collective under FSDP (every process calls it); the main process receives the full state
    model_state = get_model_state_dict(model, options=options)
    optimizer_state = get_optimizer_state_dict(model, inner_optimizer, options=options)
    if accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)  # a stale save of the same step (its trainer_state.json) goes first
        folder.mkdir(parents=True)
    accelerator.wait_for_everyone()
    (folder / RNG_FILE.format(rank=accelerator.process_index)).write_text(json.dumps(_rng_state()))
    if accelerator.is_main_process:
        _save_tensors(model_state, folder / MODEL_FILE, metadata={"format": "pt"})
        tensors, rest = _flatten_optimizer_state(optimizer_state)
        _save_tensors(tensors, folder / OPTIMIZER_FILE, metadata={"format": "pt", "trace_optimizer": json.dumps(rest)})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "global_step": step,
            "num_processes": accelerator.num_processes,
            "scheduler": _json_value(scheduler.state_dict(), "the scheduler state"),
            "grad_scaler": _json_value(accelerator.scaler.state_dict(), "the grad scaler state") if accelerator.scaler else None,
            "recipe": _json_value(dataclasses.asdict(recipe), "the recipe"),
        }
        tmp = folder / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, folder / STATE_FILE)
        if recipe.save_total_limit:
            kept = sorted(
                (int(m.group(1)), p)
                for p in folder.parent.iterdir()
                if (m := CHECKPOINT_PATTERN.match(p.name))
            )
            for _, old in kept[: -recipe.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def read_checkpoint_state(checkpoint: str | os.PathLike) -> dict:
    """The `trainer_state.json` of a checkpoint written by `save_checkpoint`; `CheckpointError` for any other
    (e.g. an `accelerator.save_state` folder of an earlier version, whose pickle files are never loaded)."""
    checkpoint = Path(checkpoint)
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedCheckpointError(f"Cannot read {checkpoint / STATE_FILE} ({err}); the checkpoint is incomplete or damaged.") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        pickles = sorted(p.name for p in checkpoint.iterdir() if p.suffix in (".pkl", ".bin", ".pt", ".pth"))
        raise CheckpointError(
            f"{checkpoint} is not a {CHECKPOINT_FORMAT} checkpoint (it was probably written by accelerator.save_state "
            f"of an earlier version{', files ' + ', '.join(pickles) if pickles else ''}). It is not loaded: those files "
            "are pickles, and unpickling a file can run arbitrary code. Start a fresh run (without --resume, or in a "
            "new output_dir), or delete that checkpoint folder to resume from an older one."
        )
    if state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{checkpoint} has checkpoint format_version {state.get('format_version')!r}; this version reads "
            f"{CHECKPOINT_FORMAT_VERSION}. Resume it with the version that wrote it, or start a fresh run."
        )
    missing = [name for name in (MODEL_FILE, OPTIMIZER_FILE) if not (checkpoint / name).is_file()]
    if missing:
        raise DamagedCheckpointError(f"{checkpoint} lacks {', '.join(missing)}; the checkpoint is incomplete. Delete it "
                                     "to resume from an older one, or start a fresh run.")
    return state


def _open_tensors(path: Path):
    """`safe_open(path)`; a file safetensors cannot read (truncated, corrupt) is a `DamagedCheckpointError` naming it
    (safetensors' own error names neither the file nor the checkpoint)."""
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # SafetensorError (not importable by name in every version), OSError
        raise DamagedCheckpointError(f"Cannot read {path} ({type(err).__name__}: {err}); the file is truncated or "
                                     "corrupt.") from err


def _load_tensors(path: Path) -> tuple[dict, dict]:
    """`(tensors, metadata)` of a checkpoint's safetensors file, or `DamagedCheckpointError` naming it."""
    with _open_tensors(path) as handle:
        try:
            return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}
        except Exception as err:
            raise DamagedCheckpointError(f"Cannot read the tensors of {path} ({type(err).__name__}: {err}); the file "
                                         "is truncated or corrupt.") from err


def check_checkpoint(checkpoint: str | os.PathLike) -> dict:
    """`read_checkpoint_state`, plus the headers of both safetensors files (which safetensors checks against the file
    size, so a truncated file fails here): `DamagedCheckpointError` for an unreadable checkpoint, `CheckpointError`
    for one of another format. Returns the trainer state."""
    checkpoint = Path(checkpoint)
    state = read_checkpoint_state(checkpoint)
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        with _open_tensors(checkpoint / name) as handle:
            metadata = handle.metadata() or {}
        if name == OPTIMIZER_FILE and "trace_optimizer" not in metadata:
            raise DamagedCheckpointError(f"{checkpoint / name} lacks its 'trace_optimizer' metadata; the file is not "
                                         "the one save_checkpoint wrote.")
    return state


def resume_checkpoint(recipe: TrainingRecipe, resume: bool, print_fn=print) -> Path | None:
    """The checkpoint a run resumes from (None: start at step 0), after checking that it can be resumed and that
    the recipe only changes values allowed on resume (`recipes.RESUMABLE_KEYS`; else `RecipeError`)."""
    if not resume:
        return None
    candidates = complete_checkpoints(recipe.output_dir)
    if not candidates:
        print_fn(f"--resume: no checkpoint in {recipe.output_dir}/checkpoints; starting from step 0.")
        return None
    # The newest checkpoint may be unreadable (a disk filled up, a file truncated after the save): fall back to the
    # previous one that reads, saying so. A checkpoint of another format is refused, never skipped.
    damaged = []
    for checkpoint in candidates:
        try:
            state = check_checkpoint(checkpoint)
        except DamagedCheckpointError as err:
            damaged.append(f"{checkpoint.name}: {err}")
            continue
        break
    else:
        raise CheckpointError(
            f"--resume: no readable checkpoint in {recipe.output_dir}/checkpoints ({'; '.join(damaged)}). Delete the "
            "damaged folders or start a fresh run (without --resume, or in a new output_dir)."
        )
    for note in damaged:
        print_fn(f"--resume: skipping unreadable checkpoint {note}")
    if damaged:
        print_fn(f"--resume: falling back to the previous complete checkpoint {checkpoint}.")
    saved = state.get("recipe")
    source = f"checkpoint {checkpoint}"
    if saved is None and (Path(recipe.output_dir) / "recipe.yaml").is_file():
        saved, source = load_recipe_file(Path(recipe.output_dir) / "recipe.yaml"), str(Path(recipe.output_dir) / "recipe.yaml")
    if saved is not None:
        changed = check_resume_recipe(saved, recipe, source)
        for key, (old, new) in changed.items():
            if key != "output_dir":
                print_fn(f"--resume: {key} changed from {old!r} to {new!r} (allowed on resume).")
    return checkpoint


def load_checkpoint(checkpoint: str | os.PathLike, accelerator: Accelerator, model, optimizer, scheduler) -> int:
    """Load a `save_checkpoint` folder into the prepared model and optimiser, the scheduler, grad scaler and RNG;
    returns its step. Reads only `trainer_state.json`, the two safetensors files and this process's RNG JSON; any
    other file in the folder is ignored (never unpickled)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    checkpoint = Path(checkpoint)
    state = read_checkpoint_state(checkpoint)
    known = {STATE_FILE, MODEL_FILE, OPTIMIZER_FILE}
    ignored = sorted(p.name for p in checkpoint.iterdir() if p.name not in known and not p.name.startswith("rng_state_"))
    if ignored:
        accelerator.print(f"--resume: ignoring file(s) {', '.join(ignored)} in {checkpoint} (not part of the checkpoint format; never loaded).")
    inner_optimizer = getattr(optimizer, "optimizer", optimizer)
    model_state, _ = _load_tensors(checkpoint / MODEL_FILE)
    optimizer_tensors, metadata = _load_tensors(checkpoint / OPTIMIZER_FILE)
    try:
        rest = json.loads(metadata["trace_optimizer"])
    except (KeyError, json.JSONDecodeError) as err:
        raise DamagedCheckpointError(f"{checkpoint / OPTIMIZER_FILE} lacks readable 'trace_optimizer' metadata ({err}); "
                                     "the file is not the one save_checkpoint wrote.") from err
    optimizer_state = _unflatten_optimizer_state(optimizer_tensors, rest, inner_optimizer)
    options = _state_dict_options()
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(model, inner_optimizer, optimizer_state, options=options)
    scheduler.load_state_dict(state["scheduler"])
    if accelerator.scaler is not None and state.get("grad_scaler"):
        accelerator.scaler.load_state_dict(state["grad_scaler"])
    rng_file = checkpoint / RNG_FILE.format(rank=accelerator.process_index)
    if rng_file.is_file():
        _set_rng_state(json.loads(rng_file.read_text()))
    return int(state["global_step"])


def save_final(accelerator: Accelerator, model, output_dir: str | os.PathLike, tokenizer=None) -> Path:
    """`save_pretrained` into `<output_dir>/final` (state dict gathered for FSDP), plus tokenizer/processor files."""
    folder = Path(output_dir) / "final"
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)
    with _disk_errors(folder / "model.safetensors"):
        unwrapped.save_pretrained(
            folder, is_main_process=accelerator.is_main_process, save_function=accelerator.save, state_dict=state_dict
        )
    if accelerator.is_main_process and tokenizer is not None:
        try:
            from modeling_trace.processing_trace import TraceProcessor
        except ImportError:
            tokenizer.save_pretrained(folder)
        else:
            TraceProcessor.from_model(unwrapped, tokenizer=tokenizer).save_pretrained(folder)
    accelerator.wait_for_everyone()
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Stage 1 and stage 2
# ---------------------------------------------------------------------------------------------------------------


def _eval_rows(recipe: TrainingRecipe, eval_dataset):
    """The held-out rows the loop evaluates on: evenly spaced, at most `recipe.eval_max_samples`."""
    if eval_dataset is None or not recipe.eval_steps or len(eval_dataset) == 0:
        return None
    limit = recipe.eval_max_samples or len(eval_dataset)
    if len(eval_dataset) > limit:
        eval_dataset = eval_dataset.select(np.linspace(0, len(eval_dataset) - 1, limit).round().astype(int).tolist())
    return eval_dataset


def run_pretraining(
    recipe: PretrainRecipe,
    dataset,
    accelerator: Accelerator | None = None,
    resume=False,
    stop_at_step=None,
    eval_dataset=None,
):
    """Masked-reconstruction pretraining of `TraceForPretraining` on a schema dataset; saves `<output_dir>/final`.

    With `eval_dataset` and `recipe.eval_steps`, the masked-reconstruction loss on those rows (fixed masks, drawn
    once from the recipe's seed) is logged as `eval_loss`."""
    resume_checkpoint(recipe, resume, print_fn=lambda *_: None)  # a refused resume fails before any model is built
    accelerator = accelerator or build_accelerator(recipe, "pretrain")
    torch.manual_seed(recipe.seed)
    if is_checkpoint_folder(recipe.model):
        model = TraceForPretraining.from_pretrained(recipe.model, mask_ratio=recipe.mask_ratio, **recipe.model_overrides)
    else:
        model = TraceForPretraining(build_time_series_config(recipe, mask_ratio=recipe.mask_ratio))
    config = model.config
    dataset = align_dataset_channels(dataset, config.channel_names)
    if eval_dataset is not None:
        eval_dataset = align_dataset_channels(eval_dataset, config.channel_names)
    collator = TraceDataCollator(config.context_length, config.num_input_channels)
    get_batch = series_batches(collator, dataset)

    def compute_loss(model, batch):
        outputs = model(past_values=batch["past_values"], past_observed_mask=batch["past_observed_mask"])
        return outputs.loss, {}

    evaluate = None
    held_out = _eval_rows(recipe, eval_dataset)
    if held_out is not None:
        eval_columns = held_out.select_columns(["past_values"])
        eval_batches = [
            collator([eval_columns[i] for i in range(start, min(start + 64, len(held_out)))])
            for start in range(0, len(held_out), 64)
        ]

        def evaluate(model):
            # the same masks at every evaluation (a generator seeded from the recipe): the curve compares like with like
            generator = torch.Generator(device=accelerator.device).manual_seed(recipe.seed)
            total, count = 0.0, 0
            for batch in eval_batches:
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                outputs = model(
                    past_values=batch["past_values"],
                    past_observed_mask=batch["past_observed_mask"],
                    mask_patches=True,
                    generator=generator,
                )
                total += float(outputs.loss) * len(batch["past_values"])
                count += len(batch["past_values"])
            return {"loss": total / max(count, 1)}

    result = train_loop(
        recipe, accelerator, model, len(dataset), get_batch, compute_loss, "pretrain", resume, stop_at_step, evaluate
    )
    if result["summary"]["completed"]:
        result["final_dir"] = save_final(accelerator, result["model"], recipe.output_dir)
    accelerator.end_training()  # also destroys the process group: last
    return result


def build_alignment_model(recipe: AlignRecipe) -> TraceModel:
    """A `TraceModel` from the recipe: the encoder from a stage-1 checkpoint folder or a preset, the text tower from
    `recipe.text_model` (None = offline all-MiniLM-L6-v2)."""
    stage_values = dict(num_hard_negatives=recipe.num_hard_negatives, channel_loss_weight=recipe.channel_loss_weight)
    if is_checkpoint_folder(recipe.model):
        source = recipe.model
        overrides = {**recipe.model_overrides, **stage_values}
    else:
        source = build_time_series_config(recipe, **stage_values)
        overrides = {}
    model = TraceModel.from_time_series_text_pretrained(source, recipe.text_model, **overrides)
    # The mask token only serves masked reconstruction; frozen here so DDP sees no unused trainable parameter.
    model.time_series_model.embeddings.mask_token.requires_grad_(False)
    return model


def run_alignment(
    recipe: AlignRecipe,
    dataset,
    accelerator: Accelerator | None = None,
    resume=False,
    stop_at_step=None,
    eval_dataset=None,
):
    """Dual-level contrastive alignment of `TraceModel` on rows with a sample text; saves `<output_dir>/final`.

    Texts are encoded once by the frozen tower (main process first, cached on disk), then only cached sentence
    embeddings enter training. Each logged step also records the geometry of the batch's embeddings
    (`ts_mean_cosine`, `ts_mean_norm`, `text_...`, see `embedding_geometry`) and the temperature (`logit_scale`,
    exponentiated). With `eval_dataset` and `recipe.eval_steps`, the same loss and geometry on those rows (one batch
    of at most `eval_max_samples`) are logged with an `eval_` prefix.
    """
    resume_checkpoint(recipe, resume, print_fn=lambda *_: None)  # a refused resume fails before the text cache is built
    accelerator = accelerator or build_accelerator(recipe, "align")
    torch.manual_seed(recipe.seed)
    model = build_alignment_model(recipe)
    tokenizer = model.tokenizer
    config = model.config
    dataset = dataset.filter(lambda row: bool(str(row["text"] or "").strip()), desc="rows with a sample text")
    dataset = align_dataset_channels(dataset, config.channel_names)  # before the channel texts are cached
    if eval_dataset is not None:
        eval_dataset = align_dataset_channels(eval_dataset, config.channel_names)
    cache_dir = recipe.text_cache_dir or str(Path(recipe.output_dir) / "text_cache")
    with accelerator.main_process_first():
        cache, cache_path, cached = build_text_embedding_cache(
            model, tokenizer, dataset, config.num_input_channels, cache_dir, recipe.text_batch_size
        )
    accelerator.print(f"Text embeddings {'loaded from' if cached else 'written to'} {cache_path}.")
    collator = TraceDataCollator(config.context_length, config.num_input_channels)
    series = series_batches(collator, dataset)

    def get_batch(indices):
        return {**series(indices), **text_embedding_batch(cache, indices)}

    unwrapped = {}  # the prepared model -> the TraceModel inside (unwrap_model walks every module: once)

    def compute_loss(model, batch, return_outputs=False):
        # The loss reads the pooled outputs only: the encoder's last layer skips the patch tokens.
        outputs = model(**batch, return_loss=False, output_patch_embeddings=False)
        core = unwrapped.get(id(model))
        if core is None:
            core = unwrapped[id(model)] = accelerator.unwrap_model(model)
        loss, sample_loss, channel_loss = alignment_loss(core, outputs, batch["channel_text_mask"])
        logs = {
            "sample_loss": sample_loss.detach(),
            "logit_scale": core.logit_scale.detach().exp(),
            **embedding_geometry(outputs.time_series_embeds, "ts"),
            **embedding_geometry(outputs.text_embeds, "text"),
        }
        if channel_loss is not None:
            logs["channel_loss"] = channel_loss.detach()
        return (loss, logs, outputs) if return_outputs else (loss, logs)

    evaluate = None
    held_out = _eval_rows(recipe, eval_dataset)
    if held_out is not None:
        held_out = held_out.filter(lambda row: bool(str(row["text"] or "").strip()), desc="held-out rows with a text")
    if held_out is not None and len(held_out) >= 2:
        with accelerator.main_process_first():
            eval_cache, _, _ = build_text_embedding_cache(
                model, tokenizer, held_out, config.num_input_channels, cache_dir, recipe.text_batch_size
            )
        # Each process embeds its own contiguous share and the loss gathers them, so every process sees the whole
        # held-out set once (rows beyond a multiple of the process count are left out).
        share = len(held_out) // accelerator.num_processes
        rows = range(accelerator.process_index * share, (accelerator.process_index + 1) * share)
        eval_batch = {
            **collator([held_out.select_columns(["past_values"])[i] for i in rows]),
            **text_embedding_batch(eval_cache, list(rows)),
        }

        def evaluate(model):
            batch = {k: v.to(accelerator.device) for k, v in eval_batch.items()}
            loss, logs, outputs = compute_loss(model, batch, return_outputs=True)
            return {
                "loss": loss,
                **{k: v for k, v in logs.items() if k != "logit_scale"},
                **pair_retrieval_mrr(outputs.time_series_embeds, outputs.text_embeds),
            }

    result = train_loop(
        recipe, accelerator, model, len(dataset), get_batch, compute_loss, "align", resume, stop_at_step, evaluate
    )
    if result["summary"]["completed"]:
        result["final_dir"] = save_final(accelerator, result["model"], recipe.output_dir, tokenizer)
    accelerator.end_training()  # also destroys the process group: last
    return result
