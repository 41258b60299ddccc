"""Seeded synthetic raw app events and consent records, written as the raw landing zone.

This is the only module that writes raw personal data (made up, but shaped like the real thing):
profiles with names, e-mails, phones, home cities with jittered GPS, IP addresses and devices;
free text in which PII turns up at realistic rates; a consent table; and a small share of
malformed lines so that quarantine has work to do. The same seed gives the same files.

A `Drift` injects a known change (a category's share of one city's events raised from a given
day), so that drift monitoring can be shown to fire on a real shift and stay quiet otherwise.
"""

from __future__ import annotations

import json
import random
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from faker import Faker

from pipeline.core import progress
from pipeline.core.fs import DataPath, atomic_write_bytes, atomic_writer
from pipeline.core.layout import partition_name
from pipeline.stages import INPUT_MARKER, ZONES

# (city, latitude, longitude, weight). Most users live in the app's markets (config regions);
# a few live elsewhere, so features keyed by public regions must cope with unlisted places.
CITIES = [
    ("New York", 40.7128, -74.0060, 14), ("Los Angeles", 34.0522, -118.2437, 12),
    ("Chicago", 41.8781, -87.6298, 9), ("Houston", 29.7604, -95.3698, 9),
    ("Phoenix", 33.4484, -112.0740, 6), ("Philadelphia", 39.9526, -75.1652, 6),
    ("Seattle", 47.6062, -122.3321, 6), ("Denver", 39.7392, -104.9903, 5),
    ("Boston", 42.3601, -71.0589, 6), ("Atlanta", 33.7490, -84.3880, 6),
    ("Miami", 25.7617, -80.1918, 6), ("Portland", 45.5152, -122.6784, 4),
    ("Las Vegas", 36.1699, -115.1398, 2), ("Minneapolis", 44.9778, -93.2650, 2),
]
# ZIP3 areas per city; 102 (New York) and 890 (Las Vegas) are HIPAA-restricted ZIP3s.
ZIP3 = {"New York": ["100", "101", "102", "104", "112"], "Los Angeles": ["900", "902", "913"],
        "Chicago": ["606", "604"], "Houston": ["770", "773"], "Phoenix": ["850", "852"],
        "Philadelphia": ["191"], "Seattle": ["981"], "Denver": ["802"], "Boston": ["021", "022"],
        "Atlanta": ["303"], "Miami": ["331"], "Portland": ["972"],
        "Las Vegas": ["891", "890", "889"], "Minneapolis": ["554"]}
DEVICES = [  # (os, model, weight)
    ("iOS", "iPhone 15", 20), ("iOS", "iPhone 14", 12), ("iOS", "iPhone SE", 4),
    ("Android", "Pixel 8", 8), ("Android", "Galaxy S24", 12), ("Android", "Galaxy A54", 8),
    ("iPadOS", "iPad Air", 6), ("iPadOS", "iPad Pro", 3),
    ("Windows", "Surface Laptop", 6), ("Windows", "Dell XPS 13", 6),
    ("macOS", "MacBook Air", 10), ("Linux", "ThinkPad X1", 2),
]
CATEGORIES = ["news", "sports", "music", "movies", "fashion", "electronics", "travel", "food"]
AGE_EDGES = (18, 25, 35, 45, 55, 65)  # the default age bands: cohort effects follow them
# How strongly a user's category mix follows their cohort (age band, region, device type): the
# cohort effects' standard deviation on the log-odds scale, against 1 for individual taste.
# 0 gives no cohort signal at all. At the default, a user's cohort (from the other half of the
# users) predicts which categories they over-index on with audience AUC about 0.56, as age band
# x gender does on MovieLens 100k (0.57, `bench/utility`); measured in tests/demo.
COHORT_SIGNAL = 0.5
EVENT_TYPES = [("view", 50), ("click", 25), ("purchase", 5), ("search", 12),
               ("support_message", 8)]
SEARCH_TERMS = {
    "news": ["election results", "local weather", "stock market today"],
    "sports": ["nba scores", "running shoes", "yoga mat", "world cup tickets"],
    "music": ["jazz playlist", "concert tickets", "vinyl records"],
    "movies": ["new releases", "sci-fi classics", "movie showtimes"],
    "fashion": ["winter coat", "leather boots", "summer dress sale"],
    "electronics": ["noise cancelling headphones", "usb-c charger", "4k monitor"],
    "travel": ["cheap flights", "hotels near airport", "beach resorts"],
    "food": ["vegan recipes", "pizza delivery", "coffee beans"],
}


