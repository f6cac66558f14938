"""Retrieval-augmented forecasting experiments: TRACE RAG (TS-only / TS+Text / no-RAG), SERAF and its ablations.

Two commands, each printing Markdown tables of test MSE / MAE (standardised values: z-scored with training
statistics, as the papers report):

    # Time-MMD domain: a quick TRACE alignment on the domain's training split (trace-tiny, CPU), then RAG
    # TS-only vs TS+Text vs no-RAG (the same head on H_q alone), and SERAF with its ablations
    python -m benchmarks.rag_tables timemmd --domain Health_US --horizon 12

    # ETTh1 (12/4/4 split, input 720, horizon 96): SERAF vs a RAFT-style TS-only retrieval forecaster vs linear
    python -m benchmarks.rag_tables ett --name ETTh1

Every model trains with `transformers.Trainer` and stops early on the MSE of the set's validation split (evaluated
after every epoch; the best epoch's weights are kept), as long-term forecasting papers do; nothing is chosen on test.

The library does the work (`modeling_trace.modeling_rag`, `modeling_trace.modeling_seraf`, the retrieval index,
the describer, the builders); this file wires data, models and `transformers.Trainer` together.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import tempfile
import time
from multiprocessing import Pool

import numpy as np
import torch

from modeling_trace.metrics import forecasting_metrics
from modeling_trace.tables import markdown_table

logger = logging.getLogger("training.rag")


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------


class ListDataset(torch.utils.data.Dataset):
    """A list of feature dicts (tensors) for `Trainer`."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def trainer_fit(
    model, train_rows, collator, epochs: float, batch_size: int, learning_rate: float, seed: int, output_dir: str,
    eval_rows=None, patience: int | None = None,
) -> tuple[float, float | None]:
    """Train `model` with `transformers.Trainer` (AdamW, constant learning rate); returns `(epoch, validation loss)`.

    Without `eval_rows`: `epochs` epochs, no checkpoints; returns `(epochs, None)`. With `eval_rows` (validation
    windows): the loss on them after every epoch, training stops once it has not improved for `patience` epochs
    (`EarlyStoppingCallback`), at most `epochs`, and the weights of the best epoch are restored
    (`load_best_model_at_end`): the usual long-term forecasting protocol. Returns the best epoch and its loss.
    """
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

    validate = eval_rows is not None
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=256,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        eval_strategy="epoch" if validate else "no",
        save_strategy="epoch" if validate else "no",
        save_total_limit=1 if validate else None,
        load_best_model_at_end=validate,
        metric_for_best_model="loss" if validate else None,
        greater_is_better=False if validate else None,
        save_only_model=True,
        report_to=[],
        logging_strategy="no",
        disable_tqdm=True,
        seed=seed,
        use_cpu=True,
        label_names=["future_values"],
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    callbacks = [EarlyStoppingCallback(early_stopping_patience=patience)] if validate and patience else []
    trainer = Trainer(
        model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows, data_collator=collator,
        callbacks=callbacks,
    )
    trainer.train()
    if not validate:
        return float(epochs), None
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    best = min(evaluations, key=lambda entry: entry["eval_loss"])
    return float(best["epoch"]), float(best["eval_loss"])


@torch.no_grad()
def model_outputs(model, rows, collator, fields=("prediction_outputs",), batch_size: int = 256) -> dict[str, np.ndarray]:
    """`{"target": future values, field: output field for each of `fields`}` over `rows`, in eval mode."""
    model.eval()
    parts = {"target": [], **{field: [] for field in fields}}
    for start in range(0, len(rows), batch_size):
        batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        parts["target"].append(batch.pop("future_values").numpy())
        out = model(**batch)
        for field in fields:
            parts[field].append(getattr(out, field).numpy())
    return {key: np.concatenate(value) for key, value in parts.items()}


