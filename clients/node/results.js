// Logits -> the result objects `python -m serve predict` writes, byte for byte (docs/DESIGN.md,
// "Logits -> results" and "Output bytes").
'use strict';

// Python's round(x, d): the d-place decimal nearest the double's exact value, a tie to the even
// last digit. toFixed is exact but breaks ties upwards; a double lies exactly halfway between two
// d-place decimals only when x * 2^(d+1) is an odd integer (x * 10^d = odd * 5^d / 2, exact), so
// those are rounded here.
function pyRound(x, d) {
  const t = x * 2 ** (d + 1);
  if (Number.isInteger(t) && Math.abs(t % 2) === 1) {
    const lo = Math.floor(x * 10 ** d);
    return (lo % 2 === 0 ? lo : lo + 1) / 10 ** d;
  }
  return Number(x.toFixed(d));
}

const sigmoid = (x) => 1 / (1 + Math.exp(-Math.min(Math.max(x, -60), 60)));

// Python's float repr, for the numbers results hold (0 <= p <= 1, at most 4 places): JavaScript's
// shortest round-trip digits, which are Python's, except that a whole number keeps its ".0".
const pyFloat = (x) => (Number.isInteger(x) ? x.toFixed(1) : String(x));

// json.dumps(value, ensure_ascii=False, separators=(",", ":")): JSON.stringify's string escapes are
// Python's (\", \\, \b \f \n \r \t, other controls as \u00xx, everything else as is).
function pythonJson(value) {
  if (value === null) return 'null';
  if (typeof value === 'number') return pyFloat(value);
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(',')}]`;
  if (typeof value === 'object') {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}:${pythonJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

// `logits`: the tagger's rows (T arrays of n_labels) or the sentiment's number; null for no tokens.
// `post`: the graph's seqlstm.postprocess (sentiment: round, threshold).
function resultOf(task, labels, post, tokens, logits, truncated) {
  let out;
  if (task === 'tagger') {
    const tags = (logits ?? []).map((row) => labels[row.indexOf(Math.max(...row))]);
    out = { tokens, tags };
  } else if (logits === null) {
    out = { label: null, prob_positive: null };
  } else {
    const prob = pyRound(sigmoid(logits), post.round);
    out = { label: prob >= post.threshold ? labels[1] : labels[0], prob_positive: prob };
  }
  if (truncated) out.truncated = true;
  return out;
}

module.exports = { pyRound, pythonJson, resultOf };
