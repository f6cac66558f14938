"""What the training entry points (`python -m trace_training.{pretrain,align,finetune}`) share: the recipe from the
command line, validated against the number of processes before any data or model is built; the dataset splits,
loaded main process first; and, for stages 1 and 2, the training loop and the model card of the final folder.
"""

from pathlib import Path

from .data import load_training_splits
from .loops import distributed_state
from .recipes import TrainingRecipe, parse_recipe


class EntryPoint:
    """One run of an entry point: `recipe` and `extras` (`--resume`, `--stop_at_step`, ...) of [`parse_recipe`] for
    `argv` (default `sys.argv`; `description` is the `--help` text), and the process `state`."""

    def __init__(self, recipe_class: type[TrainingRecipe], argv: list[str] | None = None, description: str = ""):
        self.recipe, self.extras = parse_recipe(recipe_class, argv, description)
        self.state = distributed_state()
        self.recipe.validate(num_processes=self.state.num_processes)  # before any data or model is built

    def load_splits(self, splits: tuple[str, ...] | None = None, **options) -> dict:
        """`load_training_splits` of the recipe's dataset, in the main process first (it builds, the others then
        read the cache). `splits` defaults to train, plus validation when the recipe sets `eval_steps`; `options`
        (`describe_channels`, `max_samples`: default the recipe's) go to `load_training_splits`."""
        recipe = self.recipe
        if splits is None:
            splits = ("train", "validation") if recipe.eval_steps else ("train",)
        options.setdefault("max_samples", recipe.max_samples)
        with self.state.main_process_first():
            return load_training_splits(recipe.dataset, recipe.dataset_config, splits, recipe.data_dir, **options)

    def run_stage(self, run, splits: dict, training_description: str) -> dict:
        """Stage 1 or 2 (`run`: `run_pretraining` / `run_alignment`) on `splits["train"]`, with the validation split
        for the held-out curve when loaded; then a README.md model card next to the final `save_pretrained`."""
        recipe, extras = self.recipe, self.extras
        result = run(
            recipe,
            splits["train"],
            resume=extras.resume,
            stop_at_step=extras.stop_at_step,
            eval_dataset=splits.get("validation"),
        )
        if self.state.is_main_process and "final_dir" in result:
            from modeling_trace.cards import write_model_card

            write_model_card(result["final_dir"], model_name=Path(recipe.output_dir).name, datasets=[recipe.dataset],
                             training_description=training_description)
            print(f"Saved {result['final_dir']}")
        return result
