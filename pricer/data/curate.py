"""The recipe's curation: one raw or curated record -> an `Item`, or a reason it was dropped.

Also the split a title belongs to (`split_of`, hashed so every run and source agree). The token
cut is not here: it needs the tokenizer of the model being trained (each family tokenizes
differently), so the prompt builder does it.

`dedupe`, `balance` and `split_items` are not what a build runs (that is `pricer.data.corpus` and
`pricer.data.shards`, at scale): they are the plain reference implementations, one item at a
time, that the tests hold the scaled build to.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np

from pricer.data.sampling import balanced_positions
from pricer.items import Item
from pricer.metrics import PRICE_NUMBER

MIN_PRICE = 0.50
MAX_PRICE = 999.49
# The recipe checks the raw contents (description + features + details, title excluded).
MIN_CHARS = 300
# ...and then cuts them to 7 characters per token of its 160-token budget before scrubbing.
CEILING_CHARS = 160 * 7
# A curated text was already cut to ~160 tokens after that check, so 300 characters would drop
# good items (6 of the shared sample); this only catches empty or truncated records.
MIN_CURATED_CHARS = 100

SPLITS = ("train", "validation", "test")
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1

# Boilerplate the recipe strips from the JSON of `details` before scrubbing (order matters:
# "Number of" before "Number", the battery pairs before ":").
REMOVALS = (
    '"Batteries Included?": "No"', '"Batteries Included?": "Yes"',
    '"Batteries Required?": "No"', '"Batteries Required?": "Yes"',
    "By Manufacturer", "Item", "Date First", "Package", ":", "Number of",
    "Best Sellers", "Number", "Product ",
)
# Unicode categories Cc (control), Cs (surrogates), Co (private use), and U+FFFD: the same set as
# `unicodedata.category(c) in ("Cc", "Co", "Cs")` (checked over every code point), 16x faster than
# that per-character loop on the sample's texts; the loop was most of curation's time.
ODD_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ue000-\uf8ff\ufffd"
                             "\U000f0000-\U000ffffd\U00100000-\U0010fffd]")
# What str.isdigit() accepts: \d (Unicode decimal digits) plus superscripts, subscripts and circled
# digits (tests check it against isdigit over every code point).
DIGITS = ("\\d\\xb2-\\xb3\\xb9\\u1369-\\u1371\\u19da\\u2070\\u2074-\\u2079\\u2080-\\u2089\\u2460-\\u2468"
          "\\u2474-\\u247c\\u2488-\\u2490\\u24ea\\u24f5-\\u24fd\\u24ff\\u2776-\\u277e\\u2780-\\u2788\\u278a-\\u2792"
          "\\U00010a40-\\U00010a43\\U00010e60-\\U00010e68\\U00011052-\\U0001105a\\U0001f100-\\U0001f10a")
# One search per long word: 1.7x faster than `any(c.isdigit() for c in w)` on raw contents, and
# faster than one regex over the whole text.
_DIGIT = re.compile(f"[{DIGITS}]")
# Runs of punctuation and white space; a lone space between words is left alone (replacing it by
# itself was most of this pass's matches).
_PUNCT_AND_SPACE = re.compile(r'(?! (?![:\[\]"{}【】\s]))[:\[\]"{}【】\s]+')

# Drop reasons, counted by the readers and `build`; never fatal.
EMPTY_LINE = "empty_line"
BAD_JSON = "bad_json"
NOT_AN_OBJECT = "not_an_object"
LINE_TOO_LONG = "line_too_long"
NO_TITLE = "no_title"
NO_PRICE = "no_price"
BAD_PRICE = "bad_price"
PRICE_OUT_OF_RANGE = "price_out_of_range"
TOO_SHORT = "too_short"
NO_TEXT = "no_text"
DUPLICATE = "duplicate"
OVER_BUCKET_CAP = "over_bucket_cap"


class Dropped(ValueError):
    """A record that curation rejects; `reason` is one of the drop-reason names above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _amount(value: object) -> float:
    """A number, or a string like ``"$1,234.50"``; Dropped ``no_price`` / ``bad_price`` otherwise."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None", "null")):
        raise Dropped(NO_PRICE)
    if isinstance(value, bool):
        raise Dropped(BAD_PRICE, repr(value))
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        number = value.strip().removeprefix("$").strip()
        if not PRICE_NUMBER.fullmatch(number):
            raise Dropped(BAD_PRICE, repr(value))
        return float(number.replace(",", ""))
    raise Dropped(BAD_PRICE, repr(value))


def in_training_range(price: float) -> bool:
    """Whether curation keeps this price for training ([MIN_PRICE, MAX_PRICE]; False for NaN)."""
    return MIN_PRICE <= price <= MAX_PRICE


def parse_source_price(value: object) -> float:
    """A source record's price for training data: a number, or a string like ``"$1,234.50"``.

    Raises:
        Dropped: ``no_price`` for null / "" / "None", ``bad_price`` for anything else unparsable,
            ``price_out_of_range`` outside [MIN_PRICE, MAX_PRICE].
    """
    price = _amount(value)
    if not in_training_range(price):
        raise Dropped(PRICE_OUT_OF_RANGE, str(price))
    return price


def read_source_price(value: object) -> float:
    """A price to score against: any positive finite amount, in the training range or not
    (evaluation scores every priced row; the range is for building training data).

    Raises:
        Dropped: ``no_price``, or ``bad_price`` for anything unparsable, zero, negative or NaN.
    """
    price = _amount(value)
    if not (price > 0 and math.isfinite(price)):
        raise Dropped(BAD_PRICE, f"{value!r} is not a positive amount")
    return price


def scrub_details(details: str) -> str:
    """Remove the recipe's boilerplate phrases from the details JSON string."""
    for phrase in REMOVALS:
        details = details.replace(phrase, "")
    return details


