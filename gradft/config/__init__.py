"""The composed config, checked before torch is imported (``python -m gradft`` refuses a bad one in about 2 s).

Every default lives in the yaml under ``conf/``; the dataclasses here have none and are built from a config node
(``from_cfg``) or, without Hydra, from their yaml file (``from_yaml(**overrides)``, ``method_node``). Each validates
itself in ``__post_init__``.

schema.py    the key schema read from conf/ and ``validate(cfg)``: builds every node below, "did you mean"
nodes.py     trainer, eval, data, metrics, save, logger, model and the top-level values; ``train_steps``
guidance.py  ``guidance:`` as a self-validating dataclass; its version, and which results it supersedes
method.py    ``method:``: one dataclass per method kind, and ``method_config(node)``
prompt.py    a task's ``prompt:`` node (``head=lm``) as a validated ``PromptSpec``
preset.py    ``+preset=<grid>``: a tuned grid's settings for one run
"""
