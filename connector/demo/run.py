"""Run the demo: a temporary directory, the simulated CRM, the service as `serve` runs it, the
story, then the wait for Ctrl-C, and the clean-up whatever happened."""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from connector.config import Settings
from connector.demo.crms import SimulatedCRM, simulated
from connector.demo.story import Ending, Story, StoryError
from connector.i18n import N_, Message, Translator, translator
from connector.logs import configure_logging
from connector.ports import free_port
from connector.scheduler import LeaderScheduler, WorkerLoop
from connector.services import Services

HOST = "127.0.0.1"
WELCOME_BONUS = "100"
LOG_TAIL = 40
# The first line names the simulated CRM: one sentence per CRM (see story.py's docstring).
STARTING = {
    "bitrix24": N_("loyalty-connector demo: the service on a temporary SQLite database in "
                   "%(workdir)s, against a simulated Bitrix24 portal"),
    "amocrm": N_("loyalty-connector demo: the service on a temporary SQLite database in "
                 "%(workdir)s, against a simulated amoCRM account"),
}


class DemoError(RuntimeError):
    """The demo cannot run: one line saying why (`message`, shown in the demo's language)."""

    def __init__(self, message: Message) -> None:
        super().__init__(str(message))
        self.message = message


class DemoSettings(Settings):
    """The demo's settings come from the demo alone: a LOYALTY_DATABASE__URL (or any other
    variable) in the environment must not point it at a real database or CRM."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def demo_settings(workdir: Path, port: int, sim: SimulatedCRM, language: str = "ru") -> Settings:
    public_url = f"http://{HOST}:{port}"
    return DemoSettings(
        database={"url": f"sqlite:///{workdir / 'demo.db'}"},
        server={"host": HOST, "port": port, "public_url": public_url, "threads": 4,
                "admin_token": secrets.token_urlsafe(18)},
        # The worker looks often, so each step shows within a fraction of a second.
        inbox={"poll_seconds": 0.2},
        program={"welcome_bonus": WELCOME_BONUS, "language": language},
        card={"secret": secrets.token_urlsafe(32)},
        **{sim.crm: sim.settings(public_url)},
    )


@contextmanager
def running_service(settings: Settings) -> Iterator[Services]:
    """What `serve` runs — migrations, the Flask app under waitress, the inbox worker and the
    scheduler — with the HTTP server on a thread of its own, so the story can run beside it."""
    from waitress import create_server
    from waitress.wasyncore import close_all

    from webhooks import create_app

    services = Services.build(settings)
    try:
        services.migrate()
        # The port first: a taken one ends the demo before any job has started, so no job of
        # the scheduler's pool is left running against a CRM that is going away.
        try:
            server = create_server(create_app(services=services), host=settings.server.host,
                                   port=settings.server.port, threads=settings.server.threads)
        except OSError as exc:
            address = f"{settings.server.host}:{settings.server.port}"
            raise DemoError(N_("cannot listen on %(address)s: %(reason)s (choose another "
                               "--port)", address=address, reason=exc.strerror or str(exc))
                            ) from exc
        worker = WorkerLoop(services).start()
        leader = LeaderScheduler(services).start()
        http = threading.Thread(target=server.run, name="demo-http", daemon=True)
        http.start()
        try:
            yield services
        finally:
            # serve ends its loop from inside it; here it runs on another thread, and goes on
            # while its map holds a kept-alive connection: close them all, not only the
            # listening socket. It then ends within its poll timeout (1 s).
            server.task_dispatcher.shutdown()
            server.close()
            close_all(server._map)
            http.join(timeout=5)
            leader.stop()
            worker.stop()
    finally:
        services.close()


def run_demo(crm: str, port: int | None, *, wait: bool, echo: Callable[[str], None],
             echo_err: Callable[[str], None], until_stopped: Callable[[], None],
             language: str = "ru") -> int:
    """Play the story in `language` (program.language); with `wait`, keep the service up until
    `until_stopped` returns (Ctrl-C). Returns the exit status: 0, or 1 when a step failed (the
    service's log tail printed)."""
    t = translator(language)
    workdir = Path(tempfile.mkdtemp(prefix="loyalty-demo-"))
    log_path = workdir / "service.log"
    sim = simulated(crm)
    log_file = log_path.open("a", encoding="utf-8")
    handler = configure_logging("INFO", json_output=False, stream=log_file)
    try:
        sim.start()
        settings = demo_settings(workdir, port or free_port(HOST), sim, language)
        token = settings.server.admin_token
        if token is None:  # set just above; a settings change must not make it silent
            raise DemoError(N_("the demo's settings lost their admin token"))
        echo(Message(STARTING[sim.crm].msgid, {"workdir": str(workdir)}).render(t))
        with running_service(settings) as services:
            echo(t._("service listening on %(url)s", url=settings.server.public_url))
            ending = _play(sim, services, settings, token.get_secret_value(), echo, echo_err,
                           log_path, t)
            if ending is None:
                return 1
            echo("")
            echo(t._("dashboard:  %(url)s  (user: any, password: %(password)s)",
                     url=ending.dashboard_url, password=ending.admin_token))
            if ending.card_url:
                echo(t._("card page:  %(url)s", url=ending.card_url))
            if wait:
                echo(t._("the service and the simulated CRM keep running; Ctrl-C to stop "
                         "(the temporary database goes with them)"))
                with suppress(KeyboardInterrupt):
                    until_stopped()
        return 0
    except DemoError as exc:
        echo_err(t._("error: %(error)s", error=exc.message.render(t)))
        return 1
    finally:
        sim.stop()
        sim.close()
        logging.getLogger().removeHandler(handler)
        log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)
        echo(t._("demo stopped, temporary files removed"))


def _play(sim: SimulatedCRM, services: Services, settings: Settings, token: str,
          echo: Callable[[str], None], echo_err: Callable[[str], None],
          log_path: Path, t: Translator) -> Ending | None:
    try:
        return Story(sim, services, settings.server.public_url, token, echo, t).play()
    except Exception as exc:
        # What went wrong is the program's own words (or a library's): shown as they came.
        # A step that did not come about says so in the demo's language; anything else is a
        # library's or the program's own failure, shown as it came.
        error = exc.message.render(t) if isinstance(exc, StoryError) else \
            f"{type(exc).__name__}: {exc}"
        echo_err(t._("error: the demo stopped at a step: %(error)s", error=error))
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        for line in lines[-LOG_TAIL:]:
            echo_err(f"  log: {line}")
        return None
