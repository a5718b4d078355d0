"""The Treebank tokenizer as data: nltk's rules rewritten in a regex dialect every engine reads alike.

`trainer/core/treebank.json` (committed; `python -m trainer.core.treebank` rewrites it) holds every
step from raw text to tokens: the URL pattern, nltk's Treebank rules in their order, and the split.
`trainer.core.tokenizer` compiles that file, so training, export validation and serving all run the
rules from it, and every export carries a copy (`tokenizer.json`, docs/DESIGN.md "Exports outside
Python"). This module only *writes* the file, from nltk's own patterns translated once by hand.

The dialect is ECMAScript 2018 with the `u` flag (what JavaScript's `new RegExp(p, "gu")` takes),
restricted to what Java and .NET share: groups, backreferences, lookahead, one-character
lookbehind, character classes whose every member is written `\\u{HEX}`. What the engines disagree on
is pinned to the meaning Python gives it today:

- `\\w`, `\\s`, `\\d` and `\\b` differ between engines (JavaScript's are ASCII, and Python's `regex`
  and stdlib `re`, both used by nltk, disagree with each other: `regex` carries its own, newer Unicode
  data). Each becomes an explicit class of the code points the engine nltk used for that rule matches.
- `(?i)` (Unicode simple case folding: `s` also matches `ſ`, `k` the Kelvin sign, and stdlib `re`'s
  `i` also `İ` and `ı`) becomes one explicit class per letter.
- Python's `$` also matches before a final `\\n` (Java's before any final line terminator, JavaScript's
  never): spelled `(?=\\n?(?![\\s\\S]))`, or `(?![\\s\\S])` where `\\s*` before it already took a newline.
- nltk's possessive `*+` (JavaScript has none) becomes `(?=(X*))\\3`, the atomic-group idiom, which
  keeps the group number nltk's replacement refers to.
- Replacements are lists of literal strings and group numbers, not `\\1` / `$1` templates.
- `str.split()` splits on `str.isspace()`, which is neither `regex`'s nor JavaScript's `\\s`.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nltk
import regex

from trainer.core.atomic import write_text
from trainer.core.jsonio import dumps
from trainer.core.tokenizer import body, ranges

FILE = Path(__file__).with_name("treebank.json")
FORMAT = "seqlstm-tokenizer"
VERSION = 1
URL_TOKEN = "<url>"
_ALL = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)  # every scalar value


def tables() -> dict[str, list[list[int]]]:
    """Each engine-dependent class, as the engine nltk uses for the rule matches it today."""
    return {
        "regex_word": ranges(regex.findall(r"\w", _ALL)),  # `regex` V0 with UNICODE: nltk's TimedPatterns
        "regex_space": ranges(regex.findall(r"\s", _ALL)),
        "regex_digit": ranges(regex.findall(r"\d", _ALL)),
        "re_word": ranges(re.findall(r"\w", _ALL)),  # stdlib `re`: nltk's CONTRACTIONS2/3, our URL pattern
        "re_space": ranges(re.findall(r"\s", _ALL)),
        "re_digit": ranges(re.findall(r"\d", _ALL)),  # digits_to_zero (trainer.core.preprocess)
        "split_space": ranges(c for c in _ALL if c.isspace()),  # str.split()
    }


def folded(engine: Any) -> Callable[[str], str]:
    """`word` as the engine's `(?i)` reads it: one class per letter, e.g. "s" -> `[\\u{53}\\u{73}\\u{17F}]`."""

    def letters(word: str) -> str:
        return "".join(f"[{body(ranges(engine.findall('(?i)' + re.escape(c), _ALL)))}]" for c in word)

    return letters


def escaped(pattern: str) -> str:
    """Non-ASCII literals in a hand-written pattern as `\\u{HEX}`, like the tables."""
    return "".join(c if c.isascii() else f"\\u{{{ord(c):X}}}" for c in pattern)


def rule(name: str, find: str, *replace: str | int) -> dict[str, Any]:
    return {"op": "replace", "name": name, "find": escaped(find), "replace": list(replace)}


