"""Stage 1 of TRACE: masked patch reconstruction pretraining of the time-series encoder.

    accelerate launch [--config_file configuration/accelerate/<x>.yaml] -m trace_training.pretrain \
        --config configuration/recipes/pretrain.yaml [--learning_rate 5e-4 ...] [--resume]

Values come from the recipe file; only flags typed on the command line override it.
"""

from pathlib import Path

from . import PretrainRecipe, parse_recipe
from .data import load_training_splits
from .loops import distributed_state, run_pretraining


def main(argv=None):
    recipe, extras = parse_recipe(PretrainRecipe, argv, __doc__)
    state = distributed_state()
    recipe.validate(num_processes=state.num_processes)  # before any data or model is built
    with state.main_process_first():
        splits = load_training_splits(
            recipe.dataset,
            recipe.dataset_config,
            ("train", "validation") if recipe.eval_steps else ("train",),
            recipe.data_dir,
            max_samples=recipe.max_samples,
        )
    result = run_pretraining(
        recipe, splits["train"], resume=extras.resume, stop_at_step=extras.stop_at_step, eval_dataset=splits.get("validation")
    )
    if state.is_main_process and "final_dir" in result:
        from modeling_trace.cards import write_model_card  # README.md card next to the final save_pretrained

        write_model_card(result["final_dir"], model_name=Path(recipe.output_dir).name, datasets=[recipe.dataset],
                         training_description="Stage 1 of TRACE: masked patch reconstruction (python -m trace_training.pretrain).")
        print(f"Saved {result['final_dir']}")


if __name__ == "__main__":
    main()
