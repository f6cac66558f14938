"""The README's usage blocks run as written, top to bottom, in a fresh interpreter and an empty folder."""

import os
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_readme_python_blocks_run_as_written(tmp_path):
    text = (REPO_ROOT / "README.md").read_text()
    usage = text[text.index("## Usage") : text.index("## What is guaranteed")]
    blocks = re.findall(r"```python\n(.*?)```", usage, flags=re.S)
    assert len(blocks) >= 3
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TQDM_DISABLE="1")
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ids = re.search(r"\[('w\d'(, )?)+\]", result.stdout)
    assert ids, result.stdout  # the print of the Text -> TS hits
    assert (tmp_path / "trace-demo" / "config.json").is_file() and (tmp_path / "demo_index").is_dir()