@dataclass(frozen=True)
class Profile:
    account_id: str
    name: str
    email: str
    phone: str
    age: int
    city: str
    postal_code: str
    lat: float
    lon: float
    ip: str
    device_id: str
    os: str
    model: str
    preference: tuple[float, ...]  # weights over CATEGORIES
    activity: float


@dataclass(frozen=True)
class Drift:
    """From `start` on, `category`'s share of the events of users living in `city` rises by
    `share` (0.1: ten points) for each of them, the other categories giving way in proportion:
    the event's category is replaced with probability share / (1 - the user's own share)."""

    city: str
    category: str
    share: float
    start: date

    def __post_init__(self) -> None:
        if self.city not in {c[0] for c in CITIES}:
            raise ValueError(f"drift: unknown city {self.city!r}; one of "
                             f"{', '.join(c[0] for c in CITIES)}")
        if self.category not in CATEGORIES:
            raise ValueError(f"drift: unknown category {self.category!r}; one of "
                             f"{', '.join(CATEGORIES)}")
        if not 0 < self.share < 1:
            raise ValueError("drift: share must be between 0 and 1")

    def applies(self, p: Profile, day: date) -> bool:
        return day >= self.start and p.city == self.city

    def category_for(self, p: Profile, drawn: str, rng: random.Random) -> str:
        own = p.preference[CATEGORIES.index(self.category)] / sum(p.preference)
        moved = min(1.0, self.share / max(1e-9, 1 - own))
        return self.category if rng.random() < moved else drawn


def _weighted(rng: random.Random, items: list, weight_index: int = -1):
    return rng.choices(items, weights=[i[weight_index] for i in items])[0]


def _cohort_effects(strength: float) -> dict[str, list[float]]:
    """Fixed log-odds effects per category for every age band, city and OS, split evenly in
    variance between the three, drawn from their own seed so they never depend on the data."""
    rng = random.Random("cohort-effects")
    sd = strength / 3**0.5
    levels = [f"age:{lo}" for lo in (0, *AGE_EDGES)] + [f"city:{c[0]}" for c in CITIES] + [
        f"os:{d[0]}" for d in DEVICES]
    return {level: [rng.gauss(0, sd) for _ in CATEGORIES] for level in levels}


def _preference(age: int, city: str, os_name: str, effects: dict[str, list[float]],
                rng: random.Random) -> tuple[float, ...]:
    band = max((lo for lo in (0, *AGE_EDGES) if age >= lo), default=0)
    cohort = [a + c + o for a, c, o in zip(effects[f"age:{band}"], effects[f"city:{city}"],
                                           effects[f"os:{os_name}"], strict=True)]
    logits = [x + rng.gauss(0, 1) for x in cohort]
    top = max(logits)
    return tuple(round(2.718281828459045 ** (x - top), 6) for x in logits)


def _profiles(users: range, rng: random.Random, fake: Faker, cohort_signal: float
              ) -> list[Profile]:
    profiles = []
    effects = _cohort_effects(cohort_signal)
    for i in users:
        city, lat, lon, _ = _weighted(rng, CITIES)
        os_name, model, _ = _weighted(rng, DEVICES)
        age = max(18, min(90, int(rng.gauss(38, 13))))
        first, last = fake.first_name(), fake.last_name()
        profiles.append(Profile(
            account_id=f"acct-{i:06d}-{rng.randrange(16**6):06x}",
            name=f"{first} {last}",
            email=f"{first}.{last}{rng.randrange(100)}@{fake.free_email_domain()}".lower(),
            phone=fake.phone_number(),
            age=age,
            city=city,
            # From the account number, not `rng`, so the other draws stay as they were.
            postal_code=ZIP3[city][i % len(ZIP3[city])] + f"{i * 37 % 100:02d}",
            lat=lat + rng.gauss(0, 0.05), lon=lon + rng.gauss(0, 0.05),
            ip=fake.ipv4_public() if rng.random() < 0.9 else fake.ipv6(),
            device_id=fake.uuid4(),
            os=os_name, model=model,
            preference=_preference(age, city, os_name, effects, rng),
            # A few very heavy users: contribution bounding in the DP stage must cope.
            activity=rng.lognormvariate(2.0, 0.6) * (8 if rng.random() < 0.01 else 1),
        ))
    return profiles