def predict(model, rows, collator, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Forecasts and targets of `rows`, in eval mode."""
    outputs = model_outputs(model, rows, collator, batch_size=batch_size)
    return outputs["prediction_outputs"], outputs["target"]


def results_table(title: str, results: dict[str, list[dict]]) -> str:
    """`title` in bold over a table with one row per model: mean ± std over seeds of MSE and MAE, and, when the
    runs record them, the learning rate chosen on validation and the best validation epoch of each seed."""
    chosen = all("learning_rate" in r for runs in results.values() for r in runs)
    epochs = all("epoch" in r for runs in results.values() for r in runs)
    rows = []
    for name, runs in results.items():
        mse = np.array([r["mse"] for r in runs])
        mae = np.array([r["mae"] for r in runs])
        spread = (lambda a: f" ± {a.std():.4f}") if len(runs) > 1 else (lambda a: "")
        row = [name, f"{mse.mean():.4f}{spread(mse)}", f"{mae.mean():.4f}{spread(mae)}", len(runs)]
        if epochs:
            row.insert(3, " / ".join(f"{r['epoch']:g}" for r in runs))
        if chosen:
            row.insert(3, f"{runs[0]['learning_rate']:g}")
        rows.append(row)
    header = ["model", "MSE", "MAE"] + ["lr (on validation)"] * chosen + ["best epoch (per seed)"] * epochs + ["seeds"]
    return f"**{title}**\n\n" + markdown_table(header, rows)


def seraf_collate(rows: list[dict]) -> dict:
    """Stack the tensors of `seraf_rows` rows into a batch."""
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def seraf_rows(values: np.ndarray, starts: np.ndarray, length: int, horizon: int, window_index, embeddings) -> list[dict]:
    """SERAF inputs of windows starting at `starts` of `values` (`(T, C)`)."""
    rows = []
    for k, s in enumerate(starts):
        row = {
            "past_values": torch.from_numpy(values[s : s + length]),
            "future_values": torch.from_numpy(values[s + length : s + length + horizon]),
            "window_index": torch.tensor(int(window_index[k])),
        }
        if embeddings is not None:
            row["description_embeds"] = torch.from_numpy(embeddings[k])
        rows.append(row)
    return rows


def _describe(args):
    from modeling_trace.modeling_seraf import describe_windows

    values, starts, freq = args
    return describe_windows(values, starts, freq)


def describe_parallel(windows: np.ndarray, starts, freq: str, processes: int = 2) -> list[str]:
    """`describe_windows` on `processes` workers (the Theil–Sen trend is the slow part on long windows)."""
    chunks = [(windows[i::processes], list(np.asarray(starts)[i::processes]), freq) for i in range(processes)]
    with Pool(processes) as pool:
        parts = pool.map(_describe, chunks)
    texts = [None] * len(windows)
    for i, part in enumerate(parts):
        texts[i::processes] = part
    return texts


def seraf_variants() -> dict[str, dict]:
    """The SERAF ablations: table name -> `SerafConfig` overrides."""
    return {
        "SERAF (full)": {},
        "SERAF w/o text": {"use_text": False},
        "SERAF w/o gate": {"use_gate": False},
        "SERAF w/o learned weight (w=0.5)": {"learn_fusion_weight": False},
    }


def run_seraf(
    name, overrides, series_train, freq, start_timestamp, db_embeddings, train_rows_fn, test_rows, args, seed, tmp,
    length, horizon, channels, validation_rows=None, learning_rate=None,
):
    """Train one SERAF variant (`overrides` of `SerafConfig`) with `seed`; returns `(test MSE / MAE, the model)`.

    `learning_rate` defaults to the first `--seraf-learning-rate`. With `validation_rows`, training stops early on
    their MSE and the best epoch's weights are kept (`trainer_fit`); the metrics then also hold that `epoch` and its
    `validation_mse`."""
    from modeling_trace.modeling_seraf import SerafConfig, SerafForForecasting

    torch.manual_seed(seed)
    config = SerafConfig(
        num_input_channels=channels, context_length=length, prediction_length=horizon, top_k=args.seraf_top_k,
        normalization_eps=args.seraf_normalization_eps, **overrides,
    )
    model = SerafForForecasting(config)
    if config.use_retrieval:
        model.set_database(
            series_train, start_timestamp, freq, description_embeddings=db_embeddings if config.use_text else None
        )
    use_text = config.use_retrieval and config.use_text
    train_rows = train_rows_fn(use_text)
    strip = lambda rows: rows if use_text else [{k: v for k, v in r.items() if k != "description_embeds"} for r in rows]  # noqa: E731
    learning_rate = args.seraf_learning_rate[0] if learning_rate is None else learning_rate
    epoch, validation_mse = trainer_fit(
        model, train_rows, seraf_collate, args.seraf_epochs, args.batch_size, learning_rate, seed, tmp,
        eval_rows=None if validation_rows is None else strip(validation_rows), patience=args.seraf_patience,
    )
    metrics = forecasting_metrics(*predict(model, strip(test_rows), seraf_collate))
    if validation_rows is not None:
        metrics.update(epoch=epoch, validation_mse=validation_mse)
    return metrics, model


def retrieval_forecasts(model, rows) -> dict[str, np.ndarray]:
    """`{"target", "prediction_outputs", "time_series_forecast", "text_forecast", "gate"}` over `rows` (SERAF inputs
    with descriptions): the targets, the forecasts, what each retrieval alone forecasts (the retrieved windows'
    kernel-weighted futures in the query's scale; no trained weight enters them) and the gate β. Rows that carry
    their database `window_index` (training windows) get the training-time exclusion of overlapping windows."""
    fields = ("prediction_outputs", "time_series_forecast", "text_forecast", "gate")
    return model_outputs(model, rows, seraf_collate, fields)


def retrieval_figure(path: str, past: np.ndarray, forecasts: dict[str, np.ndarray], channel: int, title: str) -> None:
    """One query's last 2H input steps of `channel`, its future and each forecast in `forecasts` (label -> (H, C))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    horizon = len(next(iter(forecasts.values())))
    shown = past[-2 * horizon :, channel]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.plot(np.arange(-len(shown), 0), shown, color="black", linewidth=1.0, label="input (last 2H steps)")
    for label, forecast in forecasts.items():
        style = {"color": "black", "linewidth": 1.6} if label == "actual future" else {"linewidth": 1.0}
        ax.plot(np.arange(horizon), forecast[:, channel], label=label, **style)
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("step (0 = first forecast step)")
    ax.set_ylabel("standardised value")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# Time-MMD: TRACE RAG and SERAF
# ----------------------------------------------------------------------------------------------------------------


def align_trace(train, args, input_length: int, output_dir: str):
    """Quick contrastive alignment of trace-tiny with the frozen all-MiniLM-L6-v2 on the (window, text) pairs
    of `train`, by the library's stage-2 loop (`run_alignment`), `args.align_epochs` epochs."""
    from modeling_trace import TraceModel
    from trace_training import AlignRecipe
    from trace_training.loops import run_alignment

    paired = train.filter(lambda row: bool(row["text"].strip()))
    steps = max(1, args.align_epochs * (len(paired) // args.align_batch_size))
    recipe = AlignRecipe(
        model="trace-tiny", output_dir=output_dir, seed=args.seed, max_steps=steps,
        model_overrides={"num_input_channels": 1, "context_length": input_length, "channel_names": None, "dropout": 0.1},
        global_batch_size=args.align_batch_size, learning_rate=args.align_learning_rate, mixed_precision="no",
        report_to="none", logging_steps=max(1, steps // 5), save_steps=None,
    ).validate()  # fmt: skip
    began = time.time()
    result = run_alignment(recipe, paired)
    logger.info("aligned trace-tiny on %d pairs, %d steps, %.0f s", len(paired), steps, time.time() - began)
    model = TraceModel.from_pretrained(result["final_dir"]).eval()
    model._get_tokenizer()  # read now: the caller removes `output_dir`
    return model, len(paired), time.time() - began


def run_timemmd(args) -> str:
    """The `timemmd` command: TRACE RAG variants and SERAF ablations on one domain; returns the Markdown report."""
    from modeling_trace import TraceForRetrievalAugmentedForecasting
    from modeling_trace.modeling_rag import RetrievalForecastingCollator, window_positions
    from modeling_trace.modeling_seraf import SentenceEmbedder
    from trace_datasets.timemmd import DOMAIN_SETTINGS, build, load_statistics, read_numeric, split_bounds, standardize

    began = time.time()
    domain, horizon = args.domain, args.horizon
    freq, length = DOMAIN_SETTINGS[domain].freq, DOMAIN_SETTINGS[domain].input_length
    dd = build("forecasting", domains=[domain], data_dir=args.data_dir, horizon=horizon, text_source=args.text_source)
    stats = load_statistics(dd["train"])
    splits = {k: standardize(dd[k], stats) for k in ("train", "validation", "test")}
    for split in splits:
        for name, values in window_positions(splits[split]).items():
            splits[split] = splits[split].add_column(name, values.tolist())
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    if args.encoder:
        # an aligned TraceModel folder (e.g. a Table 1 `--budget mini` encoder); its context may exceed the domain's
        # input length (shorter windows are left-padded as unobserved)
        from modeling_trace import TraceModel

        trace = TraceModel.from_pretrained(args.encoder).eval()
        encoder_line = f"TRACE encoder: `{args.encoder}` (context {trace.config.context_length}), frozen."
    else:
        with tempfile.TemporaryDirectory(prefix="rag_align_") as alignment_dir:
            trace, num_pairs, align_seconds = align_trace(train, args, length, alignment_dir)
        encoder_line = (
            f"TRACE encoder: trace-tiny aligned with frozen all-MiniLM-L6-v2 on {num_pairs} training (window, "
            f"{args.text_source}-file text) pairs for {args.align_epochs} epochs by `run_alignment` ({align_seconds:.0f} s wall)."
        )

    # -- TRACE RAG ------------------------------------------------------------------------------------------
    rag = {"no-RAG (head on H_q)": [], "RAG TS-only": [], "RAG TS+Text": []}
    variants = {"no-RAG (head on H_q)": ("ts", False), "RAG TS-only": ("ts", True), "RAG TS+Text": ("ts_text", True)}
    indexes = {}
    train_rows = [train[i] for i in range(len(train))]
    validation_rows = [validation[i] for i in range(len(validation))]
    test_rows = [test[i] for i in range(len(test))]
    first = {}  # seed 0's model and collator of each variant
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for name, (mode, use_retrieval) in variants.items():
                torch.manual_seed(seed)
                model = TraceForRetrievalAugmentedForecasting.from_trace_model(
                    trace, prediction_length=horizon, num_retrieved=args.num_retrieved, rag_prompt_mode=mode, dropout=0.1
                )
                if mode not in indexes:
                    indexes[mode] = model.build_retrieval_index(train)
                model.set_retrieval_index(indexes[mode])
                collator = RetrievalForecastingCollator(model.config, use_retrieval=use_retrieval)
                epoch, _ = trainer_fit(
                    model, train_rows, collator, args.rag_epochs, args.batch_size, args.rag_learning_rate, seed, tmp,
                    eval_rows=validation_rows, patience=args.rag_patience,
                )  # fmt: skip
                rag[name].append({**forecasting_metrics(*predict(model, test_rows, collator)), "epoch": epoch})
                first.setdefault(name, (model, collator))
                logger.info("%s seed %d: %s", name, seed, rag[name][-1])
        neighbours = rag_neighbours(args, first, train_rows, test_rows, test)

        # -- SERAF on the same domain -----------------------------------------------------------------------
        if args.no_seraf:
            return "\n\n".join([_timemmd_header(args, length, splits, None, encoder_line, began),
                                  results_table("TRACE retrieval-augmented forecasting", rag), *neighbours])
        frame = read_numeric(domain, args.data_dir, "OT")
        lo, hi = split_bounds(len(frame))["train"]
        mean, std = stats[domain]["OT"]["mean"], stats[domain]["OT"]["std"]
        series = ((frame["OT"].to_numpy(np.float32) - mean) / std)[:, None]
        series_train = series[lo:hi]
        start_timestamp = frame.index[lo].strftime("%Y-%m-%dT%H:%M:%S")
        size = hi - lo - length - horizon + 1
        embedder = SentenceEmbedder()
        db_starts = frame.index[lo : lo + size].strftime("%Y-%m-%dT%H:%M:%S")
        db_windows = np.stack([series_train[s : s + length] for s in range(size)])
        db_embeddings = embedder.encode(describe_parallel(db_windows, db_starts, freq))
        held_out = {}  # validation and test windows, their histories inside their own split (as the builder's)
        for split in ("validation", "test"):
            s_lo, s_hi = split_bounds(len(frame))[split]
            starts = np.arange(s_lo, s_hi - length - horizon + 1)
            texts = describe_parallel(
                np.stack([series[s : s + length] for s in starts]), frame.index[starts].strftime("%Y-%m-%dT%H:%M:%S"), freq
            )
            held_out[split] = seraf_rows(series, starts, length, horizon, -np.ones(len(starts)), embedder.encode(texts))
        seraf_test = held_out["test"]

        def train_rows_fn(use_text):
            return seraf_rows(series_train, np.arange(size), length, horizon, np.arange(size), db_embeddings if use_text else None)

        seraf = {name: [] for name in seraf_variants()}
        seraf["linear (no retrieval)"] = []
        for seed in range(args.seeds):
            for name, overrides in list(seraf_variants().items()) + [("linear (no retrieval)", {"use_retrieval": False})]:
                seraf[name].append(
                    run_seraf(name, overrides, series_train, freq, start_timestamp, db_embeddings, train_rows_fn, seraf_test,
                              args, seed, tmp, length, horizon, 1, held_out["validation"])[0]
                )
                logger.info("%s seed %d: %s", name, seed, seraf[name][-1])

    header = _timemmd_header(args, length, splits, len(seraf_test), encoder_line, began)
    tables = [results_table("TRACE retrieval-augmented forecasting", rag), *neighbours, results_table("SERAF ablations", seraf)]
    return "\n\n".join([header, *tables])


def stacked(rows, key: str) -> np.ndarray:
    """`rows`' `key` arrays (`past_values` / `future_values`) as one float32 array `(rows, T, C)`."""
    return np.stack([np.asarray(row[key], dtype=np.float32) for row in rows])


def neighbour_forecasts(corpus_past, corpus_future, query_past, indices: np.ndarray) -> np.ndarray:
    """What each retrieved pair forecasts on its own, with no trained weight: `(queries, R, H, C)`, the futures
    `corpus_future` of the corpus windows `indices` `(queries, R)`, each moved from its own history's (`corpus_past`)
    level and spread to its query's (`query_past`; RevIN's z-score statistics over the observed points,
    `zscore_statistics`)."""
    from modeling_trace.modeling_trace import zscore_statistics

    corpus_loc, corpus_scale = zscore_statistics(corpus_past, dim=1, eps=1e-5)  # (N, 1, C)
    query_loc, query_scale = zscore_statistics(query_past, dim=1, eps=1e-5)  # (n, 1, C)
    moved = (corpus_future[indices] - corpus_loc[indices]) / corpus_scale[indices]  # (n, R, H, C)
    return moved * query_scale[:, None] + query_loc[:, None]


def mean_future(moved: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The mean over the R retrieved futures `(queries, R, H, C)` (NaN points skipped; the query's `level` where all
    R are missing): the retrieved pairs' forecast with no trained weight."""
    observed = ~np.isnan(moved)
    total = np.where(observed, moved, 0.0).sum(axis=1)
    return np.where(observed.any(axis=1), total / np.maximum(observed.sum(axis=1), 1), level)


def raw_window_neighbours(corpus_past: np.ndarray, query_past: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """`(queries, k)` indices of the corpus windows nearest to each query by Euclidean distance between the
    z-normalised raw histories `(windows, T, C)` (each window and channel z-scored over time, missing points at 0):
    RAFT's retrieval key, with no model, for comparison with TRACE's embedding search."""
    from modeling_trace.modeling_trace import zscore_statistics

    def normalised(past):
        loc, scale = zscore_statistics(past, dim=1, eps=1e-5)
        return np.nan_to_num((past - loc) / scale).reshape(len(past), -1).astype(np.float32)

    corpus, queries = normalised(corpus_past), normalised(query_past)
    corpus_norms = (corpus**2).sum(axis=1)
    out = []
    for begin in range(0, len(queries), chunk):
        block = queries[begin : begin + chunk]
        distances = corpus_norms[None, :] - 2.0 * block @ corpus.T  # + |q|², the same for every corpus row
        out.append(np.argsort(distances, axis=1, kind="stable")[:, :k])
    return np.concatenate(out)


def rag_neighbours(args, first: dict, train_rows, test_rows, test) -> list[str]:
    """What TRACE's retrievals bring, from seed 0's models: the mean of the R retrieved training pairs' futures (each
    in its query's scale) as a forecast on every test window, beside the query history's own level and the trained
    forecasts; and, with `--figure-dir`, one test query with its R neighbours' futures."""
    from modeling_trace.modeling_trace import zscore_statistics

    past = stacked(test_rows, "past_values")
    train_past, train_future = stacked(train_rows, "past_values"), stacked(train_rows, "future_values")
    level = zscore_statistics(past, dim=1)[0].astype(np.float32)  # (n, 1, C)
    rows, forecasts = [], {}
    for name, (model, collator) in first.items():
        outputs = model_outputs(model, test_rows, collator, fields=("prediction_outputs",)
                                + (("retrieved_indices", "retrieved_scores") if collator.use_retrieval else ()))  # fmt: skip
        target = outputs["target"]
        forecasts[name] = outputs["prediction_outputs"]
        rows.append([f"{name}: the trained forecast", *_mse_mae(outputs["prediction_outputs"], target)])
        if collator.use_retrieval:
            moved = neighbour_forecasts(train_past, train_future, past, outputs["retrieved_indices"])
            forecasts[f"{name}: retrieved futures"] = (moved, outputs["retrieved_scores"])
            rows.append([f"{name}: mean of its {moved.shape[1]} retrieved futures", *_mse_mae(mean_future(moved, level), target)])
    # The same R-futures forecast with other retrieval keys and no model: the RAFT-style key (z-normalised raw
    # windows, Euclidean) and R training windows drawn at random (seed 0), to tell a key without signal from a corpus
    # without it.
    for label, indices in (
        ("z-normalised raw windows, Euclidean (RAFT-style key)", raw_window_neighbours(train_past, past, args.num_retrieved)),
        ("drawn at random", np.random.default_rng(0).integers(0, len(train_rows), size=(len(test_rows), args.num_retrieved))),
    ):
        moved = neighbour_forecasts(train_past, train_future, past, indices)
        rows.append([f"mean of {args.num_retrieved} training futures {label}", *_mse_mae(mean_future(moved, level), target)])
    rows.append(["the query history's mean, repeated", *_mse_mae(np.broadcast_to(level, target.shape), target)])
    lines = [
        f"**{args.domain} (H={args.horizon}): what the retrievals bring (seed-0 models, {len(test_rows)} test windows; "
        "retrieved futures moved to the query's level and spread)**\n\n"
        + markdown_table(["forecast", "test MSE", "test MAE"], rows)
    ]
    if args.figure_dir:
        query = len(test_rows) // 2
        moved, scores = forecasts.pop("RAG TS+Text: retrieved futures")
        forecasts.pop("RAG TS-only: retrieved futures", None)
        shown = {"actual future": target[query], **{name: value[query] for name, value in forecasts.items()}}
        for k in range(moved.shape[1]):
            shown[f"TS+Text neighbour {k + 1} (cosine {scores[query, k]:.2f})"] = moved[query, k]
        os.makedirs(args.figure_dir, exist_ok=True)
        figure = os.path.join(args.figure_dir, f"rag_{args.domain}_H{args.horizon}.png")
        retrieval_figure(figure, past[query], shown, 0,
                         f"{args.domain} test window {query} (starts {test[query]['start_timestamp'][:10]}), H={args.horizon}; "
                         "seed-0 models and the TS+Text model's retrieved futures")  # fmt: skip
        lines.append(f"Figure: `{figure}` (test window {query}).")
    return lines


def _mse_mae(prediction, target) -> list[str]:
    metrics = forecasting_metrics(prediction, target)
    return [f"{metrics['mse']:.4f}", f"{metrics['mae']:.4f}"]


def _timemmd_header(args, length, splits, seraf_windows, encoder_line, began) -> str:
    seraf = "" if seraf_windows is None else f" (SERAF test windows {seraf_windows})"
    return (
        f"Time-MMD {args.domain}, univariate OT, input {length}, horizon {args.horizon}; train/validation/test windows "
        f"{'/'.join(str(len(splits[k])) for k in ('train', 'validation', 'test'))}{seraf}; MSE/MAE on "
        f"training-standardised values; mean ± std over {args.seeds} seeds. {encoder_line} RAG: R={args.num_retrieved}, "
        f"at most {args.rag_epochs:g} epochs, stopped early on the validation MSE (patience {args.rag_patience}) with "
        "the best epoch's weights kept"
        + ("" if seraf_windows is None else f"; SERAF: K={args.seraf_top_k}, τ=0.1, lr {args.seraf_learning_rate[0]:g}, "
           f"at most {args.seraf_epochs:g} epochs, the same early stopping (patience {args.seraf_patience})")
        + f". Total {time.time() - began:.0f} s."
    )


# ----------------------------------------------------------------------------------------------------------------
# ETTh1: SERAF vs RAFT-style vs linear
# ----------------------------------------------------------------------------------------------------------------


def run_ett(args) -> str:
    """The `ett` command: SERAF vs RAFT-style vs linear on an ETT set at each of `args.horizons`, and their average
    over the horizons (the paper's summary figure); returns the Markdown report.

    The descriptions of every stride-1 input window of the training and test splits are embedded once (cached in
    `--cache-dir` per set and input length) and serve every horizon: a horizon H uses the windows whose future of H
    steps lies in the split, a prefix of them."""
    from modeling_trace.modeling_seraf import SentenceEmbedder
    from trace_datasets.ett import load_ett_standardized

    began = time.time()
    length, freq = args.input_length, "1h"
    learning_rates = " / ".join(f"{rate:g}" for rate in args.seraf_learning_rate)
    if len(args.seraf_learning_rate) > 1:
        learning_rates += ", each model's chosen per horizon on the validation MSE of seed 0"
    frames, _ = load_ett_standardized(args.name, args.data_dir, history_length=length)
    train_frame, test_frame = frames["train"], frames["test"]
    # writable copies: torch.from_numpy takes views of them
    series = {split: frame.to_numpy(np.float32, copy=True) for split, frame in frames.items()}
    series_train, series_test = series["train"], series["test"]
    channels = series_train.shape[1]
    stamp = lambda index: index.strftime("%Y-%m-%dT%H:%M:%S")  # noqa: E731
    inputs = {split: len(values) - length + 1 for split, values in series.items()}  # input windows, any horizon
    all_train, all_test = inputs["train"], inputs["test"]

    # one cache entry per split ("database" = the training windows); entries missing from the file are added
    keys = {"train": "database", "validation": "validation", "test": "test"}
    cache = os.path.join(args.cache_dir, f"seraf_{args.name}_L{length}_descriptions.npz") if args.cache_dir else None
    embeddings = dict(np.load(cache)) if cache and os.path.isfile(cache) else {}
    missing = [split for split in keys if keys[split] not in embeddings]
    described = "loaded from cache"
    if missing:
        t0 = time.time()
        embedder = SentenceEmbedder()
        for split in missing:
            windows = np.lib.stride_tricks.sliding_window_view(series[split], length, axis=0).transpose(0, 2, 1)
            starts = stamp(frames[split].index[: inputs[split]])
            embeddings[keys[split]] = embedder.encode(describe_parallel(windows, starts, freq))
        described = f"{time.time() - t0:.0f} s" + ("" if len(missing) == 3 else f" ({', '.join(missing)}; the rest cached)")
        if cache:
            os.makedirs(args.cache_dir, exist_ok=True)
            np.savez(cache, **embeddings)
    for split, key in keys.items():
        if len(embeddings[key]) != inputs[split]:
            raise ValueError(f"{cache} holds embeddings of other windows; remove it to embed the descriptions again.")
    db_embeddings, validation_embeddings, test_embeddings = (embeddings[keys[s]] for s in ("train", "validation", "test"))

    models = {
        "SERAF (full)": {},
        "RAFT-style (TS retrieval only: w/o text, w/o gate)": {"use_text": False, "use_gate": False},
        "Linear (no retrieval)": {"use_retrieval": False},
    }
    if args.ablations:  # SERAF's own ablations (w/o text, w/o gate, fixed weight) beside them
        models = {**seraf_variants(), **models}
    tables, per_horizon = [], []
    for horizon in args.horizons:
        size = len(series_train) - length - horizon + 1
        test_starts = np.arange(len(series_test) - length - horizon + 1)
        rng = np.random.default_rng(args.seed)
        train_starts = np.sort(rng.choice(size, size=min(args.max_train_windows, size), replace=False))
        test_rows = seraf_rows(series_test, test_starts, length, horizon, -np.ones(len(test_starts)), test_embeddings)
        validation_starts = np.arange(len(series["validation"]) - length - horizon + 1)
        validation_rows = seraf_rows(
            series["validation"], validation_starts, length, horizon, -np.ones(len(validation_starts)), validation_embeddings
        )
        database = db_embeddings[:size]

        def train_rows_fn(use_text, horizon=horizon, train_starts=train_starts, database=database):
            return seraf_rows(series_train, train_starts, length, horizon, train_starts, database[train_starts] if use_text else None)

        results, first = {name: [] for name in models}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, overrides in models.items():
                fit = functools.partial(
                    run_seraf, name, overrides, series_train, freq, stamp(train_frame.index[:1])[0], database,
                    train_rows_fn, test_rows, args, tmp=tmp, length=length, horizon=horizon, channels=channels,
                    validation_rows=validation_rows,
                )  # fmt: skip
                # seed 0 at every learning rate; the lowest validation MSE picks the rate of every seed
                trials = [(rate, *fit(seed=0, learning_rate=rate)) for rate in args.seraf_learning_rate]
                rate, metrics, model = min(trials, key=lambda trial: trial[1]["validation_mse"])
                for seed in range(args.seeds):
                    if seed:
                        metrics, model = fit(seed=seed, learning_rate=rate)
                    results[name].append({**metrics, "learning_rate": rate})
                    first.setdefault(name, model)
                    logger.info("H=%d %s seed %d: %s", horizon, name, seed, results[name][-1])
        tables.append(results_table(f"{args.name} (H={horizon}; {size} database windows, {len(test_rows)} test windows)", results))
        per_horizon.append(results)
        # What the retrievals bring: the retrieved futures alone against the actual future (the seed-0 SERAF's
        # retrievals, which have no trained weight), on every test window and on the training windows as SERAF saw
        # them in training (database windows overlapping the query excluded), and the trained fusion weight and gate.
        seraf_model = first["SERAF (full)"]
        on_test = retrieval_forecasts(seraf_model, test_rows)
        on_train = retrieval_forecasts(seraf_model, train_rows_fn(True))
        rows = []
        for key, label in (("time_series_forecast", "Pearson top-K futures (F̂_T)"), ("text_forecast", "description top-K futures (F̂_S)")):
            test_metrics = forecasting_metrics(on_test[key], on_test["target"])
            train_metrics = forecasting_metrics(on_train[key], on_train["target"])
            rows.append([label, f"{test_metrics['mse']:.4f}", f"{test_metrics['mae']:.4f}", f"{train_metrics['mse']:.4f}"])
        tables.append(
            f"**{args.name} (H={horizon}): the retrieved futures alone as forecasts (seed-0 SERAF; its fusion weight w = "
            f"{float(torch.sigmoid(seraf_model.fusion_logit.detach())):.3f}, mean gate β = {on_test['gate'].mean():.3f} on test, "
            f"{on_train['gate'].mean():.3f} on training windows)**\n\n"
            + markdown_table(["retrieval alone", "test MSE", "test MAE", f"training windows MSE ({len(train_starts)}, overlaps excluded)"], rows)
        )  # fmt: skip
        if args.figure_dir:
            query = len(test_rows) // 2
            os.makedirs(args.figure_dir, exist_ok=True)
            figure = os.path.join(args.figure_dir, f"seraf_{args.name}_H{horizon}.png")
            linear = predict(first["Linear (no retrieval)"], test_rows[query : query + 1], seraf_collate)[0][0]
            retrieval_figure(
                figure, test_rows[query]["past_values"].numpy(),
                {"actual future": on_test["target"][query], "SERAF (full)": on_test["prediction_outputs"][query],
                 "Linear (no retrieval)": linear, "F̂_T (Pearson top-K futures)": on_test["time_series_forecast"][query],
                 "F̂_S (description top-K futures)": on_test["text_forecast"][query]},
                channels - 1,
                f"{args.name} test window {query} (starts {stamp(test_frame.index[query:query + 1])[0]}), channel "
                f"{test_frame.columns[channels - 1]}, H={horizon}; seed-0 models",
            )  # fmt: skip
            tables.append(f"Figure: `{figure}` (test window {query}, channel {test_frame.columns[channels - 1]}).")
    if len(args.horizons) > 1:
        # per seed, the mean over horizons; then mean ± std over seeds
        average = {
            name: [
                {metric: float(np.mean([results[name][seed][metric] for results in per_horizon])) for metric in ("mse", "mae")}
                for seed in range(args.seeds)
            ]
            for name in models
        }
        tables.append(results_table(f"{args.name}, average over H = {', '.join(map(str, args.horizons))}", average))
    header = (
        f"{args.name}, 12/4/4-month split, train-fitted standardisation, input {length}, horizons "
        f"{', '.join(map(str, args.horizons))}, all {channels} channels; database = every stride-1 training window of "
        f"{length} + H steps; training on "
        + ("every training window" if args.max_train_windows >= all_train else
           f"{args.max_train_windows} randomly chosen training windows (seed {args.seed})")
        + f" for at most {args.seraf_epochs:g} epochs (batch {args.batch_size}, Adam, constant lr {learning_rates}), stopped "
        f"early on the validation MSE (every validation window, evaluated after each epoch; patience "
        f"{args.seraf_patience} epochs) with the best epoch's weights kept; test on every test window; K={args.seraf_top_k}, τ=0.1, normalisation eps {args.seraf_normalization_eps:g}; mean ± std over {args.seeds} seeds. Descriptions + embeddings of "
        f"{all_train} + {inputs['validation']} + {all_test} (train + validation + test) input windows: {described}. Total {time.time() - began:.0f} s wall."
    )
    return "\n\n".join([header, *tables])


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    """Parse the command line, run `timemmd` or `ett`, print (and optionally write) the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder holding timemmd/ and ett/ (default: the shared data)")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per model (tables give mean ± std)")
    parser.add_argument("--seed", type=int, default=0, help="seed of alignment / window subsampling")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seraf-top-k", type=int, default=10)
    parser.add_argument("--seraf-epochs", type=float, default=10, help="SERAF training epochs (ett: at most)")
    parser.add_argument(
        "--seraf-learning-rate", type=lambda text: [float(rate) for rate in text.split(",")], default=[1e-3],
        help="comma-separated; ett: with several values each model's is chosen per horizon on the validation MSE of "
        "its seed-0 run, then used for every seed; timemmd: the first",
    )  # fmt: skip
    parser.add_argument(
        "--seraf-patience", type=int, default=3,
        help="SERAF: stop once the validation MSE has not improved for this many epochs (the best epoch is kept)",
    )  # fmt: skip
    parser.add_argument(
        "--seraf-normalization-eps", type=float, default=1e-5,
        help="added to each window's variance when SERAF z-scores it (a floor on the scale of near-constant windows)",
    )  # fmt: skip
    parser.add_argument("--output", default=None, help="also write the tables to this Markdown file")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("timemmd", help="TRACE RAG (TS-only / TS+Text / no-RAG) and SERAF ablations on a Time-MMD domain")
    t.add_argument("--domain", default="Health_US")
    t.add_argument("--horizon", type=int, default=12)
    t.add_argument("--num-retrieved", type=int, default=5)
    t.add_argument("--rag-epochs", type=float, default=10, help="RAG training epochs at most (early stopping)")
    t.add_argument(
        "--rag-patience", type=int, default=3,
        help="stop once the validation MSE has not improved for this many epochs (the best epoch is kept)",
    )  # fmt: skip
    t.add_argument("--rag-learning-rate", type=float, default=1e-3)
    t.add_argument("--encoder", default=None, help="an aligned TraceModel folder to use instead of the quick alignment")
    t.add_argument("--no-seraf", action="store_true", help="the TRACE RAG table only (no SERAF ablations)")
    t.add_argument("--align-epochs", type=int, default=5)
    t.add_argument(
        "--text-source", choices=("search", "report", "both"), default="search",
        help="the texts paired with the windows (`trace_datasets.timemmd.build`): search (the paper's), report, both",
    )  # fmt: skip
    t.add_argument("--figure-dir", default=None, help="draw one test query's forecasts and TRACE's retrieved futures here")
    t.add_argument("--align-batch-size", type=int, default=64)
    t.add_argument("--align-learning-rate", type=float, default=1e-3)
    e = sub.add_parser("ett", help="SERAF vs RAFT-style vs linear on ETTh1/ETTh2")
    e.add_argument("--name", default="ETTh1")
    e.add_argument("--input-length", type=int, default=720)
    e.add_argument("--horizons", type=int, nargs="+", default=[96], help="forecast horizons (the paper: 96 192 336 720)")
    e.add_argument("--max-train-windows", type=int, default=2000, help="training windows sampled from the database")
    e.add_argument("--cache-dir", default=None, help="cache the description embeddings here (.npz)")
    e.add_argument("--ablations", action="store_true", help="also SERAF w/o text, w/o gate and with a fixed fusion weight")
    e.add_argument("--figure-dir", default=None, help="draw one test query's forecasts and retrieved futures per horizon here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    report = run_timemmd(args) if args.command == "timemmd" else run_ett(args)
    print(report)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(report + "\n")


if __name__ == "__main__":
    main()
