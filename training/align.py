"""Stage 2 of TRACE: dual-level contrastive alignment of the encoder with the frozen text tower.

    accelerate launch [--config_file configuration/accelerate/<x>.yaml] training/align.py \
        --config configuration/recipes/align.yaml [--model runs/pretrain/final ...] [--resume]

Negatives are gathered from all processes (gradients kept for the local shard), so N processes see the same
negatives as one process with the combined batch. Values come from the recipe; only typed flags override it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_trace.training import AlignRecipe, parse_recipe  # noqa: E402
from modeling_trace.training.loops import distributed_state, run_alignment  # noqa: E402
from training.data import load_training_dataset  # noqa: E402


def main(argv=None):
    recipe, extras = parse_recipe(AlignRecipe, argv, __doc__)
    state = distributed_state()
    recipe.validate(num_processes=state.num_processes)  # before any data or model is built
    with state.main_process_first():
        dataset = load_training_dataset(
            recipe.dataset,
            recipe.dataset_config,
            "train",
            recipe.data_dir,
            describe_channels=recipe.channel_loss_weight > 0,
            max_samples=recipe.max_samples,
        )
    result = run_alignment(recipe, dataset, resume=extras.resume, stop_at_step=extras.stop_at_step)
    if state.is_main_process and "final_dir" in result:
        from modeling_trace.cards import write_model_card  # README.md card next to the final save_pretrained

        write_model_card(result["final_dir"], model_name=Path(recipe.output_dir).name, datasets=[recipe.dataset],
                         training_description="Stage 2 of TRACE: dual-level contrastive alignment (training/align.py).")
        print(f"Saved {result['final_dir']}")


if __name__ == "__main__":
    main()
