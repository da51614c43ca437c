"""The orchestrator's FastAPI app: health, metrics, and the runtime's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from parley import bus, subjects, telemetry
from parley.load import Reporter

from .adapters.fixed import FixedLatencyBrain
from .adapters.llm import brain_for
from .observe import StepObserver
from .runtime import Runtime
from .settings import Settings
from . import reducer
from .appointments import AppointmentBook, registry_for
from .clinic import CALLER_EXAMPLES, CLINIC, Clinic

log = logging.getLogger("parley.orchestrator")

def system_prompt(clinic: Clinic) -> str:
    """The LLM's instructions, written from the clinic's data. ``{today}`` and
    ``{caller}`` are filled in per session by the runtime."""
    return (
        f"You are the receptionist of {clinic.name}, a {clinic.kind}, answering the phone. Today is {{today}}. "
        f"The clinic is open {clinic.hours.describe()}. The caller is calling from {{caller}}. "
        "You can book appointments (book_appointment; check_availability lists free times), tell callers when they are booked "
        "(find_appointments, by their number or by the name the booking is under), cancel appointments (cancel_appointment) "
        "and move them (reschedule_appointment). For anything else the caller needs that you cannot do yourself, record a task "
        "for the front desk with request_callback, then tell the caller they will be called back; never promise a call-back "
        "you did not record. Say what you did only after the tool confirmed it. "
        "Your replies are spoken aloud: one to three short sentences, no lists, no markdown, "
        "times said like '3 p.m.'. If you did not understand, say so plainly."
    )


SYSTEM_PROMPT = system_prompt(CLINIC)


def session_defaults(settings: Settings, brain) -> dict[str, str]:
    """The deployment's session policy: the clinic's prompt and the brain's
    greeting unless PARLEY_POLICY_* says otherwise, the transfer number. A
    session's own parameters override these (within parley.session_params)."""
    defaults = {"system_prompt": SYSTEM_PROMPT}
    if getattr(brain, "greeting", ""):
        defaults["greeting"] = brain.greeting
    if settings.transfer_to:
        defaults["transfer_to"] = settings.transfer_to
    defaults.update(settings.policy)
    return defaults


def things_to_say(brain, defaults: dict[str, str]) -> dict:
    """For the page (``ORCHESTRATOR_INFO``): what a newcomer can say to the
    agent that answers, and to whom. The clinic's front desk when the clinic
    answers (the built-in receptionist, an LLM given the clinic's prompt, the
    benchmark brain, whose every answer is a booking); nothing when the
    deployment gave its LLM a prompt of its own: Parley cannot know what
    that agent does, and the page says to ask it."""
    if isinstance(brain, FixedLatencyBrain):
        return {"examples": list(CALLER_EXAMPLES), "examples_for": "a benchmark brain: every answer is the same booking"}
    if getattr(brain, "model", None) is not None and defaults.get("system_prompt") != SYSTEM_PROMPT:
        return {"examples": [], "examples_for": "an agent with the deployment's own prompt: ask it what it can do"}
    return {"examples": list(CALLER_EXAMPLES), "examples_for": "the clinic's receptionist"}


def _callbacks_responder(book: AppointmentBook):
    """Answer the inspector's request for the front desk's call-back tasks."""

    async def respond(msg) -> None:
        try:
            body = {"callbacks": await asyncio.to_thread(book.callbacks)}
        except Exception as exc:  # noqa: BLE001 - the asker gets the reason, the log the trace
            log.exception("could not list call-back tasks")
            body = {"error": f"could not list call-back tasks: {type(exc).__name__}"}
        await msg.respond(json.dumps(body).encode())

    return respond


def create_app(settings: Settings) -> FastAPI:
    state: dict = {}
    tel = telemetry.setup("orchestrator", settings.otlp_endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        book = AppointmentBook(settings.data_dir / "appointments.sqlite3", clinic=CLINIC, clock=settings.clock)
        tools = registry_for(book, transfer=bool(settings.transfer_to))
        brain = FixedLatencyBrain() if settings.fixed else brain_for(settings)
        defaults = session_defaults(settings, brain)
        nc = await bus.connect(settings.nats_url, name="orchestrator", credentials=settings.nats_credentials, replicas=settings.nats_replicas)
        runtime = Runtime(nc=nc, brain=brain, tools=tools, defaults=defaults, clock=settings.clock, log_retention=settings.log_retention_days * 86400, tel=tel,
                          token_batch=settings.llm_token_batch_ms / 1000, about=things_to_say(brain, defaults))  # fmt: skip
        runtime.observer = StepObserver(tel)
        await runtime.start()
        callbacks_sub = await nc.subscribe(subjects.ORCHESTRATOR_CALLBACKS, queue=subjects.ORCHESTRATOR_GROUP, cb=_callbacks_responder(book))
        state.update(runtime=runtime, brain=brain)
        reporter = Reporter(nc, "orchestrator", runtime.replica, lambda: len(runtime.listed), settings.capacity)
        await reporter.start()
        log.info("orchestrator ready", extra={"brain": brain.name, "nats": settings.nats_url, "clinic_clock": settings.clock.describe()})
        try:
            yield
        finally:
            await callbacks_sub.unsubscribe()
            await reporter.stop()
            await runtime.stop()
            await nc.drain()
            telemetry.shutdown()

    app = FastAPI(title="Parley orchestrator", lifespan=lifespan)
    tel.add_metrics_route(app)

    @app.get("/healthz")
    async def healthz():
        if "runtime" not in state:
            return JSONResponse({"ok": False}, status_code=503)
        return {"ok": True, "service": "orchestrator", "brain": state["brain"].name, "stats": state["runtime"].stats}

    app.state.parley = state
    return app
