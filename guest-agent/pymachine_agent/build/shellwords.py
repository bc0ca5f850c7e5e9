"""Variable substitution in Dockerfile words, as the Docker builder's shell lexer does it.

`$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}`, `${VAR?msg}`;
single quotes are literal, double quotes allow `$` expansion, the escape character (backslash, or
backtick under `# escape=`\\``) escapes the next character. Quotes are removed from the result, whitespace
is kept: one word in, one word out (Docker's `ProcessWord`). RUN/CMD/ENTRYPOINT are never
substituted here: their shell does it.
"""

from __future__ import annotations

from collections.abc import Mapping

# `${a:-${b:-…}}` recurses once per level: a hostile Dockerfile must get an error, not a RecursionError.
MAX_NESTING = 64


class SubstitutionError(ValueError):
    """A `${VAR:?msg}` on an unset variable, or a malformed `${...}`."""


def _is_name_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.depth = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1 if ch else 0
        return ch

    def word(self, stop: str = "") -> str:
        """Process until `stop` (consumed) or the end of the text."""
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.peek()
            if stop and ch == stop:
                self.pos += 1
                return "".join(out)
            if ch == "'":
                out.append(self.single_quoted())
            elif ch == '"':
                out.append(self.double_quoted())
            elif ch == "$":
                out.append(self.dollar())
            else:
                self.pos += 1
                if ch == self.escape:
                    nxt = self.next()
                    if not nxt:
                        break
                    out.append(nxt)
                else:
                    out.append(ch)
        if stop:
            raise SubstitutionError(f"missing '{stop}' in {self.text!r}")
        return "".join(out)

    def single_quoted(self) -> str:
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end < 0:
            raise SubstitutionError(
                f"unexpected end of statement while looking for matching single-quote in {self.text!r}"
            )
        value = self.text[self.pos : end]
        self.pos = end + 1
        return value

    def double_quoted(self) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise SubstitutionError(
                    f"unexpected end of statement while looking for matching double-quote in {self.text!r}"
                )
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.pos += 1
            if ch == self.escape:
                nxt = self.peek()
                if not nxt:
                    continue
                if nxt in ('"', "$", self.escape):
                    self.pos += 1
                    ch = nxt
                else:
                    out.append(ch)
                    continue
            out.append(ch)

    def dollar(self) -> str:
        self.pos += 1  # the '$'
        ch = self.peek()
        if ch == "{":
            self.pos += 1
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise SubstitutionError(f"substitutions nested more than {MAX_NESTING} deep")
            try:
                return self.braced()
            finally:
                self.depth -= 1
        name = self.name()
        if not name:
            return "$"
        return self.env.get(name, "")

    def name(self) -> str:
        start = self.pos
        if self.peek().isdigit():
            # positional parameters are single digits in sh; Docker treats them as names too
            self.pos += 1
            return self.text[start : self.pos]
        while self.peek() and _is_name_char(self.peek()):
            self.pos += 1
        return self.text[start : self.pos]

    def braced(self) -> str:
        name = self.name()
        if not name:
            raise SubstitutionError(f"bad substitution in {self.text!r}: missing variable name after '${{'")
        ch = self.next()
        if ch == "}":
            return self.env.get(name, "")
        colon = ch == ":"
        if colon:
            ch = self.next()
        if not ch:
            raise SubstitutionError(f"missing '}}' in {self.text!r}")
        if ch not in ("-", "+", "?"):
            raise SubstitutionError(
                f"unsupported modifier ({':' if colon else ''}{ch}) in substitution of {name}"
            )
        word = self.word(stop="}")
        value = self.env.get(name)
        is_set = value is not None and (value != "" or not colon)
        if ch == "-":
            return value if is_set else word  # type: ignore[return-value]
        if ch == "+":
            return word if is_set else ""
        if not is_set:
            raise SubstitutionError(f"{name}: {word or 'is not allowed to be unset'}")
        return value  # type: ignore[return-value]


def substitute(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Expand variables in one Dockerfile word and strip its quotes."""
    return _Lexer(text, env, escape).word()


def split_words(text: str, escape: str = "\\") -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes (Docker's `parseWords`)."""
    words: list[str] = []
    cur: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == escape and i + 1 < len(text):
            cur.append(ch + text[i + 1])
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
        elif ch.isspace():
            if cur:
                words.append("".join(cur))
                cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    if cur:
        words.append("".join(cur))
    return words
