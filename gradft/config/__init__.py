"""The composed config, checked before torch is imported (``python -m gradft`` refuses a bad one in about 2 s).

schema.py    the key schema read from conf/ and ``validate(cfg)``: every group's values in range, "did you mean"
guidance.py  ``guidance:`` as a self-validating dataclass; its version, and which results it supersedes
prompt.py    a task's ``prompt:`` node (``head=lm``) as a validated ``PromptSpec``
preset.py    ``+preset=<grid>``: a tuned grid's settings for one run
"""