def _support_text(p: Profile, rng: random.Random, fake: Faker) -> str:
    """Support messages: most carry some PII, as real ones do."""
    templates = [
        lambda: f"Hi, this is {p.name}. I can't log in, please reset my password.",
        lambda: f"Please contact me at {p.email} about my last order.",
        lambda: f"My phone number changed, call me on {p.phone} instead.",
        lambda: f"Please ship the replacement to {fake.street_address()}, {p.city}.",
        lambda: f"I was charged twice on card {fake.credit_card_number()}, please refund.",
        lambda: f"Refund to my account IBAN {fake.iban()} please, thanks {p.name.split()[0]}",
        lambda: f"The app shows the wrong SSN {fake.ssn()} on my tax form",
        lambda: f"Login from {p.ip} was not me, please lock the account.",
        lambda: "The video keeps buffering on my tablet, can you help?",
        lambda: "How do I change my notification settings?",
        lambda: f"My friend {fake.name()} recommended this app, how do I add them?",
    ]
    weights = [14, 14, 10, 8, 6, 3, 2, 4, 18, 15, 6]
    return rng.choices(templates, weights=weights)[0]()


def _search_text(p: Profile, category: str, rng: random.Random, fake: Faker) -> str:
    term = rng.choice(SEARCH_TERMS[category])
    roll = rng.random()
    if roll < 0.03:
        return f"{term} {p.email}"  # pasted into the wrong box
    if roll < 0.05:
        return f"{fake.name()} {term}"
    return term


def _event(p: Profile, day: date, rng: random.Random, fake: Faker,
           drift: tuple[Drift, random.Random] | None = None) -> dict:
    etype = _weighted(rng, EVENT_TYPES)[0]
    category = rng.choices(CATEGORIES, weights=p.preference)[0]
    if drift is not None and drift[0].applies(p, day):  # its own stream: other draws unchanged
        category = drift[0].category_for(p, category, drift[1])
    ts = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
        seconds=rng.randrange(86_400))
    event = {
        "event_id": fake.uuid4(), "account_id": p.account_id, "name": p.name, "email": p.email,
        "phone": p.phone, "age": p.age, "home_city": p.city,
        "postal_code": p.postal_code,
        "latitude": round(p.lat + rng.gauss(0, 0.01), 6),
        "longitude": round(p.lon + rng.gauss(0, 0.01), 6),
        "ip_address": p.ip, "device_id": p.device_id, "device_model": p.model, "os": p.os,
        "event_type": etype, "content_category": category,
        "session_seconds": int(min(7200, rng.lognormvariate(5.0, 1.0))),
        "event_time": ts.isoformat().replace("+00:00", "Z"), "text": None,
    }
    if etype == "search":
        event["text"] = _search_text(p, category, rng, fake)
    elif etype == "support_message":
        event["text"] = _support_text(p, rng, fake)
        event["content_category"] = None
    return event


def _corrupt(event: dict, rng: random.Random) -> str:
    """One malformed line, of the kinds real feeds produce."""
    kind = rng.choice(["broken_json", "wrong_type", "missing_field", "out_of_range",
                       "invalid_value"])
    bad = dict(event)
    if kind == "broken_json":
        line = json.dumps(bad)
        return line[: rng.randrange(10, len(line) - 5)]
    if kind == "wrong_type":
        bad[rng.choice(["age", "session_seconds", "latitude"])] = "not-a-number"
    elif kind == "missing_field":
        del bad[rng.choice(["account_id", "event_time", "event_type"])]
    elif kind == "out_of_range":
        bad[rng.choice(["age", "latitude"])] = 999
    else:
        bad["event_type"] = "scroll"
    return json.dumps(bad)


