"""What the commands share: terminal handling (`console`, `quiet`), the checks before a run
(`preflight`) and the flags of `python -m tfresnet.finetune` (`finetune_flags`).

Nothing here imports TensorFlow at import time, so a command can keep TensorFlow's start-up
lines off the terminal before it loads.
"""
