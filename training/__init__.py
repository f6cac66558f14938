"""Training library of TRACE: recipes, optimisation, cross-process contrastive gathering, text-embedding cache,
collation, the Accelerate loops of stages 1 and 2, and Trainer/PEFT finetuning. The scripts in `training/` only
parse arguments, build data and call these.
"""

from modeling_trace.data_collator import TraceDataCollator

from .text_cache import text_embedding_batch
from .distributed import gather_embeddings_for_loss, gather_no_grad, gather_with_grad, scale_gradient
from .optimization import create_optimizer, create_scheduler, warmup_cosine_lambda
from .recipes import (
    AlignRecipe,
    FinetuneRecipe,
    PretrainRecipe,
    RecipeError,
    TrainingRecipe,
    load_recipe_file,
    parse_recipe,
    recipe_from_dict,
)
from .text_cache import build_text_embedding_cache, dataset_fingerprint, text_model_fingerprint

__all__ = [
    "AlignRecipe",
    "FinetuneRecipe",
    "PretrainRecipe",
    "RecipeError",
    "TraceDataCollator",
    "TrainingRecipe",
    "build_text_embedding_cache",
    "create_optimizer",
    "create_scheduler",
    "dataset_fingerprint",
    "gather_embeddings_for_loss",
    "gather_no_grad",
    "gather_with_grad",
    "load_recipe_file",
    "parse_recipe",
    "recipe_from_dict",
    "scale_gradient",
    "text_embedding_batch",
    "text_model_fingerprint",
    "warmup_cosine_lambda",
]
