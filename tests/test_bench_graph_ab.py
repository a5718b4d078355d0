"""bench/graph_ab.py's arithmetic: medians over rounds, the fraction of the floor, fast / plain, and
the NLTK end-to-end count (the full run is the benchmark itself, docs/BENCHMARKS.md section 4b)."""

from __future__ import annotations

from bench import graph_ab


def record(round_: int, variant: str, throughput: float, backend: str = "onnx-fp32", size: int = 64) -> dict:
    return {"round": round_, "variant": variant, "backend": backend, "batch_size": size, "throughput": throughput}


def test_summary_takes_the_median_round_and_compares_fast_with_plain() -> None:
    records = [
        record(0, "plain", 100.0),
        record(0, "fast", 150.0),
        record(1, "plain", 300.0),  # an outlier round: the median ignores it
        record(1, "fast", 180.0),
        record(2, "plain", 120.0),
        record(2, "fast", 240.0),
        record(0, "plain", 10.0, size=1),
        record(0, "fast", 30.0, size=1),
        record(0, "fast, threads 1", 200.0),
    ]
    rows = {r["figure"]: r for r in graph_ab.summary(records, {"floor_tokens_per_s": 360.0})}
    assert list(rows) == [
        "plain: onnx-fp32 batch 1",
        "fast: onnx-fp32 batch 1",
        "plain: onnx-fp32 batch 64",
        "fast: onnx-fp32 batch 64",
        "fast, threads 1: onnx-fp32 batch 64",
    ]
    assert rows["plain: onnx-fp32 batch 64"]["throughput"] == 120.0
    assert rows["fast: onnx-fp32 batch 64"]["throughput"] == 180.0
    assert rows["fast: onnx-fp32 batch 64"]["of_floor"] == 0.5
    assert rows["fast: onnx-fp32 batch 64"]["vs_plain"] == 1.5
    assert rows["plain: onnx-fp32 batch 64"]["vs_plain"] is None
    assert rows["fast: onnx-fp32 batch 1"]["vs_plain"] == 3.0
    assert rows["fast, threads 1: onnx-fp32 batch 64"]["vs_plain"] == 200.0 / 120.0


def test_nltk_end_to_end_counts_the_tokens_it_tagged() -> None:
    class Tagger:
        def tag(self, tokens: list[str]) -> list[tuple[str, str]]:
            return [(t, "X") for t in tokens]

    result = graph_ab.nltk_end_to_end(Tagger(), ["The cat sat.", "Don't go!"], repeats=3)
    assert result["tokens"] == 4 + 4  # The cat sat . / Do n't go !
    assert len(result["runs_s"]) == 3 and result["throughput"] > 0
