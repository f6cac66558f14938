"""The TRACE training app (installed as `trace_training`): recipes, optimisation, the cross-process contrastive
gather, the text-embedding cache, the Accelerate loops of stages 1 and 2, Trainer/PEFT finetuning, the quickstart,
Hub publishing and the `trace` CLI. Entry points: `python -m trace_training.{pretrain,align,finetune,quickstart}`,
`accelerate launch -m trace_training.align ...`, `trace ...`.

Names are imported on first use (PEP 562), so `trace --help` imports neither torch nor accelerate.
"""

import importlib

_LAZY = {
    "AlignRecipe": ".recipes",
    "FinetuneRecipe": ".recipes",
    "PretrainRecipe": ".recipes",
    "RecipeError": ".recipes",
    "TraceDataCollator": "modeling_trace.data_collator",
    "TrainingRecipe": ".recipes",
    "build_text_embedding_cache": ".text_cache",
    "create_optimizer": ".optimization",
    "create_scheduler": ".optimization",
    "dataset_fingerprint": ".text_cache",
    "gather_embeddings_for_loss": ".distributed",
    "gather_no_grad": ".distributed",
    "gather_with_grad": ".distributed",
    "load_recipe_file": ".recipes",
    "parse_recipe": ".recipes",
    "recipe_from_dict": ".recipes",
    "scale_gradient": ".distributed",
    "text_embedding_batch": ".text_cache",
    "text_model_fingerprint": ".text_cache",
    "warmup_cosine_lambda": ".optimization",
}


# The same PEP 562 pattern as `modeling_trace.lazy.lazy_attributes`, written out: importing anything from
# `modeling_trace` would register its Auto classes (torch + transformers), which `trace --help` must not pay for.
def __getattr__(name):
    if name in _LAZY:
        module = _LAZY[name]
        value = getattr(importlib.import_module(module, __name__ if module.startswith(".") else None), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
