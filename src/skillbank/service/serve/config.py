"""The server's configuration (``skillbank serve`` flags are generated from it)."""

from __future__ import annotations

from pydantic import Field

from skillbank.config import Config


class ServeConfig(Config):
    """Settings of a ``skillbank serve`` process."""

    base: str = ""
    """Hugging Face causal-LM folder (config.json, weights, tokenizer) every tenant shares."""
    out: str = "serve-out"
    """Outputs folder: one run_<model id>/ per tenant (checkpoints, broadcasts)."""
    host: str = "127.0.0.1"
    """Address to bind (127.0.0.1 by default: local clients only)."""
    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port (0: any free port, printed on start)."""
    max_tenants: int = Field(default=8, ge=1, le=256)
    """Training clients resident at once (one adapter slot each)."""
    sampler_slots: int = Field(default=4, ge=1, le=256)
    """Extra slots holding saved sampler weights (least recently used are replaced)."""
    max_rank: int = Field(default=32, ge=1, le=1024)
    """Largest LoRA rank a tenant may ask for (the slots' capacity)."""
    fuse_window_ms: float = Field(default=20.0, ge=0.0, le=10_000.0)
    """How long a forward_backward waits for other tenants' calls to join its batch."""
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest request body accepted (bigger: HTTP 413)."""
    max_datums: int = Field(default=1024, ge=1)
    """Largest number of datums in one forward/forward_backward call."""
    max_sample_tokens: int = Field(default=256, ge=1)
    """Largest max_tokens of a sample request."""
    max_num_samples: int = Field(default=64, ge=1)
    """Largest num_samples of a sample request."""
    idle_timeout_s: float = Field(default=900.0, gt=0.0)
    """A tenant idle this long is saved and unloaded (its slot is freed)."""
    threads: int = Field(default=0, ge=0)
    """torch threads (0: torch's default)."""
    seed: int = 0
    """Seed of the sampling generator when a request gives none."""
