"""The composition root's old name: ``tempoflow.runs`` (kept so scripts written against it still run)."""

from tempoflow.runs import (  # noqa: F401 - re-exported
    build_codec,
    build_method,
    load_run,
    make_trainer,
    method_parts,
    pick_device,
    text_encoder,
    train,
)
