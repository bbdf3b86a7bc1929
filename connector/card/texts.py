"""The card page's words and how it writes numbers and dates, in the program's language
(`program.language`: "ru", the default, or "en")."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

NBSP = "\u00a0"
THIN = "\u202f"  # groups digits the Russian way, never wraps
MINUS = "\u2212"
CURRENCY_SIGNS = {"RUB": "₽", "USD": "$", "EUR": "€", "KZT": "₸", "BYN": "Br", "UAH": "₴"}

TEXTS: dict[str, dict[str, str]] = {
    "ru": {
        "title": "Карта лояльности",
        "greeting": "Здравствуйте, {name}!",
        "balance": "Баланс",
        "available": "Можно потратить: {points}",
        "pending": "Скоро станут доступны: {points}",
        "tier": "Уровень",
        "discount": "скидка {percent}",
        "next_tier": "До уровня «{tier}» осталось купить на {amount}",
        "top_tier": "Это высший уровень программы",
        "expiring": "{date} сгорят {points}",
        "no_expiring": "Сгорающих баллов нет",
        "show_at_checkout": "Покажите кассиру",
        "card_number": "Номер карты",
        "qr_title": "QR-код карты {number}",
        "barcode_title": "Штрихкод карты {number}",
        "referral": "Приведите друга",
        "referral_code": "Ваш код: {code}",
        "share": "Поделиться ссылкой",
        "history": "Последние операции",
        "no_history": "Операций пока нет",
        "private": "Это ваша личная страница: не пересылайте ссылку.",
        "not_found_title": "Карта не найдена",
        "not_found": "Ссылка устарела или набрана с ошибкой. Новую ссылку пришлёт менеджер.",
        "too_many_title": "Слишком много запросов",
        "too_many": "Попробуйте снова через {seconds} с.",
        "purchase": "Покупка на {amount}",
        "accrual": "Покупка", "redemption": "Оплата баллами", "reversal": "Возврат",
        "expiry": "Баллы сгорели", "adjustment": "Корректировка", "bonus": "Бонус",
        "reward": "Награда",
        "perks": "Привилегии уровня",
        "rewards": "Награды за баллы",
        "claim": "Получить за {points}",
        "to_collect": "Ждут вас",
        "collect_code": "код {code}",
        "claimed": "Готово! {name}: покажите код {code} менеджеру.",
        "reward_points": "Не хватает баллов.", "reward_stock": "Награды закончились.",
        "reward_limit": "Вы уже получили эту награду.",
        "reward_tier": "Доступно с уровня «{tier}».",
        "reward_window": "Сейчас эту награду получить нельзя.",
        "reward_disabled": "Эта награда больше не выдаётся.",
    },
    "en": {
        "title": "Loyalty card",
        "greeting": "Hello, {name}!",
        "balance": "Balance",
        "available": "Available to spend: {points}",
        "pending": "Available soon: {points}",
        "tier": "Tier",
        "discount": "{percent} off",
        "next_tier": "Spend {amount} more to reach {tier}",
        "top_tier": "You are at the top tier",
        "expiring": "{points} expire on {date}",
        "no_expiring": "No points are about to expire",
        "show_at_checkout": "Show this at the checkout",
        "card_number": "Card number",
        "qr_title": "QR code of card {number}",
        "barcode_title": "Barcode of card {number}",
        "referral": "Bring a friend",
        "referral_code": "Your code: {code}",
        "share": "Share the link",
        "history": "Latest activity",
        "no_history": "No activity yet",
        "private": "This page is yours alone: do not forward the link.",
        "not_found_title": "Card not found",
        "not_found": "The link is out of date or mistyped. Your manager can send a new one.",
        "too_many_title": "Too many requests",
        "too_many": "Please try again in {seconds} s.",
        "purchase": "Purchase of {amount}",
        "accrual": "Purchase", "redemption": "Paid with points", "reversal": "Return",
        "expiry": "Points expired", "adjustment": "Adjustment", "bonus": "Bonus",
        "reward": "Reward",
        "perks": "Perks of your tier",
        "rewards": "Rewards for points",
        "claim": "Get it for {points}",
        "to_collect": "Waiting for you",
        "collect_code": "code {code}",
        "claimed": "Done! {name}: show code {code} to staff.",
        "reward_points": "Not enough points.", "reward_stock": "Out of stock.",
        "reward_limit": "You already have this reward.",
        "reward_tier": "For {tier} and above.",
        "reward_window": "This reward cannot be claimed now.",
        "reward_disabled": "This reward is no longer offered.",
    },
}
MONTHS = {
    "ru": ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа",
           "сентября", "октября", "ноября", "декабря"),
    "en": ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"),
}


def number(value: Decimal, language: str) -> str:
    """1 234 or 1 234,5 (ru); 1,234 or 1,234.5 (en); decimals only when there are any."""
    whole = value == value.to_integral_value()
    text = format(abs(value), ",.0f" if whole else ",.2f")
    if not whole:
        text = text.rstrip("0")
    if language == "ru":
        text = text.replace(",", THIN).replace(".", ",")
    return (MINUS if value < 0 else "") + text


def points(value: Decimal, language: str) -> str:
    """"150 баллов", "1 балл", "2,5 балла"; "150 points", "1 point"."""
    return f"{number(value, language)}{NBSP}{points_word(value, language)}"


def points_word(value: Decimal, language: str) -> str:
    if language == "en":
        return "point" if abs(value) == 1 else "points"
    if value != value.to_integral_value():
        return "балла"  # a fraction takes the genitive singular: 2,5 балла
    n = int(abs(value))
    if n % 10 == 1 and n % 100 != 11:
        return "балл"
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return "балла"
    return "баллов"


def money(value: Decimal, currency: str, language: str) -> str:
    return f"{number(value, language)}{NBSP}{CURRENCY_SIGNS.get(currency, currency)}"


def percent(value: Decimal, language: str) -> str:
    return f"{number(value, language)}{NBSP}%" if language == "ru" else \
        f"{number(value, language)}%"


def day(value: date, language: str) -> str:
    return f"{value.day}{NBSP}{MONTHS[language][value.month - 1]} {value.year}"
