"""What the page says: about the model in use, an input before it runs, a finished run, and each step."""

from __future__ import annotations

from .models import LoadedModel
from .restore import Plan, Restoration, StepView, per_step_limit
from .speed import format_duration


def model_text(model: LoadedModel) -> str:
    """The model's name, scale, licence, device and per-step-view limit."""
    pipe = model.pipe
    side = per_step_limit(pipe)
    return (
        f"**Model:** {model.name}, ×{pipe.upscale_factor}, on {pipe.device.type.upper()}. "
        f"**Licence of these weights:** {model.licence}.\n\n"
        f"ITER's per-step view is shown for inputs that run in one piece: up to about {side}×{side} pixels "
        "with this model here. Larger inputs are tiled (as `iter-sr` does) and show the result only."
    )


def input_text(model: LoadedModel, width: int, height: int, steps: int, plan: Plan) -> str:
    """Input and output sizes, whole or tiled, and the expected time."""
    scale = model.pipe.upscale_factor
    seconds = model.speed.estimate(width * height, steps, plan.per_step_view)
    how = ("runs in one piece, with ITER's per-step view" if plan.per_step_view
           else f"runs in {plan.num_tiles} tiles, without the per-step view (too large to run in one piece)")
    return (
        f"**Input** {width}×{height} px → **output** {width * scale}×{height * scale} px; {how}. "
        f"**Expected time** at {steps} steps: {format_duration(seconds)} on this machine's "
        f"{model.pipe.device.type.upper()} (an estimate from the speed measured here)."
    )


def run_text(restoration: Restoration) -> str:
    """What ran: time, and which steps were executed (adaptive start) or how many tiles."""
    result, total = restoration.result, restoration.num_inference_steps
    done = f"Restored to {result.width}×{result.height} px in {restoration.seconds:.1f} s"
    if not restoration.plan.per_step_view:
        return f"{done}, in {restoration.plan.num_tiles} tiles of {total} steps each."
    executed = len(restoration.steps)
    if executed == 0:
        return f"{done}. φ_e trusted every token, so none of the {total} steps ran: the result is E_l's tokens."
    skipped = total - executed
    skipped_steps = "Step 1 was" if skipped == 1 else f"Steps 1–{skipped} were"
    why = (f" {skipped_steps} skipped: φ_e already trusted more tokens than they keep (adaptive start)."
           if skipped else "")
    return f"{done}; {executed} of {total} refinement steps ran.{why}"


def step_caption(step: StepView, num_steps: int) -> str:
    """Gallery caption of one step."""
    share = 100 * step.kept_tokens / step.num_tokens
    return f"Step {step.index + 1}/{num_steps}: {step.kept_tokens}/{step.num_tokens} tokens kept ({share:.0f} %)"
