"""``skillbank serve``: a Tinker-compatible HTTP training API over the multi-LoRA trainer.

The official ``tinker`` SDK, pointed at this server (``TINKER_BASE_URL``, an API key),
drives LoRA training clients that are *tenants*: each owns one adapter slot of a resident
base (its own rank, Adam state and step count). ``forward_backward`` calls of different
tenants that arrive within a short window run as ONE mixed-batch forward/backward (rows
routed by slot); sampling is one mixed batch too. Every tenant is a ``run_<id>/`` folder of
the outputs folder (checkpoints and broadcasts in PEFT format, STABLE markers), so a killed
server restarts and its tenants resume from their last saved state.

Modules: ``config`` (ServeConfig), ``errors`` (the SDK's error shape), ``auth`` (API keys),
``wire`` (the SDK's protobuf/JSON request and response formats), ``losses`` (built-in loss
registry), ``engine`` (model, slots, fused step, optimiser), ``sampling`` (mixed-batch
generation), ``store`` (the outputs folder), ``worker`` (queue, fusion window, futures),
``app`` (Starlette routes).
"""
