"""How close a text-in ONNX graph gets to the tokenizer: the description's steps as RE2 regex replaces.

onnxruntime-extensions' `StringRegexReplace` (RE2, code points) is the only ONNX regex replace that
reads Unicode classes (`StringECMARegexReplace` is std::regex on bytes: `[é]` matches each UTF-8 byte),
and RE2 has no lookaround and no backreferences. This builds the closest graph: each step of
trainer/core/treebank.json rewritten for RE2 (`\\z` for "no character follows"; a lookbehind or a
final lookahead becomes a consumed group put back by the replacement; nltk's atomic `(?=(X*))\\3` a
plain greedy group, which is equivalent there; the clitic exclusion inside `starting_quotes.4` dropped,
as RE2 cannot say it), URLs replaced by a private-use placeholder first, then `StringSplit`. It runs
the graph on the held-out sets and counts the tokens that differ from `trainer.core.preprocess.tokenize`.

    python -m bench.text_graph --json bench/results/text_graph.json   # needs onnxruntime-extensions
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import Any

import numpy as np

from bench.common import add_json_arg, publish, table
from export.vectors import CASE_AND_DIGITS, CRAFTED_TEXTS, unicode_digits
from trainer.core.data import open_dataset
from trainer.core.preprocess import tokenize
from trainer.core.tokenizer import default_tokenizer

COLUMNS = ["corpus", "texts", "texts_differ", "tokens", "tokens_differ"]
PLACEHOLDER = "\ue000"  # a URL inside the graph (no rule touches a private-use code point)
END = r"(?![\s\S])"
CLASS = r"\[(?:\\.|[^\]\\])*\]"  # one character class of the description


def re2_step(step: dict[str, Any], groups: int) -> tuple[str, str, list[str]]:
    """(RE2 pattern, RE2 rewrite, what was approximated) for one replace step with `groups` groups."""
    find, parts, notes = step["find"].replace("\\u{", "\\x{"), list(step["replace"]), []
    if step["name"] == "starting_quotes.4":
        find = re.sub(r"\(\?!\(\?:.*\)\(\?!" + CLASS + r"\)\)", "", find)  # the clitic exclusion: not RE2
        notes.append("clitic exclusion dropped")
    find = find.replace(r"(?=\n?" + END + ")", r"(\n?\z)").replace(END, r"\z")
    if r"(\n?\z)" in find:
        groups += 1
        parts.append(groups)
    atomic = re.search(r"\(\?=\((" + CLASS + r"\*)\)\)\\3", find)
    if atomic:  # possessive == greedy here (docs/DESIGN.md): no character the class takes can end \s*$
        find = find.replace(atomic[0], f"({atomic[1]})")
    behind = re.match(r"\(\?<!\[(.*?)\]\)", find)
    if behind and find.index(")") == len(behind[0]) - 1:
        find = f"(^|[^{behind[1]}])" + find[len(behind[0]) :]
        parts = [1] + [p + 1 if isinstance(p, int) and p else p for p in parts]
        groups += 1
        notes.append("lookbehind consumed")
    ahead = re.search(r"\(\?([=!])(" + CLASS + r")\)$", find)
    if ahead:
        cls = ahead[2] if ahead[1] == "=" else "[^" + ahead[2][1:]
        find = find[: ahead.start()] + (f"({cls})" if ahead[1] == "=" else f"({cls}|\\z)")
        groups += 1
        parts.append(groups)
        notes.append("lookahead consumed")
    rewrite = "".join(p.replace("\\", "\\\\") if isinstance(p, str) else f"\\{p}" for p in parts)
    return find, rewrite, notes


def graph_steps() -> list[tuple[str, str, str, list[str]]]:
    """(name, pattern, rewrite, notes): the URL placeholder, every step, the split's whitespace to one space."""
    tok = default_tokenizer()
    desc = tok.description
    steps = [("url", desc["url"]["find"].replace("\\u{", "\\x{"), f" {PLACEHOLDER} ", [])]
    compiled = iter(find for rules in tok.replacements for find, _ in rules)
    for step in desc["steps"]:
        if step["op"] == "replace":
            steps.append((step["name"], *re2_step(step, next(compiled).groups)))
        elif step["op"] == "pad":
            steps.append(("pad", r"(?s)\A(.*)\z", f"{step['text']}\\1{step['text']}", []))
        else:
            steps.append(("split", step["on"].replace("\\u{", "\\x{"), " ", []))
    return steps + [("strip", r"\A +| +\z", "", [])]


def session(steps: list[tuple[str, str, str, list[str]]]) -> Any:
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from onnxruntime_extensions import get_library_path

    nodes, inits, name = [], [], "text"
    for i, (_, find, rewrite, _) in enumerate(steps):
        inits += [helper.make_tensor(f"p{i}", TensorProto.STRING, [1], [find.encode()])]
        inits += [helper.make_tensor(f"r{i}", TensorProto.STRING, [1], [rewrite.encode()])]
        nodes.append(
            helper.make_node("StringRegexReplace", [name, f"p{i}", f"r{i}"], [f"s{i}"], domain="ai.onnx.contrib")
        )
        name = f"s{i}"
    nodes.append(helper.make_node("Identity", [name], ["normalized"]))
    graph = helper.make_graph(
        nodes,
        "text_graph",
        [helper.make_tensor_value_info("text", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("normalized", TensorProto.STRING, [None])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)]
    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    model = helper.make_model(graph, opset_imports=opsets).SerializeToString()
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def differing_tokens(ours: list[str], theirs: list[str]) -> int:
    """Tokens outside the longest matching blocks, on the longer side."""
    same = sum(
        block.size for block in difflib.SequenceMatcher(None, ours, theirs, autojunk=False).get_matching_blocks()
    )
    return max(len(ours), len(theirs)) - same


def run(args: argparse.Namespace) -> dict:
    steps = graph_steps()
    sess = session(steps)
    corpora = {
        "brown test (raw text)": [" ".join(e.words) for e in open_dataset("brown").examples("test")],
        "rotten-tomatoes test": [e.text for e in open_dataset("rotten-tomatoes").examples("test")],
        "crafted (export/vectors.py)": [*CRAFTED_TEXTS.values(), CASE_AND_DIGITS, unicode_digits()],
    }
    rows, examples = [], []
    for name, texts in corpora.items():
        out = sess.run(None, {"text": np.array(texts, dtype=object)})[0]
        tokens = differ = texts_differ = 0
        for text, normalized in zip(texts, out):
            graph = ["<url>" if t == PLACEHOLDER else t for t in normalized.split(" ") if t]
            expected = tokenize(text)
            tokens += len(expected)
            d = differing_tokens(graph, expected)
            differ += d
            texts_differ += d > 0
            if d and len(examples) < 12:
                examples.append({"corpus": name, "text": text[:160], "graph": graph[:40], "tokenize": expected[:40]})
        rows.append(
            {
                "corpus": name,
                "texts": len(texts),
                "texts_differ": texts_differ,
                "tokens": tokens,
                "tokens_differ": differ,
            }
        )
    approximated = [{"step": n, "how": "; ".join(notes)} for n, _, _, notes in steps if notes]
    return {"table": rows, "approximated": approximated, "examples": examples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.text_graph", description=__doc__.split("\n")[0])
    add_json_arg(parser)
    args = parser.parse_args(argv)
    try:
        import onnxruntime_extensions  # noqa: F401
    except ImportError:
        print("bench.text_graph needs onnxruntime-extensions (pip install onnxruntime-extensions)", file=sys.stderr)
        return 2
    results = publish("text_graph", args, run(args), COLUMNS)["results"]
    print(table(results["approximated"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