def scrub(text: str) -> str:
    """The recipe's scrub: odd characters and punctuation runs to one space, part numbers dropped.

    Part numbers are words of 7+ characters that contain a digit: they carry no price signal and
    cost many tokens (the tokenizers spend one token per digit).
    """
    # Control, private-use and replacement characters come from bad encodings in the source.
    text = ODD_CHARACTERS.sub(" ", text)
    text = _PUNCT_AND_SPACE.sub(" ", text).strip()
    text = text.replace(" ,", ",").replace(",,,", ",").replace(",,", ",")
    return " ".join([w for w in text.split(" ") if len(w) < 7 or not _DIGIT.search(w)])


def product_text(title: str, contents: str = "") -> str:
    """The prompt text curation writes for a product: the scrubbed title on the first line, then
    its scrubbed contents cut to the recipe's character ceiling."""
    return f"{scrub(title)}\n{scrub(contents[:CEILING_CHARS])}"


def has_words(text: str) -> bool:
    """Whether a product text has anything to price: a letter or a digit (``!!!`` has none, and a
    model would price it anyway)."""
    return any(ch.isalnum() for ch in text)


def clean_text(text: str) -> str:
    """A free-form product text cleaned the way training texts were: first line the title, the
    rest the contents. A curated text comes back unchanged, so cleaning twice is harmless."""
    title, _, contents = text.strip().partition("\n")
    return product_text(title, contents)


def category_name(main_category: str) -> str:
    """``"Tools & Home Improvement"`` -> ``"Tools_and_Home_Improvement"`` (the file-name style)."""
    return re.sub(r"\s+", "_", main_category.strip().replace("&", "and"))


