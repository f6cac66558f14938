"""Stage 1 of TRACE: masked patch reconstruction pretraining of the time-series encoder.

    accelerate launch [--config_file configuration/accelerate/<x>.yaml] -m trace_training.pretrain \
        --config configuration/recipes/pretrain.yaml [--learning_rate 5e-4 ...] [--resume]

Values come from the recipe file; only flags typed on the command line override it.
"""

from .entry import EntryPoint
from .loops import run_pretraining
from .recipes import PretrainRecipe


def main(argv=None):
    entry = EntryPoint(PretrainRecipe, argv, __doc__)
    entry.run_stage(run_pretraining, entry.load_splits(),
                    "Stage 1 of TRACE: masked patch reconstruction (python -m trace_training.pretrain).")


if __name__ == "__main__":
    main()
