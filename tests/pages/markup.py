"""Reading the pages' HTML in tests: the text a person sees, and the form fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Page:
    """What a page shows (its text) and holds (tags with their attributes)."""

    text: str = ""
    alert: str | None = None  # the text of the role="alert" box, if there is one
    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]

    def inputs(self) -> dict[str, dict[str, str]]:
        """The form's inputs by name."""
        return {a["name"]: a for a in self.all("input") if "name" in a}

    def attribute_values(self) -> list[str]:
        return [value for _, attrs in self.tags for value in attrs.values()]


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._text: list[str] = []
        self._alert: list[str] | None = None
        self._alert_depth = 0  # open <div>s inside the alert box

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v if v is not None else "" for k, v in attrs}
        self.page.tags.append((tag, values))
        if tag == "div" and self._alert_depth:
            self._alert_depth += 1
        elif tag == "div" and values.get("role") == "alert":
            assert self._alert is None, "more than one alert box"
            self._alert, self._alert_depth = [], 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._alert_depth:
            self._alert_depth -= 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self._text.append(data)
        if self._alert_depth and self._alert is not None:
            self._alert.append(data)

    def close(self) -> None:
        super().close()
        self.page.text = _words(self._text)
        if self._alert is not None:
            self.page.alert = _words(self._alert)


def _words(parts: list[str]) -> str:
    return " ".join("".join(parts).split())


def read(html: str) -> Page:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.page
