"""`loyalty-connector demo` end to end, as a user runs it: a subprocess against each sandbox CRM,
with the test-only libraries made unimportable (an install without [test] must run it) and a
LOYALTY_DATABASE__URL in the environment that the demo must not touch."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from connector.ports import free_port
from tests.test_scheduler import command

REPO = Path(__file__).resolve().parents[1]
TEST_ONLY = ("pytest", "responses", "hypothesis", "schemathesis")
BLOCKER = f"""
import sys

class _TestOnly:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TEST_ONLY!r}:
            raise ImportError(f"{{name}} is a test dependency")
        return None

sys.meta_path.insert(0, _TestOnly())
"""
# Every step, in order; the numbers follow from the demo's program: welcome 100, 3% at Bronze
# on 12 000 and on 25 000 (the purchase that reaches Silver earns at the old rate), 500 redeemed.
# In English (`--language en`):
STEPS = [
    r"\[1/7\] `install {crm}` against the {what} at http://127\.0\.0\.1:\d+: 12 loyalty contact "
    r"fields created",
    r"\[2/7\] seeded 3 contacts and 4 open {deal}s; each new contact got the welcome bonus",
    r"\[3/7\] {deal} \d+ won \(12 000 RUB\): \+360 points at Bronze, written back into the "
    r"{what}",
    r"\[4/7\] {deal} \d+ won: \+750 points \(at Bronze, the rate before this purchase\); spend "
    r"37 000 reaches Silver: tier up, discount 3%",
    r"\[5/7\] a robot on {deal} \d+ redeems 500 points: 500 redeemed",
    r"\[6/7\] dashboard: (?P<dashboard>http://127\.0\.0\.1:{port}/dashboard) \(any user name, "
    r"password (?P<token>\S+)\)",
    r"\[7/7\] Anna Smirnova's card page, the URL the {what} holds in her card_url field: "
    r"(?P<card>http://127\.0\.0\.1:{port}/card/[A-Za-z0-9_-]{{32}})",
]
SHOWN = r"      the {what} now shows: balance (?P<b>\d+), available (?P=b), tier (?P<t>\w+), " \
        r"discount (?P<d>[\d.]+), card (?P<number>\d{{10}})"
CRMS = {
    "bitrix24": {"what": "portal", "deal": "deal",
                 "trigger": r"trigger loyalty_tier_up \(code demo\d+\) on DEAL_\d+",
                 "outcome": "on the deal: Loyalty: redeemed 500.00 points, balance 710.00"},
    "amocrm": {"what": "account", "deal": "lead",
               "trigger": r"tag loyalty_tier_up on contact 10971465",
               "outcome": "on the lead: Loyalty: redeemed 500.00 points, balance 710.00"},
}
STARTED = r"temporary SQLite database in (\S+), against"
STOPPED = "demo stopped, temporary files removed"
# In Russian, the default: each CRM's place and its won deal in its own words (Bitrix24's deal
# "успешно закрыта", amoCRM's lead "успешно реализована"), points agreeing with the number.
STEPS_RU = [
    r"\[1/7\] `install {crm}` {at} http://127\.0\.0\.1:\d+: создано 12 полей лояльности в "
    r"контактах",
    r"\[2/7\] добавлено 3 контакта и 4 открытые сделки; каждый новый контакт получил "
    r"приветственный бонус",
    r"\[3/7\] сделка \d+ {won} \(12 000 RUB\): \+360 баллов на уровне Bronze, записано {into}",
    r"\[4/7\] сделка \d+ {won}: \+750 баллов \(по ставке уровня Bronze, действовавшей до этой "
    r"покупки\); сумма покупок 37 000 достигает уровня Silver: уровень повышен, скидка 3%",
    r"\[5/7\] робот в сделке \d+ списывает 500 баллов: списано 500",
    r"\[6/7\] дашборд: (?P<dashboard>http://127\.0\.0\.1:{port}/dashboard) \(любое имя "
    r"пользователя, пароль (?P<token>\S+)\)",
    r"\[7/7\] страница карты клиентки Anna Smirnova, ссылка из её поля card_url {at}: "
    r"(?P<card>http://127\.0\.0\.1:{port}/card/[A-Za-z0-9_-]{{32}})",
]
SHOWN_RU = r"      {at} теперь: баланс (?P<b>\d+), доступно (?P=b), уровень (?P<t>\w+), " \
           r"скидка (?P<d>[\d.]+), карта (?P<number>\d{{10}})"
CRMS_RU = {
    "bitrix24": {"at": "на портале", "into": "на портал", "won": "успешно закрыта",
                 "trigger": r"триггер loyalty_tier_up \(код demo\d+\) для DEAL_\d+",
                 "outcome": "в сделке: Лояльность: списано 500,00 баллов, баланс 710,00"},
    "amocrm": {"at": "в аккаунте", "into": "в аккаунт", "won": "успешно реализована",
               "trigger": r"тег loyalty_tier_up добавлен: контакт 10971465",
               "outcome": "в сделке: Лояльность: списано 500,00 баллов, баланс 710,00"},
}
STARTED_RU = r"временной базе SQLite в (\S+), подключён"
STOPPED_RU = "демо остановлено, временные файлы удалены"


def demo_env(tmp_path: Path) -> dict[str, str]:
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    path = [str(blocker), str(REPO), os.environ.get("PYTHONPATH", "")]
    # Were it read, the demo could not start: nothing listens there.
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path)),
            "LOYALTY_DATABASE__URL": "postgresql+psycopg://nobody@127.0.0.1:9/nothing"}


def start(tmp_path: Path, crm: str, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*command(), "demo", "--crm", crm, "--port", str(port), *extra],
                            cwd=tmp_path, env=demo_env(tmp_path), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def check_story(output: str, crm: str, port: int, language: str = "en") -> dict[str, str]:
    """The steps in order with their numbers, what the CRM showed after each, the automation it
    recorded; the final field values read back from the simulated CRM."""
    words = (CRMS if language == "en" else CRMS_RU)[crm]
    found: dict[str, str] = {}
    position = 0
    for pattern in STEPS if language == "en" else STEPS_RU:
        match = re.compile(pattern.format(crm=crm, port=port, **words)).search(output, position)
        assert match is not None, f"missing {pattern!r} after:\n{output[position:]}"
        position = match.end()
        found.update(match.groupdict())
    shown = [m.groupdict() for m in re.finditer(
        (SHOWN if language == "en" else SHOWN_RU).format(**words), output)]
    assert [(s["b"], s["t"], s["d"]) for s in shown] == [
        ("100", "Bronze", "0"), ("460", "Bronze", "0"), ("1210", "Silver", "3"),
        ("710", "Silver", "3")]
    assert len({s["number"] for s in shown}) == 1  # one card, written back once and kept
    fired = "automation fired: " if language == "en" else "сработала автоматизация: "
    assert re.search(fired + words["trigger"], output)
    assert words["outcome"] in output
    workdir = re.search(STARTED if language == "en" else STARTED_RU, output)
    assert workdir is not None
    found["workdir"] = workdir.group(1)
    return found


@pytest.mark.slow
@pytest.mark.parametrize(("crm", "language"), [("bitrix24", "en"), ("amocrm", "en"),
                                               ("bitrix24", None), ("amocrm", "ru")])
def test_demo_plays_the_story_against_the_simulated_crm_and_cleans_up(
        tmp_path: Path, crm: str, language: str | None) -> None:
    """In Russian when no language is given (program.language's default), else in the one
    given."""
    port = free_port()
    chosen = ("--language", language) if language else ()
    process = start(tmp_path, crm, port, "--no-wait", *chosen)
    started = time.monotonic()
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert time.monotonic() - started < 60, "the demo is meant to take well under a minute"
    found = check_story(output, crm, port, language or "ru")
    assert output.rstrip().endswith(STOPPED if language == "en" else STOPPED_RU)
    if language != "en":
        # The robot's note on the deal is the CRM's record (the connector's CRM-side text).
        story = [line for line in output.splitlines() if not line.startswith("  log:")
                 and CRMS_RU[crm]["outcome"] not in line]
        assert not [line for line in story if re.search(
            r"\b(points|won|redeems|shows|fired|contacts|seeded)\b", line)], output
    assert not Path(found["workdir"]).exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "blocker"]  # nothing left where it ran


@pytest.mark.slow
def test_demo_keeps_the_dashboard_and_card_page_open_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    process = start(tmp_path, "bitrix24", port, "--language", "en")
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while not lines or "Ctrl-C to stop" not in lines[-1]:
            line = process.stdout.readline()
            assert line, "the demo ended before waiting:\n" + "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        found = check_story("".join(lines), "bitrix24", port)
        dashboard = requests.get(found["dashboard"], timeout=10,
                                 auth=("owner", found["token"]))
        assert dashboard.status_code == 200 and "text/html" in dashboard.headers["Content-Type"]
        assert requests.get(found["dashboard"], timeout=10).status_code in (401, 403)
        card = requests.get(found["card"], timeout=10)
        assert card.status_code == 200 and "text/html" in card.headers["Content-Type"]
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # the test failed: stop it the way that cleans up
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, rest
    assert "demo stopped, temporary files removed" in rest
    assert not Path(found["workdir"]).exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(found["dashboard"], timeout=5)


def test_a_taken_port_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(tmp_path, "amocrm", port, "--no-wait", "--language", "en")
        output, _ = process.communicate(timeout=60)
        russian = start(tmp_path, "amocrm", port, "--no-wait")
        said, _ = russian.communicate(timeout=60)
    assert process.returncode == 1, output
    assert re.search(rf"^error: cannot listen on 127\.0\.0\.1:{port}: .+ \(choose another "
                     r"--port\)$", output, re.MULTILINE), output
    assert russian.returncode == 1, said
    assert re.search(rf"^ошибка: не удаётся принимать запросы на 127\.0\.0\.1:{port}: .+ "
                     r"\(выберите другой --port\)$", said, re.MULTILINE), said
    assert "Traceback" not in output
    workdir = re.search(r"temporary SQLite database in (\S+), against", output)
    assert workdir is not None and not Path(workdir.group(1)).exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "blocker"]


def test_an_unknown_crm_is_bad_usage(tmp_path: Path) -> None:
    process = start(tmp_path, "salesforce", free_port(), "--no-wait")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "Invalid value for '--crm'" in output



def test_the_readme_shows_the_steps_the_demo_prints() -> None:
    """As `demo` prints them with no option: in Russian."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    shown = [line for line in section.splitlines() if re.match(r"\[\d/7\]", line)]
    assert len(shown) == len(STEPS_RU)
    words = {**CRMS_RU["bitrix24"], "crm": "bitrix24", "port": r"\d+"}
    for line, step in zip(shown, STEPS_RU, strict=True):
        # The README abridges the card page's link.
        assert re.match(step.format(**words).split("(?P<card>")[0], line), line


def test_a_step_that_does_not_come_about_is_said_in_the_demo_language() -> None:
    from connector.demo.story import TEXTS, StoryError
    from connector.i18n import N_, Message, translator

    error = StoryError(N_("timed out after %(seconds)s s waiting for %(what)s", seconds="30",
                          what=Message(TEXTS["amocrm"]["settled"].msgid, {"id": 5002})))
    assert str(error) == ("timed out after 30 s waiting for lead 5002 settled, written back and "
                          "its trigger fired")
    assert error.message.render(translator("ru")) == (
        "за 30 с не дождались: сделка 5002 учтена, записана в CRM, её триггер сработал")
