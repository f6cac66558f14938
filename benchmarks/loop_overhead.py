"""Training-loop overhead: seconds per optimiser step of the project's loops against the bare model step (issue 14).

    python -m benchmarks.loop_overhead [--steps 40] [--rounds 3] [--second-job]

For each loop, in one process and interleaved round by round (bare, loop, bare, loop, ...):

- **pretraining**: `trace_training.loops.run_pretraining` (as `benchmarks/table4_classification.py` calls it) on the
  UCR GunPoint training split, trace-tiny sized to it, batch 32, against the bare step: one collated batch,
  `TraceForPretraining` forward + backward + `torch.optim.AdamW.step` + `zero_grad`;
- **alignment**: `trace_training.loops.run_alignment` on the Time-MMD Energy retrieval windows (48 steps, their
  search texts), trace-tiny + the frozen all-MiniLM-L6-v2, batch 32, against the bare step: one collated batch with
  its cached text embeddings, `TraceModel` forward + `alignment_loss` + backward + AdamW (the text cache, shared by
  the rounds, is set-up in both);
- **finetuning**: `trace_training.finetuning.build_trainer(...).train()` (transformers `Trainer`, full
  finetuning; the training set collated once, `CollatedRows`) of `TraceForClassification` on the GunPoint split,
  batch 16, against its bare step.

The loop's figure is its own `seconds` (the stepping loop: batches, forward/backward, clipping, optimiser and
scheduler, logging; not the model construction before it; for the Trainer, from its `on_train_begin` callback to
`on_train_end`, the same span) divided by the steps, and, in the `with set-up` column,
the whole call's wall time divided by the steps. `--second-job` runs a competing matrix-multiply
process for the whole measurement (a second job on a 2-core machine; `--second-job-threads 2`: one that, like the
measured loops, uses every core). The ratio column is the median of the per-round
ratios loop / bare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

SECOND_JOB = (
    "import sys, torch, time\n"
    "torch.set_num_threads(int(sys.argv[1]))\n"
    "a = torch.randn(512, 512)\n"
    "while True:\n"
    "    a = torch.tanh(a @ a)\n"
)


# what the pretraining and alignment benchmark recipes share
STAGE_VALUES = dict(
    seed=0, global_batch_size=32, learning_rate=1e-3, mixed_precision="no", report_to="none", logging_steps=10,
    save_steps=None,
)  # fmt: skip


def _time_bare_steps(model, loss_fn, steps: int) -> float:
    """Seconds per bare step: `loss_fn(model)` forward, backward, AdamW over the trainable parameters, zero_grad."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    started = time.perf_counter()
    for _ in range(steps):
        loss_fn(model).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / steps


def _time_stage_loop(run, recipe, train, steps: int) -> tuple[float, float]:
    """(stepping seconds per step, whole call per step) of a library stage loop (`run_pretraining` / `run_alignment`)."""
    from benchmarks import harness

    started = time.perf_counter()
    with harness._silenced():
        result = run(recipe, train)
    return result["summary"]["seconds"] / steps, (time.perf_counter() - started) / steps


def _pretrain_recipe(out: Path, steps: int, length: int):
    from trace_training import PretrainRecipe

    return PretrainRecipe(
        model="trace-tiny",
        model_overrides={"num_input_channels": 1, "channel_names": None, "context_length": length},
        output_dir=str(out),
        max_steps=steps,
        **STAGE_VALUES,
    ).validate()


def bare_pretrain(recipe, train, steps: int) -> float:
    from modeling_trace.data_collator import TraceDataCollator
    from modeling_trace.modeling_trace import TraceForPretraining
    from trace_training.loops import build_time_series_config

    torch.manual_seed(0)
    model = TraceForPretraining(build_time_series_config(recipe, mask_ratio=recipe.mask_ratio)).train()
    config = model.config
    batch = TraceDataCollator(config.context_length, config.num_input_channels)([train[i] for i in range(32)])
    return _time_bare_steps(
        model, lambda m: m(past_values=batch["past_values"], past_observed_mask=batch["past_observed_mask"]).loss, steps
    )


def loop_pretrain(recipe, train, steps: int) -> tuple[float, float]:
    from trace_training.loops import run_pretraining

    return _time_stage_loop(run_pretraining, recipe, train, steps)


def _finetune_recipe(out: Path, steps: int, length: int):
    from trace_training import FinetuneRecipe

    return FinetuneRecipe(
        task="classification",
        mode="full",
        model="trace-tiny",
        model_overrides={"num_input_channels": 1, "channel_names": None, "context_length": length, "dropout": 0.0},
        output_dir=str(out),
        seed=0,
        max_steps=steps,
        global_batch_size=16,
        learning_rate=1e-3,
        logging_steps=10_000,
        mixed_precision="no",
        report_to="none",
    ).validate()


def bare_finetune(recipe, train, steps: int, num_labels: int) -> float:
    from modeling_trace.data_collator import TraceDataCollator
    from trace_training.finetuning import build_finetune_model

    torch.manual_seed(0)
    model = build_finetune_model(recipe, num_labels=num_labels, id2label={i: str(i) for i in range(num_labels)}).train()
    config = model.config
    rows = [train[i] for i in range(16)]
    batch = TraceDataCollator(config.context_length, config.num_input_channels)(rows)
    labels = torch.tensor([row["label"] for row in rows])
    return _time_bare_steps(
        model,
        lambda m: m(past_values=batch["past_values"], past_observed_mask=batch["past_observed_mask"], labels=labels).loss,
        steps,
    )


def _stepping_timer():
    """A `TrainerCallback` timing the Trainer's stepping loop as the stage loops time theirs: from `on_train_begin`
    (after the Trainer's set-up: accelerator preparation, dataloader) to `on_train_end`. Its `train_runtime` metric
    starts at `train()` itself, set-up included."""
    from transformers import TrainerCallback

    class SteppingTimer(TrainerCallback):
        seconds = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.started

    return SteppingTimer()


