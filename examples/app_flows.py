"""The four apps' charges, written only against the public API.

Each function is what a route handler of one app does; the work itself
(``process_chat_message``, ``generate_canvas``, ``render_video``) is a placeholder for
you to replace. ``InsufficientCreditsError`` propagates: turn it into HTTP 402 (its
``to_dict()`` is the body).

    app.sparked.world     chat message            10 credits
    canvas.sparked.world  canvas simple / complex 50 / 75 credits
    studio.sparked.world  video                   10 credits per second, refunded on failure
    train.sparked.world   model training          1000 credits per GPU hour, held at start,
                                                  settled once by the provider's webhook
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sparked_credits import CreditsClient, HoldExpiredError, MutationResult


# -- placeholders: replace with your implementation ------------------------------------
def process_chat_message(message: str) -> str:
    """PLACEHOLDER: call your model here."""
    return f"echo: {message}"


def generate_canvas(prompt: str, complex_: bool) -> str:
    """PLACEHOLDER: generate the canvas here."""
    return f"canvas({'complex' if complex_ else 'simple'}): {prompt}"


def render_video(prompt: str, seconds: float) -> str:
    """PLACEHOLDER: render the video here; raise if it fails."""
    return f"video({seconds}s): {prompt}"


# -- app.sparked.world -----------------------------------------------------------------
def send_chat_message(
    credits: CreditsClient,
    user_id: str,
    message_id: str,
    message: str,
    metadata: dict[str, Any] | None = None,
) -> tuple[str, MutationResult]:
    """Charge 10 credits, once per message id (a client retry is not charged twice).
    ``metadata``: e.g. the org member who spent from an organization's account."""
    charged = credits.charge(
        user_id, "chat_message", idempotency_key=f"chat:{message_id}", metadata=metadata
    )
    return process_chat_message(message), charged


# -- canvas.sparked.world --------------------------------------------------------------
def create_canvas(
    credits: CreditsClient,
    user_id: str,
    request_id: str,
    prompt: str,
    complex_: bool,
    metadata: dict[str, Any] | None = None,
) -> tuple[str, MutationResult]:
    action = "canvas_complex" if complex_ else "canvas_simple"
    charged = credits.charge(
        user_id, action, idempotency_key=f"canvas:{request_id}", metadata=metadata
    )
    return generate_canvas(prompt, complex_), charged


# -- studio.sparked.world --------------------------------------------------------------
def create_video(
    credits: CreditsClient,
    user_id: str,
    request_id: str,
    prompt: str,
    seconds: float,
    render: Callable[[str, float], str] = render_video,
    metadata: dict[str, Any] | None = None,
) -> tuple[str, MutationResult]:
    """Charge 10 credits per second up front; refund in full if rendering fails."""
    charged = credits.charge(
        user_id,
        "video_generation",
        seconds=seconds,
        idempotency_key=f"video:{request_id}",
        metadata=metadata,
    )
    try:
        return render(prompt, seconds), charged
    except Exception:
        credits.refund(user_id, charged.entry.id, reason="video generation failed")
        raise


# -- train.sparked.world ---------------------------------------------------------------
@dataclass(frozen=True)
class TrainingJob:
    """What the start route keeps (or passes to the provider as job metadata)."""

    job_id: str
    user_id: str
    hold_id: str
    reserved: int


def start_training(
    credits: CreditsClient,
    user_id: str,
    job_id: str,
    estimated_gpu_hours: float,
    max_runtime: timedelta = timedelta(hours=48),
    request_id: str | None = None,
) -> TrainingJob:
    """Reserve the estimate; a job that never reports is released when the hold expires.
    Once per ``request_id`` (default: the job id)."""
    hold = credits.reserve(
        user_id,
        action="model_training",
        usage={"gpu_hours": estimated_gpu_hours},
        ttl=max_runtime,
        idempotency_key=f"train-start:{request_id or job_id}",
        metadata={"job_id": job_id},
    )
    return TrainingJob(job_id, user_id, hold.hold_id, hold.amount)


def training_webhook(
    credits: CreditsClient, job: TrainingJob, actual_gpu_hours: float
) -> MutationResult | None:
    """The provider reports the job done: keep what it used, give back the rest.

    Settles exactly once per job, however many times the provider delivers the webhook;
    a job that ran longer than estimated takes the difference if the balance covers it.
    Returns None when the hold had already expired (its credits went back already).
    """
    cost = credits.calculate_cost("model_training", gpu_hours=actual_gpu_hours)
    try:
        return credits.settle(
            job.user_id,
            job.hold_id,
            cost,
            allow_overage=True,
            idempotency_key=f"train-done:{job.job_id}",
            metadata={"job_id": job.job_id, "gpu_hours": actual_gpu_hours},
        )
    except HoldExpiredError:
        return None
