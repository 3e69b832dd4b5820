"""The parts of `python -m mome.train` (mome/train.py: config → data → stages → evaluation) that have their own files:

    mome.training.loop            the optimizer steps of one stage (global-token-mean loss, accumulation, stops)
    mome.training.checkpointing   checkpoint I/O: save / resume (full or sharded), the stage's final model, load_model
    mome.training.finetune        where stage 2 starts (a stage-1 or stage-2 model) and which parts train

The processes and the DDP / FSDP wrapping are `mome.distributed`; the checkpoint folder format is `mome.checkpoint`.
"""