def loop_finetune(recipe, train, steps: int, num_labels: int) -> tuple[float, float]:
    from benchmarks import harness
    from trace_training.finetuning import build_finetune_model, build_trainer

    started = time.perf_counter()
    torch.manual_seed(0)
    model = build_finetune_model(recipe, num_labels=num_labels, id2label={i: str(i) for i in range(num_labels)})
    timer = _stepping_timer()
    with harness._silenced():
        trainer = build_trainer(recipe, model, train)
        trainer.add_callback(timer)
        trainer.train()
    return timer.seconds / steps, (time.perf_counter() - started) / steps


def _align_recipe(out: Path, steps: int, cache: Path):
    from trace_training import AlignRecipe

    return AlignRecipe(
        model="trace-tiny",
        model_overrides={"num_input_channels": 1, "channel_names": ["OT"], "context_length": 48},
        output_dir=str(out),
        text_cache_dir=str(cache),  # shared by the rounds: the text tower encodes the texts once
        max_steps=steps,
        **STAGE_VALUES,
    ).validate()


def bare_align(recipe, train, steps: int) -> float:
    from modeling_trace.data_collator import TraceDataCollator, align_dataset_channels
    from trace_training.loops import alignment_loss, build_alignment_model
    from trace_training.text_cache import build_text_embedding_cache, text_embedding_batch

    torch.manual_seed(0)
    model = build_alignment_model(recipe).train()
    config = model.config
    rows = align_dataset_channels(train, config.channel_names)
    cache, _, _ = build_text_embedding_cache(model, model.tokenizer, rows, config.num_input_channels, recipe.text_cache_dir, recipe.text_batch_size)
    indices = list(range(32))
    batch = {
        **TraceDataCollator(config.context_length, config.num_input_channels)([rows[i] for i in indices]),
        **text_embedding_batch(cache, indices),
    }
    return _time_bare_steps(
        model, lambda m: alignment_loss(m, m(**batch, return_loss=False, output_patch_embeddings=False), batch["channel_text_mask"])[0], steps
    )


def loop_align(recipe, train, steps: int) -> tuple[float, float]:
    from trace_training.loops import run_alignment

    return _time_stage_loop(run_alignment, recipe, train, steps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--second-job", action="store_true", help="run a competing matmul process meanwhile")
    parser.add_argument(
        "--second-job-threads", type=int, default=1,
        help="torch threads of the second job (2 on a 2-core machine: two jobs that each take every core)",
    )  # fmt: skip
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    from benchmarks import harness
    from modeling_trace.tables import markdown_table
    from trace_datasets import timemmd
    from trace_datasets.ucr import load_ucr

    torch.set_num_threads(os.cpu_count() or 1)
    train = load_ucr("GunPoint", data_dir=args.data_dir)["train"]
    with harness._silenced():
        texts = timemmd.build("retrieval", ["Energy"], args.data_dir, input_length=48, stride=8, seed=0)["train"]
    length = len(train[0]["past_values"])
    num_labels = len(set(train["label"]))
    job = subprocess.Popen([sys.executable, "-c", SECOND_JOB, str(args.second_job_threads)]) if args.second_job else None
    results = {name: {"bare": [], "loop": [], "setup": []} for name in ("pretraining", "alignment", "finetuning (Trainer)")}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_index in range(args.rounds):
                out = Path(tmp) / f"r{round_index}"
                pre = _pretrain_recipe(out / "pretrain", args.steps, length)
                fine = _finetune_recipe(out / "finetune", args.steps, length)
                align = _align_recipe(out / "align", args.steps, Path(tmp) / "text-cache")
                measures = {
                    "pretraining": (partial(bare_pretrain, pre, train, args.steps), partial(loop_pretrain, pre, train, args.steps)),
                    "alignment": (partial(bare_align, align, texts, args.steps), partial(loop_align, align, texts, args.steps)),
                    "finetuning (Trainer)": (
                        partial(bare_finetune, fine, train, args.steps, num_labels),
                        partial(loop_finetune, fine, train, args.steps, num_labels),
                    ),
                }
                for name, (bare, loop) in measures.items():
                    if round_index % 2:
                        loop_s, setup_s = loop()
                        bare_s = bare()
                    else:
                        bare_s = bare()
                        loop_s, setup_s = loop()
                    results[name]["bare"].append(bare_s)
                    results[name]["loop"].append(loop_s)
                    results[name]["setup"].append(setup_s)
    finally:
        if job is not None:
            job.kill()
    load = os.getloadavg()
    print(
        f"GunPoint train ({len(train)} series x {length} steps; alignment: {len(texts)} Time-MMD Energy windows x 48 "
        f"steps with their texts), trace-tiny, {args.steps} steps x {args.rounds} rounds, "
        f"torch threads {torch.get_num_threads()}, second job: {f'{args.second_job_threads} thread(s)' if args.second_job else 'no'}; "
        f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    rows = []
    for name, values in results.items():
        ratios = [loop / bare for loop, bare in zip(values["loop"], values["bare"])]
        setup_ratios = [setup / bare for setup, bare in zip(values["setup"], values["bare"])]
        rows.append(
            [
                name,
                f"{statistics.median(values['bare']) * 1000:.1f}",
                f"{statistics.median(values['loop']) * 1000:.1f}",
                f"{statistics.median(ratios):.2f}x",
                f"{statistics.median(setup_ratios):.2f}x",
            ]
        )
    print(markdown_table(["loop", "bare step ms", "loop step ms", "loop / bare", "with set-up / bare"], rows, align="-rrrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
