"""`ServeConfig`: the options of `uniretrieve serve` (also what `create_app` takes). Imports nothing heavy."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from uniretrieve.config import no_cli, opt, trust_remote_code_opt

API_KEY_ENV = "UNIRETRIEVE_API_KEY"


def _bytes(text: str | int) -> int:
    from uniretrieve.index.factory import parse_bytes  # here: uniretrieve must not import the index at load

    return parse_bytes(text)


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass
class ServeConfig:
    index: str = field(
        default="index", metadata=opt("Index directory (from `uniretrieve index build`).", "--index", "-i")
    )
    host: str = field(
        default="127.0.0.1",
        metadata=opt("Address to bind; anything but loopback needs --api-key.", "--host"),
    )
    port: int = field(default=8000, metadata=opt("Port to bind.", "--port"))
    model: str | None = field(
        default=None, metadata=opt("Query model (default: the index's own).", "--model", "-m")
    )
    force: bool = field(default=False, metadata=opt("Allow a --model other than the index's.", "--force"))
    device: str | None = field(
        default=None, metadata=opt("Model device (default: CUDA if present).", "--device")
    )
    trust_remote_code: bool = field(default=False, metadata=trust_remote_code_opt())
    api_key: str | None = field(
        default=None,
        metadata=opt(
            f"Key every request but /health must carry (X-API-Key or Authorization: Bearer); or set {API_KEY_ENV}.",
            "--api-key",
            envvar=API_KEY_ENV,
            show_envvar=True,
            show_default=False,
        ),
    )
    cors_origin: str | None = field(
        default=None,
        metadata=opt(
            "Comma-separated origins allowed to call the API from a browser (CORS is off without it).",
            "--cors-origin",
        ),
    )
    max_k: int = field(default=1000, metadata=opt("Largest k a query may ask for.", "--max-k"))
    max_batch: int = field(default=64, metadata=opt("Most queries in one /search/batch.", "--max-batch"))
    max_request_bytes: int = field(
        default=32 << 20,
        metadata=opt(
            "Largest request body, e.g. 32MB.", "--max-request-bytes", type=str, default="32MB", parse=_bytes
        ),
    )
    max_upload_bytes: int = field(
        default=16 << 20,
        metadata=opt(
            "Largest query image (decoded from base64 or uploaded), e.g. 16MB.",
            "--max-upload-bytes",
            type=str,
            default="16MB",
            parse=_bytes,
        ),
    )
    max_image_pixels: int | None = field(
        default=None,
        metadata=opt(
            "Largest query image in pixels (default: the shared cap, UNIRETRIEVE_MAX_IMAGE_PIXELS or 64 Mpx).",
            "--max-image-pixels",
        ),
    )
    micro_batch: bool = field(
        default=True,
        metadata=opt(
            "Encode concurrent queries together in one forward pass / one query per pass.",
            "--micro-batch/--no-micro-batch",
        ),
    )
    batch_wait_ms: float = field(
        default=2.0,
        metadata=opt("Longest wait for more queries to join a forward pass (ms).", "--batch-wait-ms"),
    )
    max_batch_size: int = field(
        default=32, metadata=opt("Most query items in one forward pass.", "--max-batch-size")
    )
    model_threads: int | None = field(
        default=None,
        metadata=opt(
            "Threads of a query forward pass on the CPU (default: torch's; 1 suits a small model on few cores).",
            "--model-threads",
        ),
    )
    model_workers: int = field(
        default=1,
        metadata=opt(
            "Forward passes in flight at once: encoder threads sharing the one model (2 suits 2+ cores with "
            "--model-threads 1, docs/serving.md#throughput).",
            "--model-workers",
        ),
    )
    model_dtype: str | None = field(
        default=None,
        metadata=opt(
            "Compute dtype of the query model: bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU). "
            "bfloat16 on a CPU with AVX512-BF16 encodes ~2.7× faster; query vectors then differ from float32 "
            "ones by cosine ~1e-4.",
            "--model-dtype",
        ),
    )
    compile: bool = field(
        default=False,
        metadata=opt(
            "Compile the query model's language model with torch.compile before serving (needs a C++ compiler on "
            "a CPU; ~40 s more start-up for the built-in model; its float32 forward ~1.5x faster, docs/serving.md#throughput).",
            "--compile/--no-compile",
        ),
    )
    search_threads: int | None = field(
        default=None,
        metadata=opt(
            "Threads of a search: FAISS's OpenMP and numpy's BLAS (exact search) pools (default: theirs).",
            "--search-threads",
        ),
    )
    watch_interval: float = field(
        default=1.0,
        metadata=opt("Seconds between checks for a new index version (0: never swap).", "--watch-interval"),
    )
    access_log: bool = field(
        default=False, metadata=opt("Log every request.", "--access-log/--no-access-log")
    )
    thumbnail_max: int = field(default=1024, metadata=no_cli())
    """Largest thumbnail side `?size=` may ask for."""

    def __post_init__(self) -> None:
        positive = {
            "--port": self.port,
            "--max-k": self.max_k,
            "--max-batch": self.max_batch,
            "--max-request-bytes": self.max_request_bytes,
            "--max-upload-bytes": self.max_upload_bytes,
            "--max-batch-size": self.max_batch_size,
            "--model-workers": self.model_workers,
        }
        bad = [f"{name} {value}" for name, value in positive.items() if value < 1]
        for name, value in (
            ("--max-image-pixels", self.max_image_pixels),
            ("--model-threads", self.model_threads),
            ("--search-threads", self.search_threads),
        ):
            if value is not None and value < 1:
                bad.append(f"{name} {value}")
        if bad:
            raise ValueError(f"{', '.join(bad)}: must be positive")
        if self.model_dtype not in (None, "bfloat16", "float16", "float32"):
            raise ValueError(f"--model-dtype {self.model_dtype}: choose bfloat16, float16 or float32")
        if self.batch_wait_ms < 0 or self.watch_interval < 0:
            raise ValueError("--batch-wait-ms and --watch-interval must be >= 0")
        if self.api_key is not None and not self.api_key.strip():
            self.api_key = None
        if not is_loopback(self.host) and self.api_key is None:
            raise ValueError(
                f"--host {self.host} makes the server reachable from other machines: set --api-key (or "
                f"{API_KEY_ENV}), and put TLS in front (docs/serving.md#security)"
            )

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in (self.cors_origin or "").split(",") if o.strip()]