def _consent(profiles: list[Profile], start: date, days: int, rng: random.Random) -> list[dict]:
    """Most users grant personalization before the period; some never do, some revoke."""
    records = []
    t0 = datetime(start.year, start.month, start.day, tzinfo=UTC)
    for p in profiles:
        roll = rng.random()
        if roll < 0.08:
            continue  # never asked or never answered: no consent
        granted_at = t0 - timedelta(days=rng.randrange(1, 400))
        status = "revoked" if roll < 0.12 else "granted"  # refused at sign-up
        records.append({"account_id": p.account_id, "purpose": "personalization",
                        "status": status, "recorded_at": granted_at.isoformat()})
        if status == "granted" and roll < 0.17:  # withdraws during the period
            revoked_at = t0 + timedelta(seconds=rng.randrange(days * 86_400))
            records.append({"account_id": p.account_id, "purpose": "personalization",
                            "status": "revoked", "recorded_at": revoked_at.isoformat()})
        if rng.random() < 0.6:
            records.append({"account_id": p.account_id, "purpose": "analytics",
                            "status": "granted", "recorded_at": granted_at.isoformat()})
    return records


@dataclass(frozen=True)
class GeneratedData:
    event_files: list[DataPath]
    consent_file: DataPath
    events: int
    malformed: int


USERS_PER_BATCH = 20_000  # users whose events are made (and held) at once


def generate(out_root: DataPath, *, start: date, days: int = 1, users: int = 1000,
             seed: int = 7, malformed_share: float = 0.01,
             duplicate_share: float = 0.005, cohort_signal: float = COHORT_SIGNAL,
             drift: Drift | None = None) -> GeneratedData:
    """Write `raw/events/date=D/events.jsonl` for each day and `raw/consent/consent.jsonl`.

    Each user's category mix follows their cohort with strength `cohort_signal` (see
    `COHORT_SIGNAL`), so cohort features can carry signal and a test can tell it from noise.
    Users are made `USERS_PER_BATCH` at a time and their lines appended (shuffled within the
    batch), so memory stays flat however many users a day has. `drift` injects a known shift
    (the rest of the data is as it would be without it)."""
    rng = random.Random(seed)
    drifting = None if drift is None else (drift, random.Random(f"drift-{seed}"))
    fake = Faker("en_US")
    fake.seed_instance(seed)
    day_list = [start + timedelta(days=d) for d in range(days)]
    files = [out_root / ZONES["raw_events"].path / partition_name(day) / "events.jsonl"
             for day in day_list]
    consent_path = out_root / ZONES["raw_consent"].path / "consent.jsonl"
    total = malformed = 0
    with ExitStack() as stack:
        outs = [stack.enter_context(atomic_writer(path)) for path in files]
        consent_out = stack.enter_context(atomic_writer(consent_path))
        stack.enter_context(progress.step(f"generate {users:,} users", users))
        for first in range(0, users, USERS_PER_BATCH):
            profiles = _profiles(range(first, min(users, first + USERS_PER_BATCH)), rng, fake,
                                 cohort_signal)
            for day, out in zip(day_list, outs, strict=True):
                lines, bad = _day_lines(profiles, day, rng, fake, malformed_share,
                                        duplicate_share, drifting)
                out.write(("\n".join(lines) + "\n").encode())
                total, malformed = total + len(lines), malformed + bad
            consent = _consent(profiles, start, days, rng)
            consent_out.write("".join(json.dumps(r) + "\n" for r in consent).encode())
            progress.advance(len(profiles))
    for path in files:
        atomic_write_bytes(path.parent / INPUT_MARKER, b"")  # the day is complete
    return GeneratedData(files, consent_path, total, malformed)


def _day_lines(profiles: list[Profile], day: date, rng: random.Random, fake: Faker,
               malformed_share: float, duplicate_share: float,
               drift: tuple[Drift, random.Random] | None = None) -> tuple[list[str], int]:
    """The JSON lines of these users' events on `day`, shuffled, and how many are malformed."""
    lines, malformed = [], 0
    for p in profiles:
        n = int(rng.expovariate(1 / p.activity)) + (1 if rng.random() < 0.7 else 0)
        for _ in range(n):
            event = _event(p, day, rng, fake, drift)
            roll = rng.random()
            if roll < malformed_share:
                lines.append(_corrupt(event, rng))
                malformed += 1
            else:
                lines.append(json.dumps(event))
                if roll < malformed_share + duplicate_share:
                    lines.append(json.dumps(event))  # at-least-once delivery
    rng.shuffle(lines)
    return lines, malformed
