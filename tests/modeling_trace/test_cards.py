"""The generated model card: its snippets run as written where only torch / transformers / safetensors / tokenizers
are importable (remote code, this package blocked), and no local path leaks into the card or the saved folder."""

import json
import re

import pytest
import torch
from huggingface_hub import ModelCard

from modeling_trace import TraceModel, TraceProcessor
from modeling_trace.cards import render_model_card, write_model_card
from tests.conftest import run_fresh_python, save_tiny_text_model, tiny_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    text_dir = save_tiny_text_model(tmp_path_factory.mktemp("tiny_text_model"))
    torch.manual_seed(0)
    model = TraceModel.from_time_series_text_pretrained(tiny_config(), text_model_name_or_path=text_dir).eval()
    out = tmp_path_factory.mktemp("card_model") / "final"
    model.save_pretrained(out)
    TraceProcessor.from_model(model, max_length=64).save_pretrained(out)
    (out.parent / "recipe.yaml").write_text(f"model: {out.parent / 'pretrain' / 'final'}\ndataset: disk\nmax_steps: 3\n")
    write_model_card(out, datasets=[str(out.parent / "data")], training_description="A test run.")
    return out


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_card_snippets_run_as_written_with_remote_code_only(folder, tmp_path):
    card = render_model_card(json.loads((folder / "config.json").read_text()), repo_id=str(folder))
    blocks = python_blocks(card.text)
    assert len(blocks) >= 3
    assert not any("modeling_trace" in block or "trace_training" in block for block in blocks)
    code = "\n".join(blocks) + "\nprint('scores', scores.shape, 'top5', len(top5), 'classifier', type(classifier).__name__)\n"
    result = run_fresh_python(code, tmp_path)
    assert "scores (1, 100) top5 5 classifier TraceForClassification" in result.stdout


def test_no_local_path_in_the_card_or_the_saved_folder(folder):
    card = ModelCard.load(folder / "README.md")
    home_like = re.compile(r"(/tmp/|/root/|/home/|/work/|site-packages)")
    assert not home_like.search(card.content), [m.group(0) for m in home_like.finditer(card.content)][:3]
    assert "pip install trace-ts" not in card.content
    for name in ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            text = path.read_text()
            assert not home_like.search(text), f"{name} holds a local path: {home_like.search(text).group(0)}"
