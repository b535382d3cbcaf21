"""The one record every part of pricer passes around: a curated product with its price."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """A curated product.

    Args:
        title: the raw product title.
        category: the Amazon main-category folder, e.g. ``Appliances``.
        price: USD.
        text: the curated description that goes into the prompt (no question, no answer).
        details: the raw ``details`` object as a JSON string ("" when unknown).
    """

    title: str
    category: str
    price: float
    text: str
    details: str = ""

    def to_dict(self) -> dict:
        return {"title": self.title, "category": self.category, "price": self.price,
                "text": self.text, "details": self.details}
