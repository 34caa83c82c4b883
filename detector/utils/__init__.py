"""The foundation layer: what every other layer uses, importing none of them.

``bins`` (object-size bins and their presets), ``files`` (atomic writes, JSON reading with
clear errors, stale temp-file clean-up), ``dotted`` (dotted-key get and diff of nested dicts),
``suggest`` (the "did you mean" hint) and ``hparams`` (the config keys shown as HParams).
Nothing here needs torch, so evaluation and data statistics run without it.
"""
