"""Training: the loss, the optimizer, the compiled step, mixed precision, sharding and multi-host start-up.

The trainer knows a model only through ``loss_fn(model, batch, key) -> (loss, aux)``::

    optimizer = make_optimizer(OptimConfig(learning_rate=3e-4, total_steps=1000), model)
    opt_state = init_opt_state(optimizer, model)
    step = make_train_step(next_token_loss, optimizer, compute_dtype=jnp.bfloat16)
    model, opt_state, metrics = step(model, opt_state, batch, key)   # model, opt_state donated

Sharded (any mesh of ``data`` x ``fsdp`` x ``tensor`` devices, one or many processes)::

    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    model_sh, opt_sh = model_shardings(model, mesh), opt_state_shardings(optimizer, model, mesh)
    model = place(model, model_sh); opt_state = place(init_opt_state(optimizer, model), opt_sh)
    step = make_train_step(next_token_loss, optimizer, model_sharding=model_sh,
                           opt_state_sharding=opt_sh, batch_sharding=batch_sharding(mesh))
    local_rows = load_process_batch(lambda index, count: batch_at(..., process_index=index, process_count=count), mesh)
    model, opt_state, metrics = step(model, opt_state, place_batch(local_rows, mesh), key)
"""

from eqxllm.train.config import DataConfig, LoopConfig, TrainConfig, train_preset
from eqxllm.train.distributed import initialize_distributed
from eqxllm.train.host_memory import keep_freed_host_memory
from eqxllm.train.loss import cross_entropy, next_token_loss
from eqxllm.train.optim import (
    OptimConfig,
    current_learning_rate,
    decay_mask,
    init_opt_state,
    learning_rate_schedule,
    make_optimizer,
)
from eqxllm.train.precision import cast_floating, resolve_dtype
from eqxllm.train.sharding import (
    DEFAULT_RULES,
    batch_sharding,
    check_batch_size,
    gather,
    load_process_batch,
    make_mesh,
    model_shardings,
    opt_state_shardings,
    parse_mesh_spec,
    partition_spec,
    place,
    place_batch,
    process_batch_blocks,
    tree_shardings,
)
from eqxllm.train.step import make_eval_step, make_train_step

__all__ = [
    "DataConfig",
    "LoopConfig",
    "TrainConfig",
    "train_preset",
    "DEFAULT_RULES",
    "OptimConfig",
    "batch_sharding",
    "cast_floating",
    "check_batch_size",
    "cross_entropy",
    "current_learning_rate",
    "decay_mask",
    "gather",
    "init_opt_state",
    "initialize_distributed",
    "keep_freed_host_memory",
    "learning_rate_schedule",
    "load_process_batch",
    "make_eval_step",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "model_shardings",
    "next_token_loss",
    "opt_state_shardings",
    "parse_mesh_spec",
    "partition_spec",
    "place",
    "place_batch",
    "process_batch_blocks",
    "resolve_dtype",
    "tree_shardings",
]
