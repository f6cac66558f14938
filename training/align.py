"""Stage 2 of TRACE: dual-level contrastive alignment of the encoder with the frozen text tower.

    accelerate launch [--config_file configuration/accelerate/<x>.yaml] -m trace_training.align \
        --config configuration/recipes/align.yaml [--model runs/pretrain/final ...] [--resume]

Negatives are gathered from all processes (gradients kept for the local shard), so N processes see the same
negatives as one process with the combined batch. Values come from the recipe; only typed flags override it.
"""

from .entry import EntryPoint
from .loops import run_alignment
from .recipes import AlignRecipe


def main(argv=None):
    entry = EntryPoint(AlignRecipe, argv, __doc__)
    splits = entry.load_splits(describe_channels=entry.recipe.channel_loss_weight > 0)
    entry.run_stage(run_alignment, splits,
                    "Stage 2 of TRACE: dual-level contrastive alignment (python -m trace_training.align).")


if __name__ == "__main__":
    main()
