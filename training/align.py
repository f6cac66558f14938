"""Stage 2 of TRACE: dual-level contrastive alignment of the encoder with the frozen text tower.

    accelerate launch [--config_file configuration/accelerate/<x>.yaml] -m trace_training.align \
        --config configuration/recipes/align.yaml [--model runs/pretrain/final ...] [--resume]

Negatives are gathered from all processes (gradients kept for the local shard), so N processes see the same
negatives as one process with the combined batch. Values come from the recipe; only typed flags override it.
"""

from pathlib import Path

from . import AlignRecipe, parse_recipe
from .data import load_training_splits
from .loops import distributed_state, run_alignment


def main(argv=None):
    recipe, extras = parse_recipe(AlignRecipe, argv, __doc__)
    state = distributed_state()
    recipe.validate(num_processes=state.num_processes)  # before any data or model is built
    with state.main_process_first():
        splits = load_training_splits(
            recipe.dataset,
            recipe.dataset_config,
            ("train", "validation") if recipe.eval_steps else ("train",),
            recipe.data_dir,
            describe_channels=recipe.channel_loss_weight > 0,
            max_samples=recipe.max_samples,
        )
    result = run_alignment(
        recipe, splits["train"], resume=extras.resume, stop_at_step=extras.stop_at_step, eval_dataset=splits.get("validation")
    )
    if state.is_main_process and "final_dir" in result:
        from modeling_trace.cards import write_model_card  # README.md card next to the final save_pretrained

        write_model_card(result["final_dir"], model_name=Path(recipe.output_dir).name, datasets=[recipe.dataset],
                         training_description="Stage 2 of TRACE: dual-level contrastive alignment (python -m trace_training.align).")
        print(f"Saved {result['final_dir']}")


if __name__ == "__main__":
    main()
