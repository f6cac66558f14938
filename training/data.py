"""Datasets for the training entry points, built by the `datasets_scripts` builders (one schema for all sources).

`load_training_splits(recipe.dataset, recipe.dataset_config, splits, data_dir)` returns `{split: datasets.Dataset}`.
Supported sources: "disk" (a saved DatasetDict, `dataset_config.path`), "timemmd" (builder `trace_datasets.timemmd.build`), "ucr" (`trace_datasets.ucr.load_ucr`),
and any other builder module `datasets_scripts.<source>` exposing `build(**dataset_config) -> DatasetDict`.
"""

from __future__ import annotations

import importlib

import numpy as np


def _fill_channel_texts(row):
    # Time-MMD has no channel-level texts; the deterministic describer provides them, as the paper's LLM did.
    from modeling_trace.describe import describe_channel

    values = np.asarray(row["past_values"], dtype=np.float64)
    texts = list(row["channel_texts"])
    for c, name in enumerate(row["channel_names"]):
        if not str(texts[c]).strip() and np.isfinite(values[:, c]).sum() >= 2:
            texts[c] = describe_channel(values[:, c], name)
    row["channel_texts"] = texts
    return row


def load_training_splits(source: str, dataset_config: dict | None = None, splits=("train",), data_dir=None,
                         describe_channels: bool = False, max_samples: int | dict | None = None) -> dict:
    """`{split: datasets.Dataset}` for `splits` of one source in the shared schema, built once; `max_samples` limits
    the train split (or, as `{split: n}`, any split) to evenly spaced rows. A split the source lacks is an error for "train" and left out for
    the others (e.g. no validation split: no held-out curve)."""
    options = dict(dataset_config or {})
    if source == "disk":
        # a DatasetDict saved by a builder (`save_dataset_dict` / `DatasetDict.save_to_disk`)
        from datasets import load_from_disk

        if "path" not in options:
            raise ValueError("dataset 'disk' needs dataset_config.path, the folder of a saved DatasetDict.")
        dataset_dict = load_from_disk(options["path"])
    elif source == "ucr":
        from trace_datasets.ucr import load_ucr

        name = options.pop("name", None)
        if name is None:
            raise ValueError("dataset 'ucr' needs dataset_config.name (e.g. ItalyPowerDemand, GunPoint, BasicMotions).")
        dataset_dict = load_ucr(name, data_dir=data_dir, **options)
    else:
        try:
            module = importlib.import_module(f"trace_datasets.{source}")
        except ModuleNotFoundError as err:
            raise ValueError(
                f"Unknown dataset source {source!r}: no builder datasets_scripts/{source}.py. "
                "Use 'timemmd', 'ucr', or another source with a builder."
            ) from err
        if data_dir is not None:
            options.setdefault("data_dir", data_dir)
        # `config: X` selects a builder's `build_X` when it has one (e.g. noaa's `build_station_windows`); sources
        # whose `build` takes the config as its first argument (timemmd) get it passed through.
        config = options.get("config")
        builder = getattr(module, f"build_{config}", None) if isinstance(config, str) else None
        if builder is not None:
            options.pop("config")
            dataset_dict = builder(**options)
        else:
            dataset_dict = module.build(**options)
    out = {}
    for split in splits:
        if split not in dataset_dict:
            if split == "train":
                raise ValueError(f"Split {split!r} not in the {source} dataset; available: {list(dataset_dict)}.")
            continue
        dataset = dataset_dict[split]
        limit = max_samples.get(split) if isinstance(max_samples, dict) else (max_samples if split == "train" else None)
        if limit is not None and len(dataset) > limit:
            # evenly spaced rows, so a small quick run still covers the whole period
            dataset = dataset.select(np.linspace(0, len(dataset) - 1, limit).round().astype(int).tolist())
        if describe_channels:
            dataset = dataset.map(_fill_channel_texts, desc="describing channels")
        out[split] = dataset
    return out