def strings_of(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [str(v) for v in value if v is not None and str(v).strip()]
    return [str(value)]


def _details_json(details: object) -> str:
    if details is None or details == "" or details == {}:
        return ""
    if isinstance(details, str):
        return details
    return json.dumps(details, ensure_ascii=False)


def _title(record: dict) -> str:
    title = record.get("title")
    if not isinstance(title, str) or not title.strip():
        raise Dropped(NO_TITLE)
    return title.strip()


def raw_contents(record: dict) -> str:
    """A raw record's description, features and boilerplate-free details, one per line, unscrubbed."""
    contents = "\n".join(strings_of(record.get("description")))
    if contents:
        contents += "\n"
    features = "\n".join(strings_of(record.get("features")))
    if features:
        contents += features + "\n"
    details = _details_json(record.get("details"))
    if details:
        contents += scrub_details(details) + "\n"
    return contents


def item_from_raw(record: dict, category: str | None = None) -> Item:
    """Curate one raw Amazon Reviews 2023 metadata record the way the recipe does.

    Args:
        record: ``title``, ``features`` (list), ``description`` (list), ``details`` (dict or
            JSON string), ``price`` (float, string or null), ``main_category``.
        category: the category folder the record came from (``meta_<Category>.jsonl``); when
            None, ``main_category`` in file-name style.
    """
    title = _title(record)
    price = parse_source_price(record.get("price"))
    details = _details_json(record.get("details"))
    contents = raw_contents(record)
    if len(contents) < MIN_CHARS:
        raise Dropped(TOO_SHORT, f"{len(contents)} characters")
    text = product_text(title, contents)
    return Item(title=title, category=_raw_category(record, category), price=price, text=text, details=details)


def _raw_category(record: dict, category: str | None) -> str:
    if category is not None:
        return category
    main = record.get("main_category")
    return category_name(main) if isinstance(main, str) and main.strip() else "Unknown"


def _curated_category(record: dict) -> str:
    category = record.get("category")
    return category.strip() if isinstance(category, str) and category.strip() else "Unknown"


def item_from_curated(record: dict) -> Item:
    """Accept one curated record ``{title, category, price, text, details}``; the text is kept as is."""
    title = _title(record)
    price = parse_source_price(record.get("price"))
    text = record.get("text")
    if not isinstance(text, str) or len(text.strip()) < MIN_CURATED_CHARS:
        raise Dropped(TOO_SHORT, f"{len(text) if isinstance(text, str) else 0} characters")
    return Item(title=title, category=_curated_category(record), price=price, text=text,
                details=_details_json(record.get("details")))


def item_to_score(record: dict, category: str | None = None) -> Item:
    """One raw or curated record as an item to score a model on, not to train it: any positive
    price and any text length. Curation's filters build training data; a retailer's short
    descriptions and its $2,000 items are what its model will be asked to price.

    Raises:
        Dropped: ``no_title``, ``no_price``, ``bad_price`` (not a positive amount), ``no_text``.
    """
    title = _title(record)
    price = read_source_price(record.get("price"))
    details = _details_json(record.get("details"))
    if is_curated(record):
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise Dropped(NO_TEXT)
        return Item(title=title, category=_curated_category(record), price=price, text=text, details=details)
    return Item(title=title, category=_raw_category(record, category), price=price,
                text=product_text(title, raw_contents(record)), details=details)


def is_curated(record: dict) -> bool:
    """Curated records carry the finished ``text``; raw metadata carries features/description."""
    return "text" in record and "features" not in record and "description" not in record


def dedupe(items: Iterable[Item], drops: Counter) -> Iterator[Item]:
    """Keep the first item of each title (case-insensitive) and of each text; count the rest.

    Identical texts under different titles would otherwise leak between the splits.
    """
    seen_titles: set[str] = set()
    seen_texts: set[str] = set()
    for item in items:
        key = item.title.casefold()
        if key in seen_titles or item.text in seen_texts:
            drops[DUPLICATE] += 1
            continue
        seen_titles.add(key)
        seen_texts.add(item.text)
        yield item


def balance(items: list[Item], cap: int, seed: int, drops: Counter) -> list[Item]:
    """Price-balanced sampling: at most `cap` items per whole-dollar bucket, chosen with `seed`.

    Cheap items dominate any catalogue; capping each dollar bucket flattens the price
    distribution so a model can't score well by always guessing the cheap mode.
    """
    kept = balanced_positions(np.array([i.price for i in items], dtype=np.float64), cap, seed)
    if len(kept) < len(items):
        drops[OVER_BUCKET_CAP] += len(items) - len(kept)
    return [items[k] for k in kept]


def split_of(title: str, seed: int = 42) -> str:
    """The split a title belongs to: a hash of (seed, title), so the same product lands in the
    same split on every run and from every source that carries it."""
    digest = hashlib.blake2b(f"{seed}\0{title.casefold()}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < TEST_FRACTION:
        return "test"
    if u < TEST_FRACTION + VALIDATION_FRACTION:
        return "validation"
    return "train"


def split_items(items: Iterable[Item], seed: int = 42) -> dict[str, list[Item]]:
    """Items by split, each split shuffled with `seed` so that no prefix is one category."""
    splits: dict[str, list[Item]] = {name: [] for name in SPLITS}
    for item in items:
        splits[split_of(item.title, seed)].append(item)
    rng = random.Random(seed)
    for name in SPLITS:
        rng.shuffle(splits[name])
    return splits
