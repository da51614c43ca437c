"""The orchestrator's FastAPI app: health, metrics, and the runtime's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Mapping
import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from parley import bus, subjects, telemetry

from .adapters.fixed import FixedLatencyBrain
from .adapters.llm import brain_from_env
from .observe import StepObserver
from .runtime import Runtime
from .settings import Settings
from . import reducer
from .appointments import AppointmentBook, registry_for
from .clinic import CLINIC, Clinic

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


POLICY_PREFIX = "PARLEY_POLICY_"


def policy_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """Deployment-wide session policy: ``PARLEY_POLICY_<FIELD>`` for any field
    of ``reducer.Policy`` (e.g. PARLEY_POLICY_REPROMPT_AFTER=8,
    PARLEY_POLICY_REPROMPT_TEXT="Are you still there?"). A session's own
    params override them. A bad name or value stops the service at start,
    naming the variable."""
    out: dict[str, str] = {}
    for var, value in env.items():
        if not var.startswith(POLICY_PREFIX):
            continue
        name = var[len(POLICY_PREFIX) :].lower()
        if name not in reducer.Policy.__struct_fields__:
            raise ValueError(f"{var} names no session policy setting (known: {', '.join(reducer.Policy.__struct_fields__)})")
        if reducer.policy_from_params({name: value})[1]:
            kind = type(getattr(reducer.Policy(), name)).__name__
            raise ValueError(f"{var}={value!r} is not a valid {kind} for {name}")
        out[name] = value
    return out


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
    tel = telemetry.setup("orchestrator")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        book = AppointmentBook(settings.data_dir / "appointments.sqlite3", clinic=CLINIC, clock=settings.clock)
        transfer_to = settings.env.get("PARLEY_TRANSFER_TO", "").strip()
        tools = registry_for(book, transfer=bool(transfer_to))
        brain = FixedLatencyBrain() if settings.providers == "fixed" else brain_from_env(settings.env, tools, clock=settings.clock)
        defaults = {"system_prompt": settings.env.get("PARLEY_SYSTEM_PROMPT", SYSTEM_PROMPT)}
        if transfer_to:
            defaults["transfer_to"] = transfer_to
            defaults["transfer_warm"] = settings.env.get("PARLEY_TRANSFER_WARM", "true")
        defaults.update(policy_defaults(settings.env))
        if settings.env.get("PARLEY_VOICEMAIL_MESSAGE"):
            defaults["voicemail_message"] = settings.env["PARLEY_VOICEMAIL_MESSAGE"]
        greeting = settings.env.get("PARLEY_GREETING", getattr(brain, "greeting", ""))
        if greeting:
            defaults["greeting"] = greeting
        nc = await bus.connect(settings.nats_url, name="orchestrator", credentials=settings.nats_credentials)
        runtime = Runtime(nc=nc, brain=brain, tools=tools, defaults=defaults, clock=settings.clock, log_retention=settings.log_retention_days * 86400)
        runtime.observer = StepObserver(tel)
        await runtime.start()
        callbacks_sub = await nc.subscribe(subjects.ORCHESTRATOR_CALLBACKS, queue=subjects.ORCHESTRATOR_GROUP, cb=_callbacks_responder(book))
        state.update(runtime=runtime, brain=brain)
        log.info("orchestrator ready", extra={"brain": brain.name, "nats": settings.nats_url, "clinic_clock": settings.clock.describe()})
        try:
            yield
        finally:
            await callbacks_sub.unsubscribe()
            await runtime.stop()
            await nc.drain()
            telemetry.shutdown()

    app = FastAPI(title="Parley orchestrator", lifespan=lifespan)
    tel.add_metrics_route(app)

    @app.get("/healthz")
    async def healthz():
        if "runtime" not in state:
            return JSONResponse({"ok": False}, status_code=503)
        return {"ok": True, "brain": state["brain"].name, "stats": state["runtime"].stats}

    app.state.parley = state
    return app