def treebank_steps(t: dict[str, list[list[int]]]) -> list[dict[str, Any]]:
    """nltk 3.10's NLTKWordTokenizer.tokenize, rule by rule (nltk/tokenize/destructive.py)."""
    w, s, d = (body(t[k]) for k in ("regex_word", "regex_space", "regex_digit"))
    rw, rs = body(t["re_word"]), body(t["re_space"])
    ci, ci_re = folded(regex), folded(re)
    end = r"(?![\s\S])"  # the end of the text: no character follows
    # STARTING_QUOTES[4]'s `\b` only ever follows a letter, so it is "no word character next".
    clitics = "|".join(ci(c) for c in ("re", "ve", "ll", "m", "t", "s", "d", "n"))
    contractions2 = [("can", "not"), ("d", "'ye"), ("gim", "me"), ("gon", "na"), ("got", "ta"), ("lem", "me")]
    return [
        rule("starting_quotes.0", r"([«“‘„]|`+)", " ", 1, " "),
        rule("starting_quotes.1", r'^"', "``"),
        rule("starting_quotes.2", r"(``)", " ", 1, " "),
        rule("starting_quotes.3", r"""([ (\[{<])("|'')""", 1, " `` "),
        rule("starting_quotes.4", f"(?<![{w}])(')(?!(?:{clitics})(?![{w}]))(?=[{w}])", 1, " "),
        rule("punctuation.0", rf"""([^.])(\.)(?=([\])}}>"'»”’ ]*))\3[{s}]*{end}""", 1, " ", 2, " ", 3, " "),
        rule("punctuation.1", f"([:,])([^{d}])", " ", 1, " ", 2),
        rule("punctuation.2", rf"([:,])(?=\n?{end})", " ", 1, " "),
        rule("punctuation.3", r"\.{2,}", " ", 0, " "),
        rule("punctuation.4", r"[;@#$%&]", " ", 0, " "),
        rule("punctuation.5", "[\u2012-\u2015]", " ", 0, " "),
        rule("punctuation.6", rf"""([^.])(\.)([\])}}>"']*)[{s}]*{end}""", 1, " ", 2, 3, " "),
        rule("punctuation.7", r"[?!]", " ", 0, " "),
        rule("punctuation.8", r"([^'])' ", 1, " ' "),
        rule("punctuation.9", r"[*]", " ", 0, " "),
        rule("parens_brackets", r"[\]\[(){}<>]", " ", 0, " "),
        rule("double_dashes", r"--", " -- "),
        {"op": "pad", "name": "pad", "text": " "},
        rule("ending_quotes.0", r"([»”’])", " ", 1, " "),
        rule("ending_quotes.1", r"''", " '' "),
        rule("ending_quotes.2", r'"', " '' "),
        rule("ending_quotes.3", f"[{s}]+", " "),
        rule("ending_quotes.4", r"([^' ])('[sS]|'[mM]|'[dD]|') ", 1, " ", 2, " "),
        rule("ending_quotes.5", r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", 1, " ", 2, " "),
        *(
            rule(f"contractions2.{i}", f"(?<![{rw}])({ci_re(a)})({ci_re(b)})(?![{rw}])", " ", 1, " ", 2, " ")
            for i, (a, b) in enumerate([*contractions2, ("more", "'n")])
        ),
        rule("contractions2.7", f"(?<![{rw}])({ci_re('wan')})({ci_re('na')})(?=[{rs}])", " ", 1, " ", 2, " "),
        rule("contractions3.0", f" ({ci_re(chr(39) + 't')})({ci_re('is')})(?![{rw}])", " ", 1, " ", 2, " "),
        rule("contractions3.1", f" ({ci_re(chr(39) + 't')})({ci_re('was')})(?![{rw}])", " ", 1, " ", 2, " "),
        {"op": "split", "name": "split", "on": f"[{body(t['split_space'])}]+"},
    ]


def description() -> dict[str, Any]:
    """treebank.json's content, computed from nltk's rules and this interpreter's engines."""
    t = tables()
    ci_re = folded(re)
    return {
        "format": FORMAT,
        "version": VERSION,
        "dialect": "ECMAScript 2018, flags 'gu'; docs/DESIGN.md 'Exports outside Python'",
        "source": {
            "rules": f"nltk-{nltk.__version__}",
            "python": sys.version.split()[0],
            "unicode": {"unicodedata": unicodedata.unidata_version, "regex": regex.__version__},
        },
        "url": {
            "find": f"(?:{ci_re('http')}{ci_re('s')}?://|{ci_re('www')}\\.)[^{body(t['re_space'])}]+",
            "token": URL_TOKEN,
        },
        "steps": treebank_steps(t),
        "digits": t["re_digit"],
    }


def write(path: Path = FILE) -> None:
    write_text(path, dumps(description(), indent=1) + "\n", mode=0o644)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else FILE)
